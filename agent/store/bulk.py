"""Writing many rows in one statement: ``INSERT``, or ``INSERT ... ON CONFLICT``, in the database's dialect.

The importers write a chunk of rows at a time through :func:`write_rows`; which dialect's ``insert``
construct is used (SQLite's or PostgreSQL's, both of which know ``ON CONFLICT``) is decided here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Row, Table
from sqlalchemy.orm import Session

__all__ = ["table_of", "write_rows"]


def table_of(model: type[Any]) -> Table:
    """The table of a mapped class."""
    return cast(Table, model.__table__)


def _insert(session: Session, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise NotImplementedError(f"bulk writes support sqlite and postgresql, not {dialect}")


def write_rows(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, key: Sequence[str] = (),
               update: Sequence[str] = (), returning: Sequence[str] = (),
               ordered: bool = False) -> list[Row[Any]]:
    """Insert ``rows`` (all with the same columns) in one statement. With ``key`` (a unique key's columns) a
    row whose key is taken updates the columns ``update`` of the stored row, or is left out when ``update``
    is empty. ``returning`` columns come back for the rows written (in the order of ``rows`` when
    ``ordered``, which needs every row written)."""
    if not rows:
        return []
    stmt = _insert(session, table)
    if key:
        if update:
            stmt = stmt.on_conflict_do_update(index_elements=list(key),
                                              set_={c: stmt.excluded[c] for c in update})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    if returning:
        stmt = stmt.returning(*(table.c[c] for c in returning), sort_by_parameter_order=ordered)
        return list(session.execute(stmt, list(rows)))
    session.execute(stmt, list(rows))
    return []
