"""Notices to debtors: templates, the variables they may use, Message-IDs, and delivery (SMTP or a spool).

Templates live in the operator's ``templates/`` folder over the defaults shipped in ``agent/templates``.
A notice ``NAME`` is ``NAME.txt.j2`` (first line ``Subject: ...``, then the plain-text body) plus an
optional ``NAME.html.j2`` (the HTML alternative). A page (``suspended_page``) is ``NAME.html.j2`` alone.
Files starting with ``_`` are partials for ``{% include %}``. When the operator's folder has any file of a
template, the whole template comes from there (an edited text never goes out beside a stale default HTML).

Every template is rendered in a sandbox (:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`) with
:class:`jinja2.StrictUndefined`; HTML is autoescaped. :meth:`Templates.load` checks every file: syntax,
variables outside :data:`VARIABLES`, and a trial render; a problem raises :class:`TemplateError` naming
the file and line.

Notices go to the account's billing address only. :func:`make_notifier` returns an :class:`SmtpNotifier`
(one connection per batch; 5xx answers are permanent failures, 4xx and connection errors temporary) or
a :class:`SpoolNotifier` (one ``.eml`` file per notice, written atomically, never twice). Both report each
notice's result as soon as it is known (``on_result``), so the caller records it before the next one.
"""

from __future__ import annotations

import difflib
import email.policy
import email.utils
import os
import re
import smtplib
import ssl
import tempfile
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ACCOUNT_FIELDS",
    "PAGE",
    "VARIABLES",
    "NoticeSettings",
    "Notifier",
    "OutgoingNotice",
    "RenderedNotice",
    "ResultCallback",
    "SendResult",
    "SmtpNotifier",
    "SmtpSettings",
    "SpoolNotifier",
    "TemplateError",
    "Templates",
    "build_context",
    "context_from_fields",
    "format_money",
    "make_notifier",
    "message_id",
    "preview_context",
    "render_page",
    "sample_context",
]

PACKAGE_TEMPLATES = Path(__file__).with_name("templates")
PAGE = "suspended_page"
TEXT_SUFFIX = ".txt.j2"
HTML_SUFFIX = ".html.j2"

# --- the variables ("AutoInserts") ---------------------------------------------------------------

VARIABLES: dict[str, str] = {
    "account_id": "the account's identifier",
    "username": "the account's user name (the account id when it has none)",
    "billing_email": "the billing address the notice is sent to",
    "plan": "the account's plan (empty when none)",
    "balance": "the account balance in its currency, negative when in debt",
    "debt": "the amount owed, as a positive amount; $0.00 when the balance is not negative",
    "amount_to_pay": "the least payment that brings the balance back within the credit limit",
    "credit_limit": "the credit limit: how far the balance may go below zero",
    "currency": "the account's currency code",
    "debt_start": "the date the account started to be treated as a debtor (YYYY-MM-DD)",
    "days_in_debt": "whole calendar days since debt_start",
    "stage": "the name of the stage this notice belongs to",
    "next_measure": "what happens next if the debt is not paid",
    "next_measure_date": "the date the next measure falls due (YYYY-MM-DD), empty when none",
    "days_to_next_measure": "whole calendar days until next_measure_date, empty when none",
    "company": "the provider's name",
    "payment_url": "where the customer pays (with this account's id filled in)",
    "support_email": "the provider's support address",
    "suspended_at": "the date the account was suspended (YYYY-MM-DD), empty when it is not",
    "deletion_date": "the date the account will be (or was) deleted (YYYY-MM-DD), empty when unknown",
    "now": "the date and time of the notice (YYYY-MM-DD HH:MM and the time zone)",
    "today": "the date of the notice (YYYY-MM-DD)",
    "timezone": "the time zone dates are given in",
}

ACCOUNT_FIELDS = ("id", "username", "billing_email", "plan", "currency", "suspended_at", "deletion_date")

_MEASURE_TEXT = {
    "notice": "a further notice",
    "suspend": "suspension of the account",
    "delete": "deletion of the account and all its files",
    "hook": "a further measure",
}

# --- money ---------------------------------------------------------------------------------------

