"""The base of every answer of the Python API (:mod:`agent.service.results` has them all): :class:`Record`
and its JSON (:func:`jsonable`), and :class:`Page`, one page of a long read. A command that answers
with a page of its own (``plan``) loads this, not every answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

__all__ = ["HIDDEN", "OMIT", "Page", "Record", "jsonable"]

OMIT = {"omit": True}  # field metadata: left out of the JSON while None
HIDDEN = {"hidden": True}  # field metadata: never in the JSON


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: a :class:`Record` as its :meth:`~Record.to_json`, ``Decimal`` as its
    string, an instant as ISO-8601 in UTC, a date as ``YYYY-MM-DD``, sets sorted, tuples as lists."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Record:
    """The base of every answer: :meth:`to_json` walks the fields in order."""

    def to_json(self) -> dict[str, Any]:
        """The answer as the CLI's ``--json`` prints it (``json.dumps`` of this is that output's data)."""
        out: dict[str, Any] = {}
        for name, key, omit in _json_fields(type(self)):
            value = getattr(self, name)
            if omit and value is None:
                continue
            out[key] = value if type(value) is str else jsonable(value)
        return out


_FIELDS: dict[type[Any], tuple[tuple[str, str, bool], ...]] = {}


def _json_fields(cls: type[Any]) -> tuple[tuple[str, str, bool], ...]:
    """The fields :meth:`Record.to_json` writes of ``cls``, in order: name, JSON key, left out while None
    (read from the dataclass once per class)."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple((f.name, f.metadata.get("key", f.name), bool(f.metadata.get("omit")))
                                     for f in dataclasses.fields(cls) if not f.metadata.get("hidden"))
    return found


T = TypeVar("T", bound=Record)


@dataclass(frozen=True)
class Page(Record, Generic[T]):
    """One page of a long read (``debtors``, ``plan``): ``items`` in the report's order; pass
    ``next_cursor`` as ``cursor`` for the next page (None: this was the last)."""

    items: list[T]
    next_cursor: str | None = None
