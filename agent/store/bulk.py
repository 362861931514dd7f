"""Writing many rows at once, the same way on SQLite and PostgreSQL: ``INSERT``, ``INSERT ... ON CONFLICT``
(skip or update the rows whose key exists already) in the database's dialect, and taking the write lock
before reading what a write depends on. Which dialect's ``insert`` construct is used is decided here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Row, Table
from sqlalchemy.orm import Session

from agent.store.db import StoreError

__all__ = ["begin_write", "insert_ignore", "table_of", "write_rows"]


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
    raise StoreError(f"database {dialect!r} is not supported (SQLite or PostgreSQL)")


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


def insert_ignore(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                  key: Sequence[str]) -> list[Row[Any]]:
    """Insert ``rows`` into ``table``, skipping each row whose unique ``key`` columns exist already (in
    the table, or earlier in ``rows``); returns the ``key`` columns of the rows inserted."""
    return write_rows(session, table, rows, key=key, returning=key)


def begin_write(session: Session) -> None:
    """Make the session's transaction a writer from now on, so that what it reads next cannot change
    under it before it commits. On SQLite this takes the database's write lock at once
    (``BEGIN IMMEDIATE``; the driver would otherwise begin only at the first write, after the reads);
    on PostgreSQL the rows to protect are read ``FOR UPDATE`` instead and this does nothing. Savepoints
    (``Session.begin_nested``) taken afterwards nest inside this transaction."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return
    raw: Any = conn.connection.dbapi_connection
    if not raw.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
