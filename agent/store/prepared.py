"""Hot reads run on the DBAPI cursor: a Core SELECT compiled once per dialect, executed without SQLAlchemy's
per-call execution machinery.

SQLAlchemy builds an execution context, looks the statement up in its compiled cache, processes the
parameters and wraps the cursor in a result on every call: some 60 us a statement on a 2-core machine,
several times what SQLite takes to answer an indexed read (bench/README.md, http_api). The purchase gate
(its token and its account, every request) reads through :class:`Prepared` instead: the SQL text, the
parameter order and each column's result processor come from SQLAlchemy's own compilation and types, once;
a call binds the parameters, runs the cursor and passes each value through its column's processor, which
is what SQLAlchemy does with them. Errors are raised as SQLAlchemy's (:class:`sqlalchemy.exc.DBAPIError`).

It runs on the connection's DBAPI connection as it is: in the caller's transaction, or in the one the
driver opens by itself (PostgreSQL's drivers do; SQLite's opens none for a read), which SQLAlchemy does not
know of: giving the connection back to the pool ends it, and a caller that keeps its connection open ends
it with :func:`end_reads` (else it would stay idle in a transaction, holding its tables' locks).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.selectable import SelectBase

__all__ = ["Prepared", "end_reads"]


class Prepared:
    """``statement`` compiled for ``dialect``; :meth:`rows` runs it with the parameters named in it."""

    def __init__(self, statement: SelectBase, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.dialect = dialect
        self.sql = compiled.string
        self.defaults: dict[str, Any] = {  # the values bound in the statement itself (its LIMIT)
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        self.names: tuple[str, ...] | None = tuple(compiled.positiontup or ()) if compiled.positional else None
        self.binds: list[tuple[str, Callable[[Any], Any]]] = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.binds.append((name, process))
        self.columns = list(statement.selected_columns)
        self.processors: list[Callable[[Any], Any] | None] | None = None  # from the first cursor's description
        self.row: Callable[..., Any] = namedtuple("Row", [c.key for c in self.columns])  # type: ignore[misc]

    def _processors(self, description: Any) -> list[Callable[[Any], Any] | None]:
        """Each column's result processor, given the type the driver reports for it (as SQLAlchemy does)."""
        dialect = self.dialect
        return [c.type.dialect_impl(dialect).result_processor(dialect, d[1])
                for c, d in zip(self.columns, description, strict=True)]

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> list[Any]:
        """The rows of the statement with ``params`` (named as its bind parameters), as named tuples."""
        values = {**self.defaults, **params}
        for name, process in self.binds:
            values[name] = process(values[name])
        args: Any = values if self.names is None else tuple(values[n] for n in self.names)
        try:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(self.sql, args)
                fetched = cursor.fetchall()
                processors = self.processors
                if processors is None:
                    processors = self.processors = self._processors(cursor.description)
            finally:
                cursor.close()
        except self.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(self.sql, args, exc, self.dialect.loaded_dbapi.Error) from exc
        row = self.row
        return [row(*[v if p is None or v is None else p(v) for v, p in zip(r, processors, strict=True)])
                for r in fetched]


def end_reads(connection: Connection) -> None:
    """End the transaction of ``connection`` (its reads done): SQLAlchemy's, and the one the driver may have
    begun for :meth:`Prepared.rows` by itself."""
    connection.rollback()
    connection.connection.rollback()
