"""The instance lock that a run, the daemon and the demo hold while they work.

- SQLite: one agent per database: an exclusive ``flock`` on a file beside the database, holding the
  holder's pid and role. The holder knows that no other agent is working on the database, so every job
  still marked claimed belongs to a run that died: it is taken over at once instead of after its lease.
- PostgreSQL: any number of agents share the database (:mod:`agent.claims` makes each piece of work
  happen once), one per agent name (:mod:`agent.agents`): a session-level advisory lock on the name,
  taken on a connection of its own and held for the agent's lifetime. The connection's
  ``application_name`` names the holder (role, pid, machine), so an agent refused its name can say who
  holds it; and an agent that got the name knows its predecessor of that name is gone.
A running daemon on SQLite can be asked to run a tick now (``SIGUSR1``), e.g. after ``payment --now``;
any other holder (``run``, ``demo``, another ``payment --now``, an agent on another machine) is never
signalled: what was recorded takes effect on its next tick.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import zlib
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy.engine import make_url

__all__ = ["DAEMON", "AgentLock", "AlreadyRunning", "DatabaseLock", "InstanceLock", "any_agent", "instance_lock",
           "lock_path_for", "wake_holder"]


DAEMON = "daemon"


class AlreadyRunning(Exception):
    def __init__(self, where: str, holder: int | None, role: str | None = None, who: str | None = None) -> None:
        who = who or (f"{'the daemon, ' if role == DAEMON else ''}pid {holder}" if holder else "another process")
        super().__init__(f"an arrears agent ({who}) is already working on this database ({where}); "
                         "stop it first, or give this one another --db")
        self.where = where
        self.holder = holder
        self.role = role


class AgentLock(Protocol):
    @property
    def sole(self) -> bool:
        """The holder is the only agent working on the database."""

    def acquire(self) -> AgentLock: ...
    def release(self) -> None: ...
    def verify(self) -> None:
        """Raise unless the lock is still held (a long-running holder checks before each tick)."""


def lock_path_for(db_url: str) -> Path | None:
    """The lock file of an SQLite database; None for another database."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve().with_name(Path(url.database).name + ".lock")


def instance_lock(db_url: str, role: str = "run", name: str = "") -> AgentLock | None:
    """The instance lock of the database at ``db_url`` for the agent ``name`` (not yet acquired); None for
    an in-memory database."""
    path = lock_path_for(db_url)
    if path is not None:
        return InstanceLock(path, role)
    if make_url(db_url).get_backend_name() == "postgresql":
        return DatabaseLock(db_url, role, name)
    return None


def _holder(path: Path) -> tuple[int | None, str | None]:
    """The pid and role written in the lock file (``PID ROLE``)."""
    try:
        words = path.read_text().split()
    except OSError:
        return None, None
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, (words[1] if len(words) > 1 else None)


