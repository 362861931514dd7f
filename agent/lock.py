"""One agent per SQLite database: an exclusive lock file beside it, holding the holder's pid and role.

The holder of the lock knows that no other agent is working on the database, so every job still
marked claimed belongs to a run that died: it is taken over at once instead of after its lease.
A running daemon can be asked to run a tick now (``SIGUSR1``), e.g. after ``payment --now``; any other
holder (``run``, ``demo``, another ``payment --now``) is never signalled: SIGUSR1 would end it.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

__all__ = ["DAEMON", "AlreadyRunning", "InstanceLock", "lock_path_for", "wake_holder"]


DAEMON = "daemon"


class AlreadyRunning(Exception):
    def __init__(self, path: Path, holder: int | None, role: str | None = None) -> None:
        who = f"{'the daemon, ' if role == DAEMON else ''}pid {holder}" if holder else "another process"
        super().__init__(f"an arrears agent ({who}) is already working on this database (lock {path}); "
                         "stop it first, or give this one another --db")
        self.path = path
        self.holder = holder
        self.role = role


def lock_path_for(db_url: str) -> Path | None:
    """The lock file of an SQLite database; None for a server database (several agents may share it)."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve().with_name(Path(url.database).name + ".lock")


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
            raise AlreadyRunning(self.path, *_holder(self.path)) from None
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

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def wake_holder(path: Path) -> int | None:
    """Ask the daemon holding ``path`` to run a tick now; returns its pid, or None when nobody holds it.

    Raises :class:`AlreadyRunning` when another command (not a daemon) holds it: that one is not
    signalled (SIGUSR1 would end it), and what was recorded takes effect on the next run.
    """
    probe = InstanceLock(path, role="probe")
    try:
        probe.acquire()
    except AlreadyRunning as busy:
        if not busy.holder or busy.role != DAEMON:
            raise
        os.kill(busy.holder, signal.SIGUSR1)
        return busy.holder
    probe.release()
    return None
