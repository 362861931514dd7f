"""The instants arrears accepts, from every source alike (billing files, ``--at``, the Python API, the HTTP
API): ISO-8601 with a zone, as aware UTC, within [:data:`EARLIEST`, :data:`LATEST`).

A module of its own, with nothing but :mod:`datetime`, so that a command that reads ``--at`` does not
import the importer (:mod:`agent.imports`, which uses these) and the database library with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["EARLIEST", "LATEST", "check_instant", "parse_instant"]

# instants arrears accepts: billing dates, the simulation clock and admins' dates; outside is a typo (and
# near the ends of the calendar the policy's date arithmetic would overflow)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def parse_instant(text: str, *, what: str = "time") -> datetime:
    """An ISO-8601 instant that carries a zone (``Z`` or ``+02:00``), as aware UTC, within
    [:data:`EARLIEST`, :data:`LATEST`)."""
    try:  # the common case first: a UTC instant in range, as it is
        value = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if value.tzinfo is UTC and EARLIEST <= value < LATEST:
            return value
    return _checked_instant(text, what)


def _checked_instant(text: str, what: str) -> datetime:
    """:func:`parse_instant` for every text: the rules themselves, which its first step agrees with
    (tests/agent/test_import_fast_paths.py)."""
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO-8601 time such as 2026-03-01T09:00:00+00:00") from None
    if value.tzinfo is None or value.utcoffset() is None:
        example = raw if "T" in raw or " " in raw else f"{raw}T00:00:00"
        raise ValueError(f"{what} {text!r} has no zone; add one, e.g. {example}Z or {example}+01:00")
    return check_instant(value, what=what, shown=text)


def check_instant(value: datetime, *, what: str = "time", shown: str | None = None) -> datetime:
    """``value`` (aware) as UTC when it lies within [:data:`EARLIEST`, :data:`LATEST`), else ValueError."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"{what} {shown if shown is not None else value.isoformat()!r} is out of range: "
                         f"give a time from {EARLIEST.date()} to {(LATEST - timedelta(days=1)).date()} (UTC)")
    return utc
