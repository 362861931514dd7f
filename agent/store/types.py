"""Column types that keep money exact and timestamps aware, on SQLite and on PostgreSQL.

- :class:`Money`: ``NUMERIC`` (arbitrary precision, the scale kept) on PostgreSQL; on SQLite, which has no
  exact numeric type, the exact decimal string. A float is refused on the way in, a Decimal comes out.
- :class:`UTCDateTime`: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; on SQLite, which has no zones, UTC
  without a zone. A naive datetime is refused on the way in, an aware UTC datetime comes out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["Money", "UTCDateTime"]


def _native(dialect: Dialect) -> bool:
    """Whether the database has exact numbers and zoned timestamps of its own (PostgreSQL), or not (SQLite)."""
    return dialect.name == "postgresql"


class UTCDateTime(TypeDecorator[datetime]):
    """Refuses naive datetimes on the way in, returns aware UTC on the way out."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(DateTime(timezone=_native(dialect)))

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: every timestamp must carry a zone")
        utc = value.astimezone(UTC)
        return utc if _native(dialect) else utc.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """A Decimal, exact on the way in and out; never a float."""

    impl = String(48)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if _native(dialect):
            return dialect.type_descriptor(Numeric(asdecimal=True))
        return dialect.type_descriptor(String(48))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Decimal | str | None:
        if type(value) is Decimal and value.is_finite():  # the common case: what the checks below make of it
            return value if _native(dialect) else str(value)
        if value is None:
            return None
        if isinstance(value, float) or not isinstance(value, Decimal | int | str):
            raise TypeError(f"money must be a Decimal, got {type(value).__name__}")
        try:
            d = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError(f"not an amount: {value!r}") from exc
        if not d.is_finite():
            raise ValueError(f"not a finite amount: {value!r}")
        return d if _native(dialect) else str(d)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value))