# code -> (symbol, decimal places); an unknown code is written after the amount with two places
_CURRENCIES: dict[str, tuple[str, int]] = {
    "USD": ("$", 2), "EUR": ("€", 2), "GBP": ("£", 2), "JPY": ("¥", 0), "CHF": ("CHF", 2),
    "CAD": ("CA$", 2), "AUD": ("A$", 2), "NZD": ("NZ$", 2), "CNY": ("CN¥", 2), "INR": ("₹", 2),
    "RUB": ("₽", 2), "UAH": ("₴", 2), "PLN": ("zł", 2), "CZK": ("Kč", 2), "SEK": ("kr", 2),
    "NOK": ("kr", 2), "DKK": ("kr", 2), "BRL": ("R$", 2), "MXN": ("MX$", 2), "TRY": ("₺", 2),
    "ILS": ("₪", 2), "KRW": ("₩", 0), "IRR": ("IRR", 0), "ZAR": ("R", 2), "HUF": ("Ft", 2),
}

# language -> (group separator, decimal separator, symbol before the number)
_LOCALES: dict[str, tuple[str, str, bool]] = {
    "en": (",", ".", True),
    "de": (".", ",", False),
    "nl": (".", ",", True),
    "es": (".", ",", False),
    "it": (".", ",", False),
    "pt": (".", ",", False),
    "fr": ("\u202f", ",", False),
    "ru": ("\u00a0", ",", False),
    "pl": ("\u00a0", ",", False),
    "sv": ("\u00a0", ",", False),
    "cs": ("\u00a0", ",", False),
}


def format_money(amount: Decimal | int | str, currency: str, locale: str = "en") -> str:
    """``amount`` written in ``currency`` for ``locale`` (a language code such as ``en`` or ``de_DE``):
    ``-$1,234.50`` (en), ``-1.234,50 €`` (de), ``1,234.50 XYZ`` for a currency without a known symbol."""
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    code = currency.upper()
    symbol, places = _CURRENCIES.get(code, (code, 2))
    known = code in _CURRENCIES
    group, point, before = _LOCALES.get(locale.replace("-", "_").split("_")[0].lower(), _LOCALES["en"])
    quantum = Decimal(1).scaleb(-places)
    rounded = abs(value).quantize(quantum, rounding=ROUND_HALF_UP)
    whole, _, frac = f"{rounded:f}".partition(".")
    digits = f"{int(whole):,}".replace(",", group)
    number = digits + (point + frac if places else "")
    sign = "-" if value < 0 and rounded != 0 else ""
    if known and before:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number}\u00a0{symbol}" if known else f"{sign}{number} {symbol}"


# --- settings ------------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SmtpSettings(BaseModel):
    """``notices.smtp`` of policy.yaml. The password is read from the environment variable named by
    ``password_env`` when sending; it is never written in a file or a log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    ca_file: Path | None = None  # trust this CA bundle instead of the system's (a private relay)
    helo: str | None = None  # the name given in EHLO; default: this machine's name

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "password" in data:
            raise ValueError("notices.smtp.password is not allowed: put the password in an environment variable "
                             "and give its name as notices.smtp.password_env")
        return data

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SmtpSettings:
        if self.starttls and self.ssl:
            raise ValueError("choose one of starttls (port 587) and ssl (port 465), not both")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        if self.username is not None and not (self.starttls or self.ssl):
            raise ValueError("username needs starttls or ssl: the password would cross the network in clear")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 465 if self.ssl else 587 if self.starttls else 25


class NoticeSettings(BaseModel):
    """The ``notices:`` section of policy.yaml. Exactly one of ``smtp`` and ``spool_dir`` says how notices
    leave: over SMTP, or as ``.eml`` files for another system to deliver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_addr: str = Field(min_length=3)
    company: str = ""
    payment_url: str = ""  # "{account_id}" in it is replaced by the account's id (URL-quoted)
    support_email: str = ""
    domain: str | None = None  # right-hand side of Message-IDs; default: the domain of from_addr
    locale: str = "en"  # how amounts are written (en, de, fr ...)
    smtp: SmtpSettings | None = None
    spool_dir: Path | None = None

    @field_validator("from_addr")
    @classmethod
    def _address(cls, value: str) -> str:
        if "\n" in value or "\r" in value or "@" not in email.utils.parseaddr(value)[1]:
            raise ValueError(f"{value!r} is not an e-mail address")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", value):
            raise ValueError(f"{value!r} is not a domain name")
        return value

    @model_validator(mode="after")
    def _one_way_out(self) -> NoticeSettings:
        if (self.smtp is None) == (self.spool_dir is None):
            raise ValueError("set exactly one of notices.smtp (send by SMTP) and notices.spool_dir (write .eml files)")
        return self

    @property
    def message_domain(self) -> str:
        return self.domain or email.utils.parseaddr(self.from_addr)[1].rpartition("@")[2]

    def payment_url_for(self, account_id: str) -> str:
        return self.payment_url.replace("{account_id}", urllib.parse.quote(account_id, safe=""))


