"""Reading ``policy.yaml`` (text in, :class:`PolicySet` out) and layering it per account.

Every value keeps the line it came from, so a bad file gives one message naming the file, the line and
the dotted field. Money is read as :class:`~decimal.Decimal` from the number's text, never via float.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from policy.durations import DURATION_HELP, parse_duration
from policy.engine import DEBT_RESUSPEND, TRIAL_RESUSPEND, is_resuspension
from policy.errors import PolicyError
from policy.model import Action, After, GuaranteeLimit, ResolvedPolicy, Stage, Triggers
from policy.money import DEFAULT_CURRENCY, check_currency, parse_amount
from policy.safe_yaml import compose

__all__ = ["EXTRA_SECTIONS", "PolicySet", "load_policy"]

EXTRA_SECTIONS = ("notices", "events", "agent", "web")
_TOP_KEYS = ("timezone", "defaults", "resellers", "plans", *EXTRA_SECTIONS)
_LAYER_KEYS = (
    "currency",
    "credit_limit",
    "financial_threshold",
    "triggers",
    "stages",
    "resume_on_payment",
    "pay_with_negative",
    "guaranteed_payment",
)
_TRIGGER_KEYS = (
    "over_limit",
    "subzero_period",
    "max_delay",
    "unpaid_total_over",
    "invoice_expiration",
    "stop_grace",
    "trial",
)
_STAGE_KEYS = ("name", "action", "after", "template", "enabled", "hook")
_GUARANTEE_KEYS = ("limit", "days")
_ACTIONS = ("notice", "suspend", "delete", "hook")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED = (DEBT_RESUSPEND, TRIAL_RESUSPEND, "resume")  # stage records made by the engine and the agent

# The value of every field before any layer sets it.
_BUILTIN: dict[str, object] = {
    "currency": DEFAULT_CURRENCY,
    "credit_limit": Decimal(0),
    "financial_threshold": None,  # unset: the credit limit (ResolvedPolicy.spend_threshold)
    "triggers.over_limit": True,
    "triggers.subzero_period": -1,
    "triggers.max_delay": None,
    "triggers.unpaid_total_over": None,
    "triggers.invoice_expiration": None,
    "triggers.stop_grace": None,
    "triggers.trial": True,
    "stages": (),
    "resume_on_payment": True,
    "pay_with_negative": False,
    "guaranteed_payment.limit": Decimal(0),
    "guaranteed_payment.days": 0,
}


# --- values with their lines ---------------------------------------------------------------------


@dataclass(frozen=True)
class _V:
    """A parsed value and the (1-based) line it started on; mappings hold ``dict[str, _V]``, sequences
    ``list[_V]``, scalars ``None | bool | int | Decimal | str``."""

    value: Any
    line: int | None


class _Ctx:
    def __init__(self, filename: str) -> None:
        self.filename = filename

    def fail(self, v: _V | None, path: str, message: str) -> PolicyError:
        return PolicyError(self.filename, v.line if v is not None else None, path, message)


_BOOL_TRUE = {"yes", "true", "on", "y"}


def _from_node(node: yaml.Node, ctx: _Ctx, path: str) -> _V:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _V] = {}
        merged: dict[str, _V] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        raise ctx.fail(_V(None, line), path or "(document)", "a merge key (<<) needs a mapping")
                    for k, v in _from_node(src, ctx, path).value.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise ctx.fail(_V(None, key_node.start_mark.line + 1), path or "(document)",
                               f"keys must be plain names, got {key_node.value!r}")
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise ctx.fail(_V(None, key_node.start_mark.line + 1), sub,
                               "this key appears twice in the same mapping; keep one")
            # A setting is located at its key: a block value starts on the next line.
            out[key] = _V(_from_node(value_node, ctx, sub).value, key_node.start_mark.line + 1)
        for k, v in merged.items():
            out.setdefault(k, v)
        return _V(out, line)
    if isinstance(node, yaml.SequenceNode):
        return _V([_from_node(item, ctx, f"{path}[{i}]") for i, item in enumerate(node.value)], line)
    assert isinstance(node, yaml.ScalarNode)
    text = str(node.value)
    tag = node.tag
    if tag == "tag:yaml.org,2002:null":
        return _V(None, line)
    if tag == "tag:yaml.org,2002:bool":
        return _V(text.lower() in _BOOL_TRUE, line)
    if tag == "tag:yaml.org,2002:int":
        if len(text) > 30:
            raise ctx.fail(_V(None, line), path, f"a number of {len(text)} characters is out of range")
        return _V(yaml.constructor.SafeConstructor().construct_yaml_int(node), line)
    if tag == "tag:yaml.org,2002:float":
        try:
            number = Decimal(text.replace("_", ""))
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise ctx.fail(_V(None, line), path, f"{text!r} is not a finite number")
        if number and not -30 <= number.adjusted() <= 30:  # 1e999999 would become a million-digit int
            raise ctx.fail(_V(None, line), path, f"{text!r} is out of range")
        return _V(number, line)
    return _V(text, line)


def _from_python(value: object, ctx: _Ctx, path: str) -> _V:
    if isinstance(value, Mapping):
        out: dict[str, _V] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ctx.fail(None, path or "(layer)", f"keys must be names, got {k!r}")
            out[k] = _from_python(v, ctx, f"{path}.{k}" if path else k)
        return _V(out, None)
    if isinstance(value, list | tuple):
        return _V([_from_python(v, ctx, f"{path}[{i}]") for i, v in enumerate(value)], None)
    if isinstance(value, float):
        # A number that already went through float (e.g. JSON): its shortest repr is the text it was written as.
        return _V(Decimal(repr(value)), None)
    if value is None or isinstance(value, bool | int | Decimal | str):
        return _V(value, None)
    raise ctx.fail(None, path, f"unsupported value {value!r}")


# --- field validators ----------------------------------------------------------------------------


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(v: _V, ctx: _Ctx, path: str, known: tuple[str, ...]) -> dict[str, _V]:
    if not isinstance(v.value, dict):
        raise ctx.fail(v, path or "(document)", f"expected a mapping of settings, got {_kind(v.value)}")
    for key, sub in v.value.items():
        if key not in known:
            raise ctx.fail(sub, f"{path}.{key}" if path else key,
                           f"unknown key{_did_you_mean(key, known)} (known: {', '.join(known)})")
    return dict(v.value)


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | Decimal):
        return f"the number {value}"
    return f"the text {value!r}"


def _bool(v: _V, ctx: _Ctx, path: str) -> bool:
    if not isinstance(v.value, bool):
        raise ctx.fail(v, path, f"expected true or false, got {_kind(v.value)}")
    return v.value


_MAX_DAYS = 36500  # a century: longer counts are surely a typo (and would overflow date arithmetic)


def _int(v: _V, ctx: _Ctx, path: str, minimum: int, maximum: int = _MAX_DAYS) -> int:
    if isinstance(v.value, bool) or not isinstance(v.value, int):
        raise ctx.fail(v, path, f"expected a whole number >= {minimum}, got {_kind(v.value)}")
    if not minimum <= v.value <= maximum:
        raise ctx.fail(v, path, f"expected a whole number from {minimum} to {maximum}, got {v.value}")
    return int(v.value)


def _money(v: _V, ctx: _Ctx, path: str) -> Decimal:
    """An amount >= 0 (its precision is checked against the currency once the layers are resolved)."""
    raw = v.value
    if not isinstance(raw, Decimal | int | str) or isinstance(raw, bool):
        raise ctx.fail(v, path, f"expected an amount of money such as 20 or 12.50, got {_kind(raw)}")
    try:
        number = parse_amount(raw, what=_kind(raw))
    except ValueError as exc:
        raise ctx.fail(v, path, f"expected an amount of money: {exc}") from None
    if number < 0:
        raise ctx.fail(v, path, f"expected an amount >= 0, got {number}")
    return number


def _text(v: _V, ctx: _Ctx, path: str) -> str:
    if not isinstance(v.value, str) or not v.value.strip():
        raise ctx.fail(v, path, f"expected a text value, got {_kind(v.value)}")
    return v.value


def _after(v: _V, ctx: _Ctx, path: str) -> After:
    raw = v.value
    if raw is None:
        return After()
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 0 <= raw <= _MAX_DAYS:
            raise ctx.fail(v, path, f"expected days from 0 to {_MAX_DAYS}, got {raw}")
        return After(days=raw)
    if isinstance(raw, str):
        seconds = parse_duration(raw)
        if seconds is not None and seconds > _MAX_DAYS * 86400:
            raise ctx.fail(v, path, f"{raw!r} is longer than {_MAX_DAYS} days")
        if seconds is not None:
            return After(seconds=seconds)
    raise ctx.fail(v, path, f"bad duration {_kind(raw)}: {DURATION_HELP}, or null for immediately")


def _max_delay(v: _V, ctx: _Ctx, path: str) -> int | None:
    after = _after(v, ctx, path)
    if after.days is not None:
        return after.days * 86400
    return after.seconds


def _triggers(v: _V, ctx: _Ctx, path: str, out: dict[str, tuple[object, int | None]]) -> None:
    for key, sub in _check_keys(v, ctx, path, _TRIGGER_KEYS).items():
        p = f"{path}.{key}"
        value: object
        if key in ("over_limit", "trial"):
            value = _bool(sub, ctx, p)
        elif key == "subzero_period":
            if sub.value is None:
                raise ctx.fail(sub, p, "expected a number of days; write -1 for never (an infinite subzero period)")
            value = _int(sub, ctx, p, -1)
        elif key == "max_delay":
            value = _max_delay(sub, ctx, p)
        elif key == "unpaid_total_over":
            value = None if sub.value is None else _money(sub, ctx, p)
        else:  # invoice_expiration, stop_grace: days
            value = None if sub.value is None else _int(sub, ctx, p, 0)
        out[f"triggers.{key}"] = (value, sub.line)


def _stages(v: _V, ctx: _Ctx, path: str) -> tuple[Stage, ...]:
    if not isinstance(v.value, list):
        raise ctx.fail(v, path, f"expected a list of stages, got {_kind(v.value)}")
    stages: list[Stage] = []
    seen: set[str] = set()
    for i, item in enumerate(v.value):
        p = f"{path}[{i}]"
        keys = _check_keys(item, ctx, p, _STAGE_KEYS)
        if "name" not in keys:
            raise ctx.fail(item, f"{p}.name", "every stage needs a name (e.g. name: suspension)")
        name = _text(keys["name"], ctx, f"{p}.name")
        if not _NAME.match(name):
            raise ctx.fail(keys["name"], f"{p}.name", f"{name!r}: use letters, digits, '_', '-', '.' (max 64)")
        if any(is_resuspension(name, own) for own in _RESERVED):
            raise ctx.fail(keys["name"], f"{p}.name", f"{name!r} is reserved for the records the agent keeps itself "
                           f"({', '.join(_RESERVED)}, numbered -2, -3 ...); choose another stage name")
        if name in seen:
            raise ctx.fail(keys["name"], f"{p}.name", f"stage name {name!r} is used twice; stage names must be unique")
        seen.add(name)
        if "action" not in keys:
            raise ctx.fail(item, f"{p}.action", f"every stage needs an action: one of {', '.join(_ACTIONS)}")
        action = _text(keys["action"], ctx, f"{p}.action")
        if action not in _ACTIONS:
            raise ctx.fail(keys["action"], f"{p}.action",
                           f"unknown action {action!r}{_did_you_mean(action, _ACTIONS)} (one of {', '.join(_ACTIONS)})")
        after = _after(keys["after"], ctx, f"{p}.after") if "after" in keys else After()
        template = None
        if "template" in keys and keys["template"].value is not None:
            template = _text(keys["template"], ctx, f"{p}.template")
        enabled = _bool(keys["enabled"], ctx, f"{p}.enabled") if "enabled" in keys else True
        hook = None
        if "hook" in keys and keys["hook"].value is not None:
            hook = _text(keys["hook"], ctx, f"{p}.hook")
        if action == "hook" and hook is None:
            raise ctx.fail(item, f"{p}.hook", "a hook stage needs `hook: NAME` naming the hook to run")
        if action != "hook" and hook is not None:
            raise ctx.fail(keys["hook"], f"{p}.hook", "only stages with `action: hook` take a hook; remove it")
        stages.append(Stage(name=name, action=cast(Action, action), after=after, template=template,
                            enabled=enabled, hook=hook))
    _check_order(stages, v, ctx, path)
    return tuple(stages)


def _check_order(stages: list[Stage], v: _V, ctx: _Ctx, path: str) -> None:
    suspend_at: int | None = None
    delete_at: int | None = None
    items = v.value
    for i, stage in enumerate(stages):
        if not stage.enabled:
            continue
        p = f"{path}[{i}]"
        if stage.action == "suspend":
            if suspend_at is not None:
                raise ctx.fail(items[i], f"{p}.action", "only one enabled suspend stage is allowed per policy")
            suspend_at = i
        elif stage.action == "delete":
            if suspend_at is None:
                raise ctx.fail(items[i], f"{p}.action",
                               "a delete stage must come after an enabled suspend stage; add or enable one before it")
            if delete_at is not None:
                raise ctx.fail(items[i], f"{p}.action", "only one enabled delete stage is allowed per policy")
            delete_at = i
        elif delete_at is not None and stage.action != "hook":
            raise ctx.fail(items[i], f"{p}.action",
                           "after the delete stage only hook stages may follow (the deletion notice is the "
                           "delete stage's own template)")


def _resume(v: _V, ctx: _Ctx, path: str) -> bool | frozenset[str]:
    if isinstance(v.value, bool):
        return v.value
    if isinstance(v.value, list):
        methods = [_text(item, ctx, f"{path}[{i}]") for i, item in enumerate(v.value)]
        if not methods:
            raise ctx.fail(v, path, "an empty list of methods; write false to never resume automatically")
        return frozenset(methods)
    raise ctx.fail(v, path, f"expected true, false or a list of payment methods such as [card], got {_kind(v.value)}")


_Layer = dict[str, tuple[object, int | None]]  # field -> (value, line)


def _layer(v: _V, ctx: _Ctx, path: str) -> _Layer:
    out: _Layer = {}
    if v.value is None:
        return out
    for key, sub in _check_keys(v, ctx, path, _LAYER_KEYS).items():
        p = f"{path}.{key}" if path else key
        if key == "currency":
            currency = _text(sub, ctx, p)
            try:
                check_currency(currency)
            except ValueError as exc:
                raise ctx.fail(sub, p, str(exc)) from None
            out[key] = (currency, sub.line)
        elif key in ("credit_limit", "financial_threshold"):
            out[key] = (_money(sub, ctx, p), sub.line)
        elif key == "triggers":
            _triggers(sub, ctx, p, out)
        elif key == "stages":
            out[key] = (_stages(sub, ctx, p), sub.line)
        elif key == "resume_on_payment":
            out[key] = (_resume(sub, ctx, p), sub.line)
        elif key == "pay_with_negative":
            out[key] = (_bool(sub, ctx, p), sub.line)
        else:  # guaranteed_payment
            for gkey, gsub in _check_keys(sub, ctx, p, _GUARANTEE_KEYS).items():
                gp = f"{p}.{gkey}"
                value = _money(gsub, ctx, gp) if gkey == "limit" else _int(gsub, ctx, gp, 0)
                out[f"guaranteed_payment.{gkey}"] = (value, gsub.line)
    return out


def _named_layers(v: _V | None, ctx: _Ctx, path: str) -> dict[str, _Layer]:
    if v is None or v.value is None:
        return {}
    if not isinstance(v.value, dict):
        raise ctx.fail(v, path, f"expected a mapping of names to settings, got {_kind(v.value)}")
    return {name: _layer(sub, ctx, f"{path}.{name}") for name, sub in v.value.items()}


def _plain(v: _V) -> object:
    if isinstance(v.value, dict):
        return {k: _plain(sub) for k, sub in v.value.items()}
    if isinstance(v.value, list):
        return [_plain(sub) for sub in v.value]
    return v.value


# --- the policy set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySet:
    """A loaded policy file: the global layer, the named reseller and plan layers, and the sections
    other parts of arrears validate themselves (``extra``)."""

    filename: str
    timezone: str
    defaults: _Layer
    resellers: dict[str, _Layer]
    plans: dict[str, _Layer]
    extra: dict[str, Any] = field(default_factory=dict)
    proceed_after_failed_notice: bool = True  # notices.proceed_after_failed_notice
    # what resolve() made of each combination of layers (reseller, plan, currency) without an account layer
    _resolved: dict[tuple[str | None, str | None, str | None], ResolvedPolicy] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def resolve(
        self,
        account: str,
        plan: str | None,
        reseller: str | None,
        account_layer: Mapping[str, Any] | None = None,
        currency: str | None = None,
    ) -> ResolvedPolicy:
        """The policy of one account: defaults -> reseller -> plan -> the account's own settings,
        each field from the nearest layer that sets it. ``sources`` says which layer that was.

        ``currency`` is the account's own currency (billing's); without it the layers' ``currency`` (the
        default for accounts billing names none for) applies. Every amount of the result is checked
        against that currency's minor unit, located at the layer that set it.

        Accounts without a layer of their own share one result per combination of the named layers
        and the currency, resolved the first time it is asked for (a result that fails is not kept: the
        next account's error names that account)."""
        if account_layer:
            return self._resolve(account, plan, reseller, account_layer, currency)
        key = (reseller if reseller in self.resellers else None, plan if plan in self.plans else None, currency)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = self._resolve(account, plan, reseller, None, currency)
        return found

    def _resolve(self, account: str, plan: str | None, reseller: str | None,
                 account_layer: Mapping[str, Any] | None, currency: str | None) -> ResolvedPolicy:
        layers: list[tuple[str, _Ctx, str, _Layer]] = [("defaults", _Ctx(self.filename), "defaults.", self.defaults)]
        if reseller is not None and reseller in self.resellers:
            layers.append((f"reseller:{reseller}", _Ctx(self.filename), f"resellers.{reseller}.",
                           self.resellers[reseller]))
        if plan is not None and plan in self.plans:
            layers.append((f"plan:{plan}", _Ctx(self.filename), f"plans.{plan}.", self.plans[plan]))
        if account_layer:
            ctx = _Ctx(f"account {account}")
            node = _from_python(dict(account_layer), ctx, "")
            if isinstance(node.value, dict) and "currency" in node.value:
                raise ctx.fail(node.value["currency"], "currency",
                               "an account's currency is its own `currency` field, not a policy setting")
            layers.append((f"account:{account}", ctx, "", _layer(node, ctx, "")))
        values = dict(_BUILTIN)
        sources = {key: "builtin" for key in _BUILTIN}
        origin: dict[str, tuple[_Ctx, str, int | None]] = {}
        for source, ctx, prefix, layer in layers:
            for key, (value, line) in layer.items():
                values[key] = value
                sources[key] = source
                origin[key] = (ctx, prefix + key, line)
        if currency is not None:
            values["currency"] = currency
            sources["currency"] = "account"
        sources["timezone"] = "policy"
        code = str(values["currency"])
        for key in _MONEY_KEYS:
            amount = values[key]
            if key in origin and isinstance(amount, Decimal):
                ctx, path, line = origin[key]
                try:
                    parse_amount(amount, currency=code, what="the amount")
                except ValueError as exc:
                    raise ctx.fail(_V(None, line), path, f"{exc} (the {code} of {_whose(account)})") from None
        sources["proceed_after_failed_notice"] = "policy"
        return replace(_build(self.timezone, values, sources),
                       proceed_after_failed_notice=self.proceed_after_failed_notice)


_MONEY_KEYS = ("credit_limit", "financial_threshold", "triggers.unpaid_total_over", "guaranteed_payment.limit")


def _whose(account: str) -> str:
    return "these settings" if account == "-" else f"account {account}"


def _build(timezone: str, values: dict[str, object], sources: dict[str, str]) -> ResolvedPolicy:
    def get(key: str) -> Any:
        return values[key]

    triggers = Triggers(
        over_limit=get("triggers.over_limit"),
        subzero_period=get("triggers.subzero_period"),
        max_delay=get("triggers.max_delay"),
        unpaid_total_over=get("triggers.unpaid_total_over"),
        invoice_expiration=get("triggers.invoice_expiration"),
        stop_grace=get("triggers.stop_grace"),
        trial=get("triggers.trial"),
    )
    return ResolvedPolicy(
        timezone=timezone,
        currency=get("currency"),
        credit_limit=get("credit_limit"),
        triggers=triggers,
        stages=get("stages"),
        resume_on_payment=get("resume_on_payment"),
        pay_with_negative=get("pay_with_negative"),
        financial_threshold=get("financial_threshold"),
        guaranteed_payment=GuaranteeLimit(limit=get("guaranteed_payment.limit"), days=get("guaranteed_payment.days")),
        sources=sources,
    )


def load_policy(text: str, filename: str) -> PolicySet:
    """Parse and validate policy YAML ``text`` (read from ``filename``, which is only used in messages).

    Raises :class:`PolicyError` naming the file, line and field of the first problem.
    """
    ctx = _Ctx(filename)
    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "malformed YAML"
        raise PolicyError(filename, line, "(syntax)", f"not valid YAML: {problem}; fix the syntax") from None
    except yaml.YAMLError as exc:
        raise PolicyError(filename, None, "(syntax)", f"not valid YAML: {exc}") from None
    if node is None:
        raise PolicyError(filename, 1, "(document)", "the file is empty; it needs at least `defaults:` with stages")
    top = _check_keys(_from_node(node, ctx, ""), ctx, "", _TOP_KEYS)
    timezone = "UTC"
    if "timezone" in top:
        timezone = _text(top["timezone"], ctx, "timezone")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ctx.fail(top["timezone"], "timezone",
                           f"unknown time zone {timezone!r}; use an IANA name such as Europe/Amsterdam") from None
    defaults = _layer(top["defaults"], ctx, "defaults") if "defaults" in top else {}
    resellers = _named_layers(top.get("resellers"), ctx, "resellers")
    plans = _named_layers(top.get("plans"), ctx, "plans")
    extra = {key: _plain(top[key]) for key in EXTRA_SECTIONS if key in top}
    ps = PolicySet(filename=filename, timezone=timezone, defaults=defaults, resellers=resellers, plans=plans,
                   extra=extra, proceed_after_failed_notice=_proceed_after_failed_notice(top.get("notices"), ctx))
    # every amount fits the currency its layer resolves to (an account's own currency is checked at import)
    ps.resolve("-", None, None)
    for reseller in resellers:
        ps.resolve("-", None, reseller)
    for plan in plans:
        ps.resolve("-", plan, None)
    return ps


def _proceed_after_failed_notice(notices: _V | None, ctx: _Ctx) -> bool:
    """``notices.proceed_after_failed_notice`` (default true): whether the stages after a notice that
    failed for good go ahead. The rest of ``notices:`` is validated by the agent (agent.notices)."""
    if notices is None or not isinstance(notices.value, dict) or _PROCEED not in notices.value:
        return True
    return _bool(notices.value[_PROCEED], ctx, f"notices.{_PROCEED}")


_PROCEED = "proceed_after_failed_notice"
