"""The variables ("AutoInserts") a notice template may use, and the context that fills them.

:data:`VARIABLES` names and describes every variable; :func:`build_context` fills them for one account
(amounts written by :func:`format_money` in the account's currency); :func:`context_from_fields` does the
same from one flat mapping; :func:`sample_context` and :func:`preview_context` give example contexts for
checks and previews. :func:`message_id` is the notice's Message-ID, the same every time for
(account, episode, stage).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision

from agent.notices.settings import NoticeSettings

__all__ = [
    "ACCOUNT_FIELDS",
    "VARIABLES",
    "build_context",
    "context_from_fields",
    "format_money",
    "message_id",
    "money_locale",
    "preview_context",
    "sample_context",
]

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
    "failure": "why a notice failed for good, as the mail server answered (only in notice_failed, the "
               "message to staff; empty elsewhere)",
}

ACCOUNT_FIELDS = ("id", "username", "billing_email", "plan", "currency", "suspended_at", "deletion_date")

_MEASURE_TEXT = {
    "notice": "a further notice",
    "suspend": "suspension of the account",
    "delete": "deletion of the account and all its files",
    "hook": "a further measure",
}

# --- money ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def money_locale(name: str) -> Locale:
    """The Babel locale of a language code such as ``en``, ``de_DE`` or ``pt-BR``; ValueError if unknown."""
    try:
        return Locale.parse(name.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError) as exc:
        raise ValueError(f"unknown locale {name!r}; use a language code such as en, de or pt_BR") from exc


@functools.lru_cache(maxsize=4096)  # a pure function of its arguments; Babel takes about 0.2 ms a call
def format_money(amount: Decimal | int | str, currency: str, locale: str = "en") -> str:
    """``amount`` written in ``currency`` for ``locale`` (a language code such as ``en`` or ``de_DE``) by
    Babel (CLDR): ``-$1,234.50`` (en), ``-1.234,50 €`` (de), ``¥1,234`` (JPY has no minor unit). The
    amount is rounded half up to the currency's minor unit; a rounded zero has no sign."""
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    code = currency.upper()
    rounded = value.quantize(Decimal(1).scaleb(-get_currency_precision(code)), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)
    return str(format_currency(rounded, code, locale=money_locale(locale)))


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
                  locale: str | None = None, failure: str = "") -> dict[str, Any]:
    """Every variable of :data:`VARIABLES` for one account, amounts in the account's currency.

    ``account`` has the fields of :data:`ACCOUNT_FIELDS` (missing ones are empty). ``next_measure`` is a
    :class:`policy.model.UpcomingMeasure` / ``Measure`` (its action is described), an action name
    (``suspend``), or a text; ``next_due`` defaults to its ``due_at``. ``failure``: in the message to
    staff about a notice that failed for good, the mail server's reply.
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
        "failure": failure,
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
        failure=str(fields.get("failure") or ""),
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
        "failure": "recipient accounts@acme.example refused: 550 5.1.1 <accounts@acme.example>: User unknown",
    }


def sample_context(settings: NoticeSettings | None = None, now: datetime | None = None) -> dict[str, Any]:
    """A context with every variable filled with an example value (for checks and ``templates vars``)."""
    return context_from_fields(_sample_fields(), settings or _sample_settings(), now or _SAMPLE_NOW)


def preview_context(ctx_obj: Mapping[str, Any] | None, account_id: str) -> dict[str, Any]:
    """The context ``arrears templates preview`` renders for ``account_id``.

    ``ctx_obj`` (the CLI's context object) may hold ``account_fields``: a callable ``account_id -> dict``
    of the fields :func:`context_from_fields` reads (``None`` when the account is unknown, raised as
    :class:`LookupError`); ``notice_settings``: a :class:`NoticeSettings`; ``now``: the clock (the CLI's
    ``--at``, else its start time), required with ``account_fields``. Without ``account_fields`` the example
    account is used under ``account_id``, at ``now`` or the example's own moment.
    """
    obj = ctx_obj or {}
    settings = obj.get("notice_settings") or _sample_settings()
    now: datetime | None = obj.get("now")
    loader: Callable[[str], Mapping[str, Any] | None] | None = obj.get("account_fields")
    if loader is None:
        return context_from_fields(_sample_fields(account_id), settings, now or _SAMPLE_NOW)
    if now is None:
        raise ValueError("preview_context needs the clock (now) to render an account's dates")
    fields = loader(account_id)
    if fields is None:
        raise LookupError(f"no account {account_id!r}")
    return context_from_fields(fields, settings, now)


# --- Message-IDs ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _kept(safe: str) -> re.Pattern[str]:
    """The values :func:`_atom` keeps as they are: only ``[A-Za-z0-9_-]`` and ``safe``."""
    return re.compile(f"[A-Za-z0-9_{re.escape(safe)}-]*")


def _atom(value: str, safe: str = "") -> str:
    """``value`` with every character outside ``[A-Za-z0-9_-]`` (and ``safe``) as ``=XX`` per UTF-8 byte:
    injective, and valid in a Message-ID and a file name."""
    if _kept(safe).fullmatch(value):
        return value  # nothing to write as =XX (most ids): one match instead of a loop per character
    out = []
    for ch in value:
        if ch.isascii() and (ch.isalnum() or ch in "_-" or ch in safe):
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def message_id(account: str, episode_id: int | None, stage: str, domain: str, *, copy: str | None = None) -> str:
    """The notice's Message-ID, the same every time for (account, episode, stage):
    ``<arrears.ACCOUNT.EPISODE.STAGE@domain>``; ``copy`` names another message about that notice
    (``staff``: the message telling staff it failed for good): ``<arrears.ACCOUNT.EPISODE.STAGE.COPY@domain>``."""
    episode = "0" if episode_id is None else str(int(episode_id))
    extra = f".{_atom(copy)}" if copy else ""
    return f"<arrears.{_atom(account)}.{episode}.{_atom(stage)}{extra}@{domain}>"
