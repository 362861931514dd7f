"""The values a caller hands the Python API, checked and made exact: amounts in the account's currency,
instants and dates, payment methods; and the two defaults a call may leave out, the clock and the actor.

:func:`wall_clock` is the one read of the real clock in arrears (tests/suite/test_clock.py holds it so):
everything below is handed ``now``, which is what makes ``--at`` a faithful simulation.
"""

from __future__ import annotations

import getpass
import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from agent.service.errors import InvalidInput

if TYPE_CHECKING:
    from policy.loader import PolicySet

__all__ = ["actor_name", "check_instant", "check_method", "parse_instant", "parse_moment", "parse_money", "wall_clock"]

_METHOD = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def wall_clock() -> datetime:
    """The real clock, read here and nowhere else: a call's ``now`` when it gives none, the daemon's at each
    tick."""
    return datetime.now(UTC)


def actor_name(actor: str | None) -> str:
    """``actor``, else the login name (``unknown`` when there is none)."""
    if actor:
        return actor
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def parse_instant(text: str, *, what: str = "time") -> datetime:
    """An ISO-8601 instant with a zone, as aware UTC, within the range arrears accepts."""
    from agent.instants import parse_instant as parse

    try:
        return parse(text, what=what)
    except ValueError as exc:
        raise InvalidInput(str(exc), what) from None


def check_instant(value: datetime, *, what: str = "time") -> datetime:
    """An aware instant as UTC, within the range arrears accepts."""
    from agent.instants import check_instant as check

    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} {value.isoformat()!r} has no zone; give an aware time", what)
    try:
        return check(value, what=what)
    except ValueError as exc:
        raise InvalidInput(str(exc), what) from None


def parse_money(value: Decimal | str, what: str, currency: str) -> Decimal:
    """An amount (text, or a ``Decimal``) in ``currency`` (the account's): no more decimals than it has."""
    from agent.imports import parse_amount

    try:
        return parse_amount(value if isinstance(value, str) else str(value), currency=currency, what=what)
    except ValueError as exc:
        raise InvalidInput(str(exc), what) from None


def parse_moment(value: datetime | date | str, policy: PolicySet, what: str) -> datetime:
    """An instant: a date (``YYYY-MM-DD``, or a ``date``) is midnight in the policy's time zone; else an
    ISO-8601 instant with a zone (or an aware ``datetime``)."""
    from agent.instants import check_instant as check

    if isinstance(value, datetime):
        return check_instant(value, what=what)
    if isinstance(value, date):
        day, shown = value, value.isoformat()
    else:
        raw = value.strip()
        if len(raw) != 10:
            return parse_instant(raw, what=what)
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(f"{what} {value!r} is not a date (YYYY-MM-DD) or a time with a zone", what) from None
        shown = value
    try:
        return check(datetime.combine(day, time(0), tzinfo=ZoneInfo(policy.timezone)), what=what, shown=shown)
    except ValueError as exc:
        raise InvalidInput(str(exc), what) from None


def check_method(method: str) -> str:
    """A payment method: lower-case letters, digits, ``-`` and ``_``."""
    if not _METHOD.match(method):
        raise InvalidInput(f"method {method!r} is not valid (lower-case letters, digits, - and _)", "method")
    return method
