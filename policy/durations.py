"""Durations and calendar-day counts as written in policy files, and the times they lead to."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from policy.model import After

__all__ = ["DURATION_HELP", "after_due", "local_midnight", "parse_duration", "require_aware"]

# at most 12 digits per unit: longer counts are typos (and int() refuses thousands of digits)
_DURATION = re.compile(r"^(?:(?P<w>\d{1,12})w)?(?:(?P<d>\d{1,12})d)?(?:(?P<h>\d{1,12})h)?(?:(?P<m>\d{1,12})m)?"
                       r"(?:(?P<s>\d{1,12})s)?$")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

DURATION_HELP = "write a whole number of days (5) or a duration with units such as 36h, 90m, 2592000s or 2d12h"


def parse_duration(text: str) -> int | None:
    """Seconds in a duration such as ``36h``, ``90m``, ``2592000s`` or ``2d12h``; ``None`` if malformed."""
    text = text.strip()
    match = _DURATION.match(text)
    if not text or match is None:
        return None
    return sum(int(value) * _UNITS[unit] for unit, value in match.groupdict().items() if value is not None)


def require_aware(value: datetime, what: str) -> datetime:
    """``value`` itself, or ValueError when it has no time zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first moment of ``day`` in ``tz``, as an aware datetime (DST-safe: the date is counted in
    local calendar days, the instant is whatever that midnight is in UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def after_due(after: After, previous: datetime, tz: ZoneInfo) -> datetime:
    """When a stage with ``after`` falls due when the count runs from ``previous``.

    Whole days: local midnight of ``local_date(previous) + days`` (never before ``previous``).
    Seconds: exactly ``previous + seconds``. Neither: ``previous`` (immediately). Answers in UTC.
    """
    if after.seconds is not None:
        return (previous + timedelta(seconds=after.seconds)).astimezone(UTC)
    if after.days is not None:
        day = previous.astimezone(tz).date() + timedelta(days=after.days)
        return max(previous, local_midnight(day, tz)).astimezone(UTC)
    return previous
