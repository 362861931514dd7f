"""Column types that keep money exact and timestamps aware."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["Money", "UTCDateTime"]


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without a zone; refuses naive datetimes on the way in, returns aware UTC on the way out."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: every timestamp must carry a zone")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """A Decimal stored as its exact decimal string (SQLite has no exact numeric type); never a float."""

    impl = String(48)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
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
        return str(d)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value))
