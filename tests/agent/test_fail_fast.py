"""Failing fast through the real ``arrears`` command: an invalid inventory, a database another process
holds locked, a full file system under the database. Each gives one located message and a non-zero exit
within the busy timeout plus a few seconds, never a traceback, and leaves the database intact."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.agent.fleet import Arrears, LocalFleet, build_fleet, debtor

DEBT_AT = datetime(2026, 3, 1, 8, tzinfo=UTC)
T = "2026-03-02T10:00:00+00:00"
BUSY = 2  # seconds (ARREARS_BUSY_TIMEOUT): the real SQLite busy timeout, shortened for the test
SLACK = 10  # seconds on top of it: the command's start-up on a busy machine


@pytest.fixture
def fleet(tmp_path: Path) -> LocalFleet:
    accounts = [debtor(f"acct-{i:02d}", f"user{i:02d}") for i in range(4)]
    return build_fleet(tmp_path / "cfg", accounts, notices={"spool_dir": "outbox"}, debt_at=DEBT_AT)


def _run(arrears: Arrears, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                                     float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")}
    started = time.monotonic()
    result = subprocess.run(arrears.argv(*args), capture_output=True, text=True, timeout=120, check=False,
                            stdin=subprocess.DEVNULL, env={**environ, **(env or {})})
    return result, time.monotonic() - started


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one message (on stderr) and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return result.stderr


def _dump(db: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {t: sorted(map(tuple, con.execute(f'select * from "{t}"')), key=repr) for t in tables}
    finally:
        con.close()


def _integrity(db: Path) -> str:
    con = sqlite3.connect(db, timeout=30)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


# --- an invalid inventory ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("run", "--at", T),
    ("reconcile", "--at", T),
    ("suspend", "acct-00", "--reason", "abuse", "--at", T),
    ("payment", "acct-00", "5.00", "--now", "--at", T),
], ids=["run", "reconcile", "suspend", "payment-now"])
def test_an_invalid_inventory_stops_the_command_before_it_changes_anything(
        fleet: LocalFleet, args: tuple[str, ...]) -> None:
    inventory = fleet.folder / "inventory.yaml"
    lines = inventory.read_text().splitlines()
    lineno = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("parallel:"))
    lines[lineno - 1] = lines[lineno - 1].replace(lines[lineno - 1].split(":")[1], " lots")
    inventory.write_text("\n".join(lines) + "\n")
    before = _dump(fleet.folder / "arrears.db")

    result, elapsed = _run(fleet.arrears, *args)

    message = _one_error(result)
    assert result.returncode == 2
    assert f"{inventory}:{lineno}: defaults.parallel:" in message
    assert _dump(fleet.folder / "arrears.db") == before  # nothing claimed, queued or recorded
    assert fleet.gate.calls == 0 and all(fleet.host_untouched(a) for a in fleet.accounts)
    assert elapsed < SLACK


# --- the database locked by another process ------------------------------------------------------


def test_a_database_locked_by_another_process_gives_one_error_after_one_timeout(fleet: LocalFleet) -> None:
    db = fleet.folder / "arrears.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock, held for the whole command
        result, elapsed = _run(fleet.arrears, "run", "--at", T, env={"ARREARS_BUSY_TIMEOUT": str(BUSY)})
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    message = _one_error(result)
    assert f"error: the database is locked by another process: {db.resolve()} (waited {BUSY} s" in message
    assert len(message.strip().splitlines()) == 1
    # it waited the busy timeout once, not once per due account (4 here)
    assert BUSY <= elapsed < BUSY + SLACK, elapsed
    assert fleet.arrears.job_statuses() == {}
    assert _integrity(db) == "ok"
    # once the other process is done, the same run goes through
    assert "4 accounts due" in fleet.arrears.ok("run", "--at", T)


# --- a full file system under the database -------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, mounted for the test (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    """Fill the file system until only ``leave`` bytes are free."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with filler.open("wb") as out:
        left = free - leave
        chunk = b"\0" * 65536
        try:
            while left > 0:
                n = out.write(chunk[:min(len(chunk), left)])
                left -= n
            out.flush()
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("leave_kib", [0, 48], ids=["no-space", "space-for-a-few-pages"])
def test_a_full_disk_under_the_database_names_the_file_system_and_corrupts_nothing(
        fleet: LocalFleet, small_fs: Path, leave_kib: int) -> None:
    folder = small_fs / "cfg"
    folder.mkdir()
    for name in ("policy.yaml", "inventory.yaml", "arrears.db"):
        shutil.copy2(fleet.folder / name, folder / name)
    arrears = Arrears(folder)
    filler = _fill(small_fs, leave_kib * 1024)

    result, elapsed = _run(arrears, "run", "--at", T)

    message = _one_error(result)
    assert f"error: no space left on the file system of {folder / 'arrears.db'}: {small_fs} has " in message
    assert " free of 4.0 MiB" in message
    assert elapsed < SLACK
    filler.unlink()
    assert _integrity(folder / "arrears.db") == "ok"
    # with space again, the run finishes the work
    arrears.ok("run", "--at", T)
    assert arrears.job_statuses().keys() <= {"done", "pending"}


def test_a_busy_timeout_that_is_not_a_number_of_seconds_is_refused(tmp_path: Path) -> None:
    result, _ = _run(Arrears(tmp_path), "status", env={"ARREARS_BUSY_TIMEOUT": "soon"})
    message = _one_error(result)
    assert "ARREARS_BUSY_TIMEOUT: 'soon' is not a number of seconds" in message
