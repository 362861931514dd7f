"""``arrears daemon`` as operators run it: real processes on a local fleet (tests/agent/fleet.py).

SIGTERM while a host batch is in flight lets the batch finish and be recorded, then the daemon exits 0
with nothing half-applied; a second agent on the same database is refused and writes nothing; a payment
recorded with ``--now`` wakes the daemon (SIGUSR1), which resumes the account long before its next tick.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.agent.fleet import LocalFleet, build_fleet, debtor
from tests.servers.base import free_port, wait_for


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _fleet(folder: Path, *names: str) -> LocalFleet:
    accounts = [debtor(f"{name}-{n:02d}", name) for n, name in enumerate(names, start=1)]
    return build_fleet(folder, accounts, notices={"spool_dir": "outbox"},
                       debt_at=datetime.now(UTC) - timedelta(days=2))


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _up(proc: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """/healthz answers; a daemon that exited fails the test with its log."""
    if proc.poll() is not None:
        raise AssertionError(f"the daemon exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
    return _get(port, "/healthz")[0] == 200


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


class Running:
    """A daemon started once for the module, with a long interval: only a wake-up can make it tick."""

    def __init__(self, fleet: LocalFleet, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.fleet = fleet
        self.proc = proc
        self.port = port
        self.log = log


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("daemon")
    fleet = _fleet(folder / "cfg", "acme", "bravo")
    port = free_port()
    log = folder / "daemon.log"
    proc = fleet.arrears.start("daemon", "--interval", "3600", "--metrics-port", str(port), log=log)
    try:
        # the first tick runs at start: both accounts are suspended by it
        wait_for(lambda: _up(proc, port, log) and all(fleet.arrears.show(a.id)["state"] == "suspended"
                                                     for a in fleet.accounts),
                 timeout=60, what="the daemon's first tick to suspend both accounts", log=log)
        wait_for(lambda: _get(port, "/healthz")[0] == 200 and "last_tick" in _get(port, "/healthz")[1],
                 timeout=30, what="the daemon's health after its first tick", log=log)
        yield Running(fleet, proc, port, log)
    finally:
        _stop(proc)


def test_sigterm_during_a_tick_finishes_the_host_batch_and_exits_cleanly(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "cfg", "acme")
    acme = fleet.accounts[0]
    arrears = fleet.arrears
    port = free_port()
    log = tmp_path / "daemon.log"
    fleet.gate.close()
    proc = arrears.start("daemon", "--interval", "1", "--metrics-port", str(port), log=log)
    try:
        wait_for(lambda: _up(proc, port, log), timeout=30, what="/healthz", log=log)
        fleet.gate.wait_calls(1)  # the tick's web1 batch is in flight (nginx reload waits on the gate)
        assert arrears.query("select count(*) from jobs where status = 'claimed' and kind = 'host'") == [(3,)]
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: any(e.get("msg") == "stopping" for e in _log_lines(log)), timeout=30,
                 what="the daemon to log the signal", log=log)
        assert proc.poll() is None  # it waits for the batch in flight
        fleet.gate.open()
        assert proc.wait(timeout=30) == 0
    finally:
        fleet.gate.open()
        _stop(proc)
    events = _log_lines(log)
    assert [e["signal"] for e in events if e.get("msg") == "stopping"] == ["SIGTERM"]
    assert [e["ticks"] for e in events if e.get("msg") == "stopped"] == [1]
    assert fleet.gate.calls == 1  # no second tick started after the signal
    # nothing half-applied: every job done or waiting, none claimed; the batch in flight was recorded
    statuses = arrears.job_statuses()
    assert set(statuses) <= {"done", "pending"} and statuses["done"] >= 3, statuses
    info = arrears.show(acme.id)
    assert info["state"] == "suspended" and [s["stage"] for s in info["stages_taken"]] == ["suspension"]
    assert fleet.host_suspended(acme)
    # the notice the suspension queued was not claimed after the signal; the next run sends it once
    assert not list((fleet.folder / "outbox").glob("*.eml"))
    arrears.ok("run")
    assert [p.name for p in (fleet.folder / "outbox").glob("*.eml")] == [f"{acme.id}:1:suspension.eml"]
    assert arrears.job_statuses() == {"done": sum(statuses.values())}


def test_health_and_metrics_of_a_running_daemon(running: Running) -> None:
    status, body = _get(running.port, "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["pid"] == running.proc.pid
    assert health["last_tick"]["taken"] == 2
    status, text = _get(running.port, "/metrics")
    assert status == 200
    me = socket.gethostname()  # a daemon's name unless --name says otherwise; every metric carries it
    assert f'arrears_ticks_total{{agent="{me}",outcome="ok"}} 1.0' in text
    assert f'arrears_measures_total{{action="suspend",agent="{me}"}} 2.0' in text
    assert _get(running.port, "/nothing")[0] == 404


def _database_dump(fleet: LocalFleet) -> list[tuple[Any, ...]]:
    tables = [t for (t,) in fleet.arrears.query("select name from sqlite_master where type = 'table' order by name")]
    return [(t, *row) for t in tables for row in fleet.arrears.query(f"select * from {t}")]


@pytest.mark.parametrize("command", [["daemon", "--interval", "1"], ["run"]], ids=["daemon", "run"])
def test_a_second_agent_on_the_same_database_is_refused(running: Running, command: list[str]) -> None:
    fleet = running.fleet
    before = _database_dump(fleet)
    lock = fleet.folder / "arrears.db.lock"
    result = fleet.arrears.invoke(*command, timeout=60)
    assert result.returncode != 0
    assert f"pid {running.proc.pid}" in result.stderr and "already working on this database" in result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert _database_dump(fleet) == before
    assert lock.read_text().split() == [str(running.proc.pid), "daemon"]
    assert running.proc.poll() is None


def test_a_payment_with_now_wakes_the_daemon_which_resumes_the_account(running: Running) -> None:
    fleet = running.fleet
    acme, bravo = fleet.accounts
    assert fleet.host_suspended(acme)
    out = fleet.arrears.json("payment", acme.id, "50.00", "--method", "card", "--now")
    assert out["applied"]["daemon"] == running.proc.pid
    # the interval is an hour: only the wake-up can run the tick that resumes the account
    wait_for(lambda: fleet.arrears.show(acme.id)["state"] == "active", timeout=60,
             what="the daemon to resume the account after the payment", log=running.log)
    info = fleet.arrears.show(acme.id)
    assert info["holds"] == [] and info["jobs"] == {} and info["episode"] is None
    assert fleet.host_untouched(acme)
    assert fleet.arrears.show(bravo.id)["state"] == "suspended" and fleet.host_suspended(bravo)
    wait_for(lambda: len([e for e in _log_lines(running.log) if e.get("msg") == "tick"]) == 2, timeout=30,
             what="the woken tick to be logged", log=running.log)
    assert running.proc.poll() is None
    _, text = _get(running.port, "/metrics")
    me = socket.gethostname()
    assert f'arrears_measures_total{{action="resume",agent="{me}"}} 1.0' in text
    assert f'arrears_pending_jobs{{agent="{me}"}} 0.0' in text


def test_a_payment_with_now_never_signals_a_run_that_holds_the_database(tmp_path: Path) -> None:
    """Only a daemon is woken: SIGUSR1 would end an `arrears run` in the middle of its host batch."""
    fleet = _fleet(tmp_path / "cfg", "acme")
    acme = fleet.accounts[0]
    fleet.gate.close()
    log = tmp_path / "run.log"
    run = fleet.arrears.start("run", log=log)
    try:
        fleet.gate.wait_calls(1)
        out = fleet.arrears.json("payment", acme.id, "50.00", "--method", "card", "--now")
        assert out["applied"]["busy"] == run.pid and "takes effect on the next run" in out["applied"]["message"]
        assert run.poll() is None
        fleet.gate.open()
        assert run.wait(timeout=60) == 0, log.read_text()
    finally:
        fleet.gate.open()
        _stop(run)
    assert fleet.arrears.show(acme.id)["state"] == "suspended"  # what the run decided before the payment
    fleet.arrears.ok("run")
    info = fleet.arrears.show(acme.id)
    assert info["state"] == "active" and info["jobs"] == {} and fleet.host_untouched(acme)


def test_a_broken_template_stops_the_daemon_before_it_starts(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "fleet", "tango")
    templates = fleet.folder / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "pre_suspension.txt.j2").write_text(
        "Subject: pay now\nDear {{ username }},\nyou owe {{ balanse }}.\n")
    before = fleet.arrears.job_statuses()
    done = fleet.arrears.invoke("daemon", "--interval", "3600", timeout=60)
    assert done.returncode != 0
    assert "pre_suspension.txt.j2:3" in done.stderr and "balanse" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert fleet.arrears.job_statuses() == before  # nothing ran