class InstanceLock:
    """An exclusive, non-blocking ``flock`` on ``path``; released when the process ends, however it ends.
    ``role`` (``run``, ``daemon``) is written beside the pid: only a daemon is ever woken by a signal."""

    sole = True

    def __init__(self, path: Path, role: str = "run") -> None:
        self.path = path
        self.role = role
        self._fh: IO[str] | None = None

    def acquire(self) -> InstanceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise AlreadyRunning(f"lock {self.path}", *_holder(self.path)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {self.role}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()  # no stale pid for the next prober to signal
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def verify(self) -> None:
        if self._fh is None:
            raise RuntimeError(f"the instance lock {self.path} is not held")

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


#: The advisory locks' first key: "arre" as a 32-bit number; the second is the agent name's CRC-32.
_PG_CLASS = 0x61727265
_APP_PREFIX = "arrears "


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class DatabaseLock:
    """A PostgreSQL session-level advisory lock on the agent name ``name``, on a connection of its own,
    held until :meth:`release` or until the process (and so its connection) ends, however it ends."""

    sole = False

    def __init__(self, db_url: str, role: str = "run", name: str = "") -> None:
        self.db_url = db_url
        self.role = role
        self.name = name
        self._keys = (_PG_CLASS, _name_key(name))
        self._engine: Any = None
        self._conn: Any = None

    def acquire(self) -> DatabaseLock:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        app = f"{_APP_PREFIX}{self.role} pid {os.getpid()} on {socket.gethostname()}"[:63]
        engine = create_engine(self.db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                               connect_args={"application_name": app})
        conn = engine.connect()
        a, b = self._keys
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": a, "b": b}).scalar()
            if not got:
                holders = _holders(conn, b)
                holder = holders[0] if holders else None
                raise AlreadyRunning(f"PostgreSQL advisory lock {a},{b} of the agent name {self.name!r}", None,
                                     _role_of(holder[0]) if holder else None, _who(holder))
        except BaseException:
            conn.close()
            engine.dispose()
            raise
        self._engine, self._conn = engine, conn
        return self

    def release(self) -> None:
        from sqlalchemy import text

        if self._conn is not None:
            try:
                # unlocked before the session ends: the server lets go of a closed session's locks only as its
                # backend exits, after the close returned, and a new lock taken at once would find it held
                with contextlib.suppress(Exception):  # a lost session holds nothing any more
                    self._conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                                       {"a": self._keys[0], "b": self._keys[1]})
                self._conn.close()
            finally:
                self._engine.dispose()
                self._conn = self._engine = None

    def verify(self) -> None:
        """The lock lives as long as its database session: when the session was lost (the server restarted
        or failed over), take the lock again before any more work, or raise (:class:`AlreadyRunning` when
        another agent took it meanwhile)."""
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT 1"))
            return
        except Exception:
            self.release()
        self.acquire()

    def __enter__(self) -> DatabaseLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holders(conn: Any, key: int | None = None) -> list[Any]:
    """(application_name, backend pid) of the sessions holding an agent's lock on this database (the
    agent name's lock ``key``, or any)."""
    from sqlalchemy import text

    return list(conn.execute(text(
        "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a "
        + ("AND l.objid = :b " if key is not None else "")
        + "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) ORDER BY a.pid"), {"a": _PG_CLASS, "b": key}))


def any_agent(db_url: str) -> tuple[str | None, str] | None:
    """(role, who) of an agent working on the PostgreSQL database at ``db_url``, or None."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(db_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            holders = _holders(conn)
    finally:
        engine.dispose()
    return (_role_of(holders[0][0]), _who(holders[0])) if holders else None


def _role_of(application_name: str | None) -> str | None:
    words = (application_name or "").split()
    return words[1] if len(words) > 1 and application_name and application_name.startswith(_APP_PREFIX) else None


def _who(holder: Any) -> str:
    if holder is None:
        return "another session"
    name, backend = holder
    return f"{name or 'unnamed client'}, database backend pid {backend}"


def wake_holder(db_url: str) -> int | None:
    """Ask the daemon holding the database's lock to run a tick now; returns its pid, or None when nobody
    holds it.

    Raises :class:`AlreadyRunning` when the lock is held by one that cannot be woken: another command (not
    a daemon; SIGUSR1 would end it) or, on PostgreSQL, any agent (it may run on another machine). What was
    recorded takes effect on that agent's next tick.
    """
    path = lock_path_for(db_url)
    if path is None and make_url(db_url).get_backend_name() == "postgresql":
        working = any_agent(db_url)
        if working is not None:
            raise AlreadyRunning("PostgreSQL", None, *working)
        return None
    probe = instance_lock(db_url, role="probe")
    if probe is None:
        return None
    try:
        probe.acquire()
    except AlreadyRunning as busy:
        if path is None or not busy.holder or busy.role != DAEMON:
            raise
        os.kill(busy.holder, signal.SIGUSR1)
        return busy.holder
    probe.release()
    return None