# --- the context ---------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _day(value: Any, tz: ZoneInfo) -> str:
    dt = _as_datetime(value)
    return "" if dt is None else dt.astimezone(tz).date().isoformat()


def _describe_measure(next_measure: Any) -> str:
    if next_measure is None:
        return ""
    action = getattr(next_measure, "action", None)
    if action is not None:
        return _MEASURE_TEXT.get(str(action), str(action))
    text = str(next_measure)
    return _MEASURE_TEXT.get(text, text.replace("_", " "))


def build_context(*, account: Mapping[str, Any], balance: Decimal, credit_limit: Decimal,
                  debt_start: datetime | None, now: datetime, stage: str | None, next_measure: Any = None,
                  next_due: datetime | None = None, settings: NoticeSettings, timezone: str = "UTC",
                  locale: str | None = None) -> dict[str, Any]:
    """Every variable of :data:`VARIABLES` for one account, amounts in the account's currency.

    ``account`` has the fields of :data:`ACCOUNT_FIELDS` (missing ones are empty). ``next_measure`` is a
    :class:`policy.model.UpcomingMeasure` / ``Measure`` (its action is described), an action name
    (``suspend``), or a text; ``next_due`` defaults to its ``due_at``.
    """
    tz = _zone(timezone)
    loc = locale or settings.locale
    currency = str(account.get("currency") or "USD")
    account_id = str(account.get("id") or account.get("account_id") or "")
    balance = Decimal(str(balance))
    credit_limit = Decimal(str(credit_limit))
    owed = max(Decimal(0), -balance)
    to_pay = max(Decimal(0), -balance - credit_limit)
    if next_due is None:
        next_due = getattr(next_measure, "due_at", None)
    now_local = _as_datetime(now).astimezone(tz)  # type: ignore[union-attr]
    start = _as_datetime(debt_start)
    due = _as_datetime(next_due)
    action = getattr(next_measure, "action", next_measure)
    deletion = account.get("deletion_date") or (due if action == "delete" else None)

    def money(value: Decimal) -> str:
        return format_money(value, currency, loc)

    return {
        "account_id": account_id,
        "username": str(account.get("username") or account_id),
        "billing_email": str(account.get("billing_email") or ""),
        "plan": str(account.get("plan") or ""),
        "balance": money(balance),
        "debt": money(owed),
        "amount_to_pay": money(to_pay),
        "credit_limit": money(credit_limit),
        "currency": currency.upper(),
        "debt_start": _day(start, tz),
        "days_in_debt": (now_local.date() - start.astimezone(tz).date()).days if start else 0,
        "stage": stage or "",
        "next_measure": _describe_measure(next_measure),
        "next_measure_date": _day(due, tz),
        "days_to_next_measure": max(0, (due.astimezone(tz).date() - now_local.date()).days) if due else "",
        "company": settings.company,
        "payment_url": settings.payment_url_for(account_id),
        "support_email": settings.support_email,
        "suspended_at": _day(account.get("suspended_at"), tz),
        "deletion_date": _day(deletion, tz),
        "now": now_local.strftime("%Y-%m-%d %H:%M ") + (now_local.tzname() or timezone),
        "today": now_local.date().isoformat(),
        "timezone": timezone,
    }


