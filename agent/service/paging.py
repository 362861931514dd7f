"""Pages of a report: a page's cursor (opaque: the sort key of its last row), the row after a cursor, and
up to ``limit`` rows of a sorted stream with the cursor after them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from agent.service.errors import InvalidInput

__all__ = ["after", "cursor_after", "limited", "page"]

R = TypeVar("R")


def cursor_after(key: Sequence[Any]) -> str:
    """An opaque cursor for the row after ``key`` (the sort key of a page's last row)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def after(cursor: str | None, arity: int) -> list[Any] | None:
    """The sort key a cursor names; :class:`InvalidInput` (``cursor``) for one no page gave."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != arity or not all(isinstance(k, str | int) for k in key):
        raise InvalidInput(f"cursor {cursor!r} is not one a page gave; start without a cursor", "cursor")
    return key


def limited(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {limit}", "limit")
    return limit


def page(rows: Iterator[tuple[Sequence[Any], R]], limit: int | None) -> tuple[list[R], str | None]:
    """Up to ``limit`` of ``rows`` (sort key, row) and the cursor after the last when more follow."""
    items: list[R] = []
    last: Sequence[Any] | None = None
    for key, row in rows:
        if limit is not None and len(items) == limit:
            return items, cursor_after(last or key)
        items.append(row)
        last = key
    return items, None
