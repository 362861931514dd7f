"""How the command line words a failure of the machine rather than of the input: the database held by
another process, a full file system. Each gives one message naming the file (and, for a full disk, the
file system and its free space), never a traceback; :class:`agent.cli.app.CliError` prints it."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from agent.store.db import StoreError, busy_timeout

__all__ = ["describe", "no_space"]

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NEARLY_FULL = 1 << 20  # bytes: an SQLite I/O error on a file system with less free is a full disk


def _database_file(db_url: str | None) -> Path | None:
    if not db_url:
        return None
    try:
        url = make_url(db_url)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).expanduser().resolve()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _file_system(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """The mount point holding ``path`` (or its nearest existing folder) and its (free, total) bytes."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    mount = existing.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        usage = shutil.disk_usage(mount)
        return mount, (usage.free, usage.total)
    except OSError:
        return mount, None


def no_space(path: Path) -> str:
    """The message for a full file system under ``path``: which file system, how much is free."""
    mount, usage = _file_system(path)
    space = f"{_size(usage[0])} free of {_size(usage[1])}" if usage is not None else "free space unknown"
    return (f"no space left on the file system of {path}: {mount} has {space}; free some space and run "
            "again (nothing recorded before this point is lost)")


def _locked(path: Path | None) -> str:
    where = str(path) if path is not None else "the database"
    holder = f"; `fuser {path}` names the holder" if path is not None else ""
    try:
        waited = f"waited {busy_timeout():g} s for its write lock"
    except StoreError:
        waited = "waited for its write lock"
    return f"the database is locked by another process: {where} ({waited}{holder}); try again once it is done"


def describe(exc: BaseException, db_url: str | None) -> str | None:
    """The message for ``exc`` (or the error it was raised from) when the database is locked or a
    file system is full; None for every other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            if current.filename:
                return no_space(Path(os.fsdecode(current.filename)))
            return no_space(_database_file(db_url) or Path.cwd())
        if isinstance(current, OperationalError):
            name = getattr(current.orig, "sqlite_errorname", "")
            text = str(current.orig)
            if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "database is locked" in text:
                return _locked(_database_file(db_url))
            path = _database_file(db_url) or Path.cwd()
            if name == "SQLITE_FULL" or "database or disk is full" in text:
                return no_space(path)
            if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "disk I/O error" in text:
                # SQLite cannot grow its shared-memory or journal file when the disk is full: it says "I/O"
                _, usage = _file_system(path)
                if usage is not None and usage[0] < _NEARLY_FULL:
                    return no_space(path)
                return f"the database {path} cannot be read or written: {text}"
        current = current.__cause__ or current.__context__
    return None