def context_from_fields(fields: Mapping[str, Any], settings: NoticeSettings, now: datetime) -> dict[str, Any]:
    """The context from one flat mapping: the account fields of :data:`ACCOUNT_FIELDS` plus ``balance``,
    ``credit_limit``, ``debt_start``, ``stage``, ``next_measure``, ``next_due``, ``timezone``, ``locale``."""
    try:
        balance = Decimal(str(fields.get("balance", 0)))
        credit_limit = Decimal(str(fields.get("credit_limit", 0)))
    except InvalidOperation as exc:
        raise ValueError(f"balance and credit_limit must be amounts: {exc}") from exc
    return build_context(
        account=fields, balance=balance, credit_limit=credit_limit,
        debt_start=_as_datetime(fields.get("debt_start")), now=now, stage=fields.get("stage"),
        next_measure=fields.get("next_measure"), next_due=_as_datetime(fields.get("next_due")),
        settings=settings, timezone=str(fields.get("timezone") or "UTC"), locale=fields.get("locale"),
    )


_SAMPLE_NOW = datetime(2026, 3, 20, 9, 30, tzinfo=UTC)


def _sample_settings() -> NoticeSettings:
    return NoticeSettings(from_addr="Example Hosting <billing@example.com>", company="Example Hosting",
                          payment_url="https://billing.example.com/pay?account={account_id}",
                          support_email="support@example.com", spool_dir=Path("spool"))


def _sample_fields(account_id: str = "acme-01") -> dict[str, Any]:
    return {
        "id": account_id, "username": "acme", "billing_email": "accounts@acme.example", "plan": "business",
        "currency": "USD", "balance": "-120.50", "credit_limit": "20", "debt_start": "2026-03-01T08:00:00+00:00",
        "stage": "pre_suspension", "next_measure": "suspend", "next_due": "2026-03-27T00:00:00+00:00",
        "suspended_at": "2026-03-27T00:00:00+00:00", "deletion_date": "2026-04-26T00:00:00+00:00",
        "timezone": "UTC",
    }


def sample_context(settings: NoticeSettings | None = None, now: datetime | None = None) -> dict[str, Any]:
    """A context with every variable filled with an example value (for checks and ``templates vars``)."""
    return context_from_fields(_sample_fields(), settings or _sample_settings(), now or _SAMPLE_NOW)


def preview_context(ctx_obj: Mapping[str, Any] | None, account_id: str) -> dict[str, Any]:
    """The context ``arrears templates preview`` renders for ``account_id``.

    ``ctx_obj`` (the CLI's context object) may hold ``account_fields``: a callable ``account_id -> dict``
    of the fields :func:`context_from_fields` reads (``None`` when the account is unknown, raised as
    :class:`LookupError`); ``notice_settings``: a :class:`NoticeSettings`; ``now``: the clock. Without
    ``account_fields`` the example account is used under ``account_id``.
    """
    obj = ctx_obj or {}
    settings = obj.get("notice_settings") or _sample_settings()
    now = obj.get("now") or datetime.now(UTC)
    loader: Callable[[str], Mapping[str, Any] | None] | None = obj.get("account_fields")
    if loader is None:
        return context_from_fields(_sample_fields(account_id), settings, now)
    fields = loader(account_id)
    if fields is None:
        raise LookupError(f"no account {account_id!r}")
    return context_from_fields(fields, settings, now)


# --- templates -----------------------------------------------------------------------------------


class TemplateError(Exception):
    """A template cannot be used; ``problems`` has one ``file:line: what, and what to do`` per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class _Template:
    name: str
    text: Path | None  # NAME.txt.j2
    html: Path | None  # NAME.html.j2


_SUBJECT = re.compile(r"^Subject:[ \t]*", re.IGNORECASE)


def _split(source: str) -> tuple[str, str] | None:
    """(subject source, body source) of a ``.txt.j2`` file; the body keeps its line numbers."""
    first, _, rest = source.partition("\n")
    match = _SUBJECT.match(first)
    if match is None:
        return None
    return first[match.end():], "\n" + rest


class _Loader(jinja2.BaseLoader):
    """Serves ``FILE`` (a whole file), ``FILE#subject`` and ``FILE#body`` (the parts of a text template)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        file, _, part = template.partition("#")
        path = self.files.get(file)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        source = path.read_text(encoding="utf-8-sig")
        if part:
            parts = _split(source)
            if parts is None:
                raise jinja2.TemplateNotFound(template)
            source = parts[0] if part == "subject" else parts[1]
        return source, str(path), lambda: True


