"""Writing many rows at once, the same way on SQLite and PostgreSQL: inserts that skip rows whose key
exists already (``INSERT ... ON CONFLICT DO NOTHING``) and taking the write lock before reading what a
write depends on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, Table
from sqlalchemy.orm import Session

from agent.store.db import StoreError

__all__ = ["begin_write", "insert_ignore"]


def insert_ignore(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                  key: Sequence[str]) -> list[Row[Any]]:
    """Insert ``rows`` into ``table``, skipping each row whose unique ``key`` columns exist already (in
    the table, or earlier in ``rows``); returns the ``key`` columns of the rows inserted. One statement
    (a few for thousands of rows), whatever the number of rows."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt: Any = sqlite_insert(table).on_conflict_do_nothing(index_elements=list(key))
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table).on_conflict_do_nothing(index_elements=list(key))
    else:
        raise StoreError(f"database {dialect!r} is not supported (SQLite or PostgreSQL)")
    return list(session.execute(stmt.returning(*(table.c[k] for k in key)), list(rows)))


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
