"""Writing many rows at once, the same way on SQLite and PostgreSQL: ``INSERT``, ``INSERT ... ON CONFLICT``
(skip or update the rows whose key exists already) in the database's dialect, and taking the write lock
before reading what a write depends on. Which dialect's ``insert`` construct is used is decided here only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import DateTime, Row, Table
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

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
    if _executemany(session, stmt, rows) is None:
        session.execute(stmt, list(rows))
    return []


def _executemany(session: Session, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> int | None:
    """On SQLite, ``stmt`` compiled once and run with the driver's ``executemany`` over ``rows``, each value
    converted by its column type's own bind processor (the one SQLAlchemy would apply; a timestamp column's
    repeated values, such as the command's clock, are converted once); the number of rows it inserted or
    updated. None, and nothing done, when the statement needs more than the rows give (a column default
    computed in Python), or off SQLite: the caller then lets SQLAlchemy run it (its "insertmanyvalues"
    batches are what PostgreSQL wants)."""
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite":
        return None
    columns = list(rows[0])
    compiled = stmt.compile(dialect=dialect, column_keys=columns)
    names = compiled.positiontup
    if names is None or not set(names) <= set(columns):
        return None
    convert = [_converter(compiled.binds[n].type, dialect) for n in names]
    params = [tuple([c(r[n]) if c is not None else r[n] for n, c in zip(names, convert, strict=True)])
              for r in rows]
    return int(conn.exec_driver_sql(compiled.string, params).rowcount)


def _converter(type_: Any, dialect: Any) -> Callable[[Any], Any] | None:
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return None
    base = type_.impl_instance if isinstance(type_, TypeDecorator) else type_
    if not isinstance(base, DateTime):
        return cast(Callable[[Any], Any], process)
    done: dict[datetime, Any] = {}  # equal aware instants convert to the same stored value

    def once(value: Any) -> Any:
        if type(value) is not datetime:
            return process(value)
        try:
            return done[value]
        except KeyError:
            out = done[value] = process(value)
            return out

    return once


def insert_ignore(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                  key: Sequence[str]) -> Sequence[tuple[Any, ...]]:
    """Insert ``rows`` into ``table``, skipping each row whose unique ``key`` columns exist already (in
    the table, or earlier in ``rows``); returns the ``key`` columns of the rows inserted.

    On SQLite the rows go in with one ``executemany`` inside a savepoint first: when every row was
    inserted (an import's first run, new jobs) that is the answer; when some were skipped, the savepoint is
    rolled back and the rows are inserted again with ``RETURNING`` to learn which."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "sqlite":
        begin_write(session)  # the driver does not begin a transaction for a savepoint: its release would commit
        conn = session.connection()
        conn.exec_driver_sql("SAVEPOINT arrears_insert_ignore")  # one name: one cached statement per chunk
        stmt = _insert(session, table).on_conflict_do_nothing(index_elements=list(key))
        written = _executemany(session, stmt, rows)
        if written != len(rows):
            conn.exec_driver_sql("ROLLBACK TO arrears_insert_ignore")
        conn.exec_driver_sql("RELEASE arrears_insert_ignore")
        if written == len(rows):
            return [tuple(r[c] for c in key) for r in rows]
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