def _autoescape(name: str | None) -> bool:
    return name is not None and name.partition("#")[0].endswith((HTML_SUFFIX, ".html"))


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _template_line(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` where a render error was raised (jinja maps template frames to their file)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    return line


class Templates:
    """The notice and page templates: the operator's folder over the packaged defaults, checked at load."""

    def __init__(self, env: jinja2.Environment, templates: Mapping[str, _Template]) -> None:
        self._env = env
        self._templates = dict(templates)

    @classmethod
    def load(cls, directory: Path | str | None = None) -> Templates:
        """Load and check every template. Raises :class:`TemplateError` listing every problem found."""
        dirs = [PACKAGE_TEMPLATES]
        if directory is not None:
            op = Path(directory)
            if not op.is_dir():
                raise TemplateError([f"{op}: templates folder not found; create it or leave it out to use "
                                     f"the default templates"])
            dirs.insert(0, op)
        files: dict[str, Path] = {}
        owner: dict[str, Path] = {}  # template name -> the folder it comes from
        for folder in reversed(dirs):  # later (operator) folders win
            by_name: dict[str, list[Path]] = {}
            for path in sorted(folder.iterdir()):
                if not path.is_file() or not path.name.endswith((TEXT_SUFFIX, HTML_SUFFIX)):
                    continue
                if path.name.startswith("_"):
                    files[path.name] = path
                    continue
                by_name.setdefault(path.name.rsplit(".", 2)[0], []).append(path)
            for name in by_name:
                owner[name] = folder
        problems = []
        for name, folder in sorted(owner.items()):
            if (folder != PACKAGE_TEMPLATES and not (folder / (name + TEXT_SUFFIX)).is_file()
                    and (PACKAGE_TEMPLATES / (name + TEXT_SUFFIX)).is_file()):
                problems.append(f"{folder / (name + HTML_SUFFIX)}: the notice {name!r} needs its text too: copy "
                                f"{PACKAGE_TEMPLATES / (name + TEXT_SUFFIX)} to {folder} (a template comes "
                                f"entirely from the templates folder or entirely from the defaults)")
        if problems:
            raise TemplateError(problems)
        templates: dict[str, _Template] = {}
        for name, folder in sorted(owner.items()):
            text, html = folder / (name + TEXT_SUFFIX), folder / (name + HTML_SUFFIX)
            templates[name] = _Template(name, text if text.is_file() else None, html if html.is_file() else None)
            for path in (text, html):
                if path.is_file():
                    files[path.name] = path
        env = ImmutableSandboxedEnvironment(
            loader=_Loader(files), undefined=jinja2.StrictUndefined, autoescape=_autoescape,
            finalize=_finalize, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        )
        result = cls(env, templates)
        result._check(files)
        return result

    # -- checks --

    def _check(self, files: Mapping[str, Path]) -> None:
        problems: list[str] = []
        known = set(VARIABLES) | set(self._env.globals)
        for file, path in sorted(files.items()):
            try:
                source = path.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: cannot read: {exc}")
                continue
            parts = [file]
            if file.endswith(TEXT_SUFFIX) and not file.startswith("_"):
                if _split(source) is None:
                    problems.append(f"{path}:1: the first line must be 'Subject: ...' (the notice's subject), "
                                    f"followed by the text of the notice")
                    continue
                parts = [file + "#subject", file + "#body"]
            for part in parts:
                problems.extend(self._check_part(part, path, known))
        if problems:
            raise TemplateError(problems)
        sample = sample_context()
        for name, tpl in self._templates.items():
            try:
                if tpl.text is not None:
                    self.render(name, sample)
                else:
                    self.render_html(name, sample)
            except TemplateError as exc:
                problems.extend(exc.problems)
        if problems:
            raise TemplateError(problems)

    def _check_part(self, part: str, path: Path, known: set[str]) -> list[str]:
        assert self._env.loader is not None
        source = self._env.loader.get_source(self._env, part)[0]
        try:
            ast = self._env.parse(source, part, str(path))
            self._env.get_template(part)
        except jinja2.TemplateSyntaxError as exc:
            return [f"{path}:{exc.lineno}: syntax error: {exc.message}; fix the template (Jinja2 syntax)"]
        problems = []
        for var in sorted(meta.find_undeclared_variables(ast) - known):
            line = next((n.lineno for n in ast.find_all(nodes.Name) if n.name == var), None)
            hint = difflib.get_close_matches(var, list(VARIABLES), n=1)
            advice = f"did you mean '{hint[0]}'? " if hint else ""
            problems.append(f"{path}:{line}: unknown variable '{var}'; {advice}"
                            f"`arrears templates vars` lists the variables you can use")
        return problems

    # -- use --

    def names(self) -> list[str]:
        """The notice templates (those with a subject and text)."""
        return sorted(n for n, t in self._templates.items() if t.text is not None)

    def pages(self) -> list[str]:
        """The page templates (HTML only, such as ``suspended_page``)."""
        return sorted(n for n, t in self._templates.items() if t.text is None)

    def origin(self, name: str) -> list[Path]:
        """The files template ``name`` is read from."""
        tpl = self._get(name)
        return [p for p in (tpl.text, tpl.html) if p is not None]

    def require(self, names: Iterable[str]) -> None:
        """Raise :class:`TemplateError` naming every template of ``names`` that does not exist."""
        missing = sorted({n for n in names if n not in self._templates})
        if missing:
            raise TemplateError([f"template {n!r} not found; add {n}{TEXT_SUFFIX} to the templates folder or "
                                 f"use one of {', '.join(self.names())}" for n in missing])

    def _get(self, name: str) -> _Template:
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateError([f"template {name!r} not found; the templates are "
                                 f"{', '.join(sorted(self._templates))}"]) from None

    def _render(self, part: str, path: Path, context: Mapping[str, Any]) -> str:
        try:
            return self._env.get_template(part).render(dict(context))
        except jinja2.TemplateError as exc:
            line = _template_line(exc, path)
            where = f"{path}:{line}" if line is not None else str(path)
            raise TemplateError([f"{where}: {type(exc).__name__}: {exc}"]) from exc

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedNotice:
        tpl = self._get(name)
        if tpl.text is None:
            raise TemplateError([f"template {name!r} is a page, not a notice (it has no {name}{TEXT_SUFFIX})"])
        subject = self._render(tpl.text.name + "#subject", tpl.text, context)
        text = self._render(tpl.text.name + "#body", tpl.text, context).lstrip("\n")
        html = self.render_html(name, context) if tpl.html is not None else None
        return RenderedNotice(subject=" ".join(subject.split()), text=text.rstrip() + "\n", html=html)

    def render_html(self, name: str, context: Mapping[str, Any]) -> str:
        tpl = self._get(name)
        if tpl.html is None:
            raise TemplateError([f"template {name!r} has no {name}{HTML_SUFFIX}"])
        return self._render(tpl.html.name, tpl.html, context)


def render_page(templates: Templates, context: Mapping[str, Any], name: str = PAGE) -> str:
    """The suspended page's HTML. Variables missing from ``context`` are empty (a page may be generic)."""
    full: dict[str, Any] = dict.fromkeys(VARIABLES, "")
    full.update(context)
    return templates.render_html(name, full)


# --- Message-IDs ---------------------------------------------------------------------------------


def _atom(value: str, safe: str = "") -> str:
    """``value`` with every character outside ``[A-Za-z0-9_-]`` (and ``safe``) as ``=XX`` per UTF-8 byte:
    injective, and valid in a Message-ID and a file name."""
    out = []
    for ch in value:
        if ch.isascii() and (ch.isalnum() or ch in "_-" or ch in safe):
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def message_id(account: str, episode_id: int | None, stage: str, domain: str) -> str:
    """The notice's Message-ID, the same every time for (account, episode, stage):
    ``<arrears.ACCOUNT.EPISODE.STAGE@domain>``."""
    episode = "0" if episode_id is None else str(int(episode_id))
    return f"<arrears.{_atom(account)}.{episode}.{_atom(stage)}@{domain}>"


# --- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingNotice:
    key: str  # unique per (account, episode, stage)
    to: str  # the billing address
    message_id: str
    rendered: RenderedNotice
    date: datetime | None = None  # the Date header; default: when it is sent


@dataclass(frozen=True)
class SendResult:
    ok: bool
    permanent: bool = False  # retrying will not help (5xx, invalid address)
    error: str | None = None


ResultCallback = Callable[[OutgoingNotice, SendResult], None]


class Notifier(Protocol):
    """Delivers a batch of notices; returns each notice's result by key.

    ``on_result`` (when given) is called in the caller's thread with each notice and its result as soon as
    that result is known: right after the mail server accepted or refused the message (or the spool file
    is in place), before the next message is sent. The caller can record each notice at once, so a crash
    in the middle of a batch leaves only the message in flight unrecorded. An exception it raises stops
    the batch (nothing more is sent) and propagates."""

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]: ...


def _bad_address(addr: str) -> SendResult:
    what = "the account has no billing address" if not addr.strip() else f"invalid billing address {addr!r}"
    return SendResult(False, True, what)


def _envelope_address(addr: str) -> str | None:
    if "\n" in addr or "\r" in addr:
        return None
    bare = email.utils.parseaddr(addr)[1]
    if not bare or "@" not in bare or any(c.isspace() for c in bare):
        return None
    return bare


def _build_message(settings: NoticeSettings, notice: OutgoingNotice, now: datetime) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = settings.from_addr
    msg["To"] = notice.to
    msg["Subject"] = notice.rendered.subject
    msg["Date"] = email.utils.format_datetime((notice.date or now).astimezone(UTC))
    msg["Message-ID"] = notice.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Arrears-Notice"] = notice.key
    msg.set_content(notice.rendered.text)
    if notice.rendered.html is not None:
        msg.add_alternative(notice.rendered.html, subtype="html")
    return msg


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def _failure(code: int, message: bytes | str, what: str) -> SendResult:
    return SendResult(ok=False, permanent=500 <= code < 600, error=f"{what}: {_reply(code, message)}")


class SmtpNotifier:
    """Sends a batch over one SMTP connection (TLS and login when configured)."""

    def __init__(self, settings: NoticeSettings, *, clock: Callable[[], datetime] = _utcnow,
                 environ: Mapping[str, str] | None = None) -> None:
        if settings.smtp is None:
            raise ValueError("SmtpNotifier needs notices.smtp")
        self.settings = settings
        self.smtp = settings.smtp
        self.clock = clock
        self.environ = os.environ if environ is None else environ

    def _connect(self) -> smtplib.SMTP:
        s = self.smtp
        password = None
        if s.password_env is not None:
            password = self.environ.get(s.password_env)
            if not password:
                raise _ConfigProblem(f"the SMTP password's environment variable {s.password_env} is not set")
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        client: smtplib.SMTP
        if s.ssl:
            client = smtplib.SMTP_SSL(s.host, s.effective_port, local_hostname=s.helo, timeout=s.timeout,
                                      context=context)
        else:
            client = smtplib.SMTP(s.host, s.effective_port, local_hostname=s.helo, timeout=s.timeout)
        try:
            client.ehlo()
            if s.starttls:
                client.starttls(context=context)
                client.ehlo()
            if s.username is not None and password is not None:
                client.login(s.username, password)
        except BaseException:
            client.close()
            raise
        return client

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]:
        results: dict[str, SendResult] = {}

        def report(notice: OutgoingNotice, result: SendResult) -> None:
            results[notice.key] = result
            if on_result is not None:
                on_result(notice, result)

        def report_all(items: Sequence[tuple[OutgoingNotice, str, EmailMessage]], result: SendResult) -> None:
            for notice, _, _ in items:
                report(notice, result)

        ready: list[tuple[OutgoingNotice, str, EmailMessage]] = []
        sender = _envelope_address(self.settings.from_addr) or self.settings.from_addr
        now = self.clock()
        for notice in notices:
            rcpt = _envelope_address(notice.to)
            if rcpt is None:
                report(notice, _bad_address(notice.to))
                continue
            try:
                ready.append((notice, rcpt, _build_message(self.settings, notice, now)))
            except (ValueError, TypeError) as exc:
                report(notice, SendResult(False, True, f"cannot build the message: {exc}"))
        if not ready:
            return results
        where = f"{self.smtp.host}:{self.smtp.effective_port}"
        try:
            client = self._connect()
        except _ConfigProblem as exc:
            report_all(ready, SendResult(False, False, str(exc)))
            return results
        except smtplib.SMTPAuthenticationError as exc:
            error = f"SMTP login to {where} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            report_all(ready, SendResult(False, False, error))
            return results
        except smtplib.SMTPNotSupportedError as exc:
            report_all(ready, SendResult(False, False, f"SMTP server {where}: {exc}"))
            return results
        except (OSError, smtplib.SMTPException) as exc:
            error = f"cannot connect to SMTP server {where}: {type(exc).__name__}: {exc}"
            report_all(ready, SendResult(False, False, error))
            return results
        try:
            for index, (notice, rcpt, msg) in enumerate(ready):
                result, lost = self._send_one(client, msg, sender, rcpt, where)
                if lost:  # the connection is gone: this one and the rest wait for the next run
                    report_all(ready[index:], result)
                    break
                report(notice, result)  # reported before the next message goes out
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
        return results

    @staticmethod
    def _send_one(client: smtplib.SMTP, msg: EmailMessage, sender: str, rcpt: str,
                  where: str) -> tuple[SendResult, bool]:
        """One message over the open connection: its result, and whether the connection was lost."""
        try:
            client.send_message(msg, from_addr=sender, to_addrs=[rcpt])
            return SendResult(True), False
        except smtplib.SMTPRecipientsRefused as exc:
            code, message = exc.recipients.get(rcpt, (450, b"refused"))
            return _failure(code, message, f"recipient {rcpt} refused"), False
        except smtplib.SMTPSenderRefused as exc:
            # the sender is the provider's own configuration, never the notice's fault: retry later
            error = f"sender {sender} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
            return SendResult(False, False, error), False
        except smtplib.SMTPDataError as exc:
            return _failure(exc.smtp_code, exc.smtp_error, "message refused"), False
        except smtplib.SMTPNotSupportedError as exc:
            return SendResult(False, True, f"SMTP server {where}: {exc}"), False
        except (OSError, smtplib.SMTPException) as exc:
            error = f"connection to SMTP server {where} lost: {type(exc).__name__}: {exc}"
            return SendResult(False, False, error), True


class _ConfigProblem(Exception):
    pass


class SpoolNotifier:
    """Writes each notice as ``<spool_dir>/<key>.eml`` (atomically: temporary file, then rename). A notice
    whose file exists already is not written again. Characters of the key other than letters, digits and
    ``_-.@+:`` are written as ``=XX``, so a key never leaves the folder."""

    def __init__(self, settings: NoticeSettings, *, clock: Callable[[], datetime] = _utcnow) -> None:
        if settings.spool_dir is None:
            raise ValueError("SpoolNotifier needs notices.spool_dir")
        self.settings = settings
        self.directory = Path(settings.spool_dir)
        self.clock = clock

    def path_for(self, key: str) -> Path:
        name = _atom(key, safe=".@+:")
        if name.startswith("."):
            name = "=2E" + name[1:]
        return self.directory / f"{name}.eml"

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: ResultCallback | None = None) -> dict[str, SendResult]:
        results: dict[str, SendResult] = {}
        now = self.clock()
        for notice in notices:
            results[notice.key] = self._write(notice, now)
            if on_result is not None:
                on_result(notice, results[notice.key])
        return results

    def _write(self, notice: OutgoingNotice, now: datetime) -> SendResult:
        if _envelope_address(notice.to) is None:
            return _bad_address(notice.to)
        target = self.path_for(notice.key)
        try:
            if target.exists():
                return SendResult(True)
            data = _build_message(self.settings, notice, now).as_bytes(policy=email.policy.default)
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            try:
                os.fchmod(fd, 0o640)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return SendResult(True)
        except (ValueError, TypeError) as exc:
            return SendResult(False, True, f"cannot build the message: {exc}")
        except OSError as exc:
            return SendResult(False, False, f"cannot write {target}: {exc}")


def make_notifier(settings: NoticeSettings, *, clock: Callable[[], datetime] = _utcnow) -> Notifier:
    """The notifier ``settings`` ask for: SMTP, or the spool folder."""
    if settings.smtp is not None:
        return SmtpNotifier(settings, clock=clock)
    return SpoolNotifier(settings, clock=clock)
