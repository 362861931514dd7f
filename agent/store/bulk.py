"""Writing many rows at once, the same way on SQLite and PostgreSQL: ``INSERT``, ``INSERT ... ON CONFLICT``
(skip or update the rows whose key exists already) in the database's dialect, matching a column against a
long list of keys bound as one parameter (:func:`in_keys`), and taking the write lock before reading what a
write depends on. Which dialect's construct is used for these is decided here only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

import msgspec
from sqlalchemy import ARRAY, JSON, Boolean, ColumnElement, DateTime, Row, String, Table, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType
from sqlalchemy.types import TypeDecorator, TypeEngine

from agent.store.db import StoreError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["begin_write", "execute_many", "in_keys", "insert_ignore", "table_of", "write_rows"]


def table_of(model: type[Any]) -> Table:
    """The table of a mapped class."""
    return cast(Table, model.__table__)


def _insert(dialect: str, table: Table) -> Any:
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
    if returning:
        stmt = _statement(session.get_bind().dialect, table, tuple(key), tuple(update))
        stmt = stmt.returning(*(table.c[c] for c in returning), sort_by_parameter_order=ordered)
        return list(session.execute(stmt, list(rows)))
    if _executemany(session, table, rows, key, update) is None:
        session.execute(_statement(session.get_bind().dialect, table, tuple(key), tuple(update)), list(rows))
    return []


def _statement(dialect: Any, table: Table, key: tuple[str, ...], update: tuple[str, ...]) -> Any:
    stmt = _insert(dialect.name, table)
    if key and update:
        return stmt.on_conflict_do_update(index_elements=list(key), set_={c: stmt.excluded[c] for c in update})
    if key:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    return stmt


@lru_cache(maxsize=64)
def _compiled(dialect: Any, table: Table, columns: tuple[str, ...], key: tuple[str, ...],
              update: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[Any, ...]] | None:
    """The SQL text of a bulk statement for rows with ``columns``, its parameters' names in order and their
    types; None when it needs a parameter the rows do not give (a column default computed in Python)."""
    compiled = _statement(dialect, table, key, update).compile(dialect=dialect, column_keys=list(columns))
    names = compiled.positiontup
    if names is None or not set(names) <= set(columns):
        return None
    return compiled.string, tuple(names), tuple(compiled.binds[n].type for n in names)


def _executemany(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], key: Sequence[str],
                 update: Sequence[str]) -> int | None:
    """On SQLite, the statement (compiled once per table and columns) run with the driver's
    ``executemany`` over ``rows``, each value converted by its column type's own bind processor (the one
    SQLAlchemy would apply; a timestamp column's repeated values, such as the command's clock, are converted
    once); the number of rows it inserted or updated. None, and nothing done, when the statement needs more
    than the rows give, or off SQLite: the caller then lets SQLAlchemy run it (its "insertmanyvalues"
    batches are what PostgreSQL wants)."""
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite":
        return None
    prepared = _compiled(dialect, table, tuple(rows[0]), tuple(key), tuple(update))
    if prepared is None:
        return None
    sql, names, types_ = prepared
    # column by column (each column's values taken and converted by one C-level map), then zipped into rows
    columns = []
    for n, t in zip(names, types_, strict=True):
        values = map(itemgetter(n), rows)
        convert = _converter(t, dialect)
        columns.append(list(values if convert is None else map(convert, values)))
    return int(conn.exec_driver_sql(sql, list(zip(*columns, strict=True))).rowcount)


def execute_many(session: Session, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """``stmt`` (an ``UPDATE`` or ``INSERT`` whose varying values are bound by the keys of ``rows``, all
    rows with the same keys) run once per row in one statement. On SQLite it is compiled once and run with
    the driver's ``executemany``: each row's own values converted by their type's bind processor (the one
    SQLAlchemy applies), the values fixed in ``stmt`` (the command's clock, a status) converted once.
    Elsewhere SQLAlchemy runs it (its ``executemany``)."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite":
        session.execute(stmt, list(rows))
        return
    compiled = stmt.compile(dialect=dialect, column_keys=list(rows[0]))
    varying = set(rows[0])
    fixed: dict[str, Any] = {}
    for name, value in compiled.construct_params(rows[0]).items():
        if name not in varying:
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            fixed[name] = process(value) if process is not None else value
    columns: list[Any] = []  # column by column, as in _executemany, then zipped into rows
    for name in compiled.positiontup or ():
        if name in fixed:
            columns.append(repeat(fixed[name], len(rows)))
            continue
        values = map(itemgetter(name), rows)
        convert = _converter(compiled.binds[name].type, dialect)
        columns.append(values if convert is None else map(convert, values))
    params = list(zip(*columns, strict=True))
    conn.exec_driver_sql(compiled.string, params)


def _json_once(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON column's converter that serialises the common empty values (null, ``{}``) once."""
    none, empty = process(None), process({})

    def once(value: Any) -> Any:
        if value is None:
            return none
        if type(value) is dict and not value:
            return empty
        return process(value)

    return once


def _converter(type_: Any, dialect: Any) -> Callable[[Any], Any] | None:
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return None
    base = type_.impl_instance if isinstance(type_, TypeDecorator) else type_
    if isinstance(base, JSON):
        return _json_once(process)
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
        written = _executemany(session, table, rows, key, ())
        if written != len(rows):
            conn.exec_driver_sql("ROLLBACK TO arrears_insert_ignore")
        conn.exec_driver_sql("RELEASE arrears_insert_ignore")
        if written == len(rows):
            return list(map(_key_of(tuple(key)), rows))
    return write_rows(session, table, rows, key=key, returning=key)


def _key_of(key: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's ``key`` columns as a tuple (``itemgetter`` gives a bare value for one column)."""
    if len(key) == 1:
        only = key[0]
        return lambda r: (r[only],)
    return cast(Callable[[Mapping[str, Any]], tuple[Any, ...]], itemgetter(*key))


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


_JSON = msgspec.json.Encoder()


class _Keys(TypeDecorator[Sequence[Any]]):
    """A list of keys bound as one parameter: a JSON array on SQLite (read back by ``json_each``), an array on
    PostgreSQL."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(String))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        keys = list(value)
        return keys if dialect.name == "postgresql" else _JSON.encode(keys).decode()


class _InKeys(ColumnElement[bool]):
    """``column`` is one of the keys bound to ``name`` (see :func:`in_keys`)."""

    __visit_name__ = "arrears_in_keys"
    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a condition of its own, as a comparison is (not rendered ``... = 1``)
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 - declared so by SQLAlchemy
        ("column", InternalTraversal.dp_clauseelement), ("keys", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.keys = bindparam(name, type_=_Keys())


def in_keys(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN`` the list of text keys bound to ``name`` at execution, as one parameter whatever its
    length: the statement's SQL is the same for every list (compiled and cached once), unlike an expanding
    ``IN``, which renders a placeholder per key on every execution. On SQLite ``IN (SELECT value FROM
    json_each(:name))``, on PostgreSQL ``= ANY(:name)``."""
    return _InKeys(column, name)


@compiles(_InKeys)
def _in_keys_any(element: _InKeys, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} = ANY ({compiler.process(element.keys, **kw)})"


@compiles(_InKeys, "sqlite")
def _in_keys_sqlite(element: _InKeys, compiler: SQLCompiler, **kw: Any) -> str:
    return (f"{compiler.process(element.column, **kw)} IN "
            f"(SELECT value FROM json_each({compiler.process(element.keys, **kw)}))")
