"""Engines and sessions from a database URL, and the migrations that bring a database to the current schema.

Nothing happens at import time: :func:`open_store` creates the engine, sets the SQLite pragmas (WAL,
foreign keys, a busy timeout) on every connection, reads the database's schema revision with one SELECT
and runs the Alembic migrations only when it is not the newest (:data:`agent.store.revision.HEAD`).

The busy timeout is how long a write waits for another process's write lock before it fails with
"database is locked": 30 seconds, or ``ARREARS_BUSY_TIMEOUT`` seconds (the environment variable).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from agent.store.revision import HEAD

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["BUSY_TIMEOUT", "MIGRATIONS", "Store", "StoreError", "busy_timeout", "current_revision", "head_revision",
           "make_engine", "migrate", "open_store"]

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's lock (ARREARS_BUSY_TIMEOUT)


class StoreError(Exception):
    """The database cannot be opened or migrated."""


def busy_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds an SQLite write waits for another process's lock: ``ARREARS_BUSY_TIMEOUT``, else 30."""
    raw = (os.environ if environ is None else environ).get("ARREARS_BUSY_TIMEOUT", "").strip()
    if not raw:
        return BUSY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise StoreError(f"ARREARS_BUSY_TIMEOUT: {raw!r} is not a number of seconds between 0 and 86400")
    return value


def _sqlite_pragmas(timeout: float) -> Any:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return on_connect


_JSON_CHUNKS = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def json_text(value: Any) -> str:
    """``json.dumps(value)``, the same text, with the C encoder made once instead of per value (a JSON column's
    every value goes through here: a run of 10,000 notices writes about 110,000). It does not look for
    cycles, which a column's value never has (one would still fail, with a RecursionError)."""
    if isinstance(value, str):
        return json.encoder.encode_basestring_ascii(value)
    return "".join(_JSON_CHUNKS(value, 0))


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; for SQLite the file's folder must exist and the pragmas are set per connection."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise StoreError(f"database folder {folder} does not exist")
        timeout = busy_timeout()
        engine = create_engine(url, echo=echo, connect_args={"timeout": timeout}, json_serializer=json_text)
        event.listen(engine, "connect", _sqlite_pragmas(timeout))
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, json_serializer=json_text)


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, with one SELECT; None for a database without one (a new one)."""
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):
            return None  # no alembic_version table: nothing migrated yet


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (idempotent)."""
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


class Store:
    """An open database: its engine, and a session factory made when first asked for (a read on Core
    alone, such as the plan's, never loads the ORM)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for reads: whatever its transaction did is rolled back at the end."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self.sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, upgrade: bool = True, echo: bool = False) -> Store:
    """Open the database at ``url``, migrating it to the newest schema when needed (``upgrade``)."""
    engine = make_engine(url, echo=echo)
    try:
        if upgrade and current_revision(engine) != HEAD:
            migrate(engine)  # only now is Alembic loaded
    except StoreError:
        engine.dispose()
        raise
    except Exception as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {make_url(url).render_as_string()}: {exc}") from exc
    return Store(engine)
