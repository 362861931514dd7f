"""Killing the agent (SIGKILL) in the middle of its work, then running it again, finishes the work.

The agent runs as the real ``arrears`` command on a local fleet (tests/agent/fleet.py); notices go to a
real SMTP server on loopback. The kill lands exactly where it hurts: while a host batch is in flight (its
jobs claimed, nginx's reload waiting on a gate), or while the mail server holds a notice's DATA (each notice is
recorded as sent as soon as the server accepted it, so only the one in flight can go out twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.agent.fleet import LocalFleet, build_fleet, debtor
from tests.servers.base import wait_for
from tests.servers.smtp import SmtpServer

DEBT_AT = datetime(2026, 3, 1, 8, tzinfo=UTC)
T = "2026-03-02T10:00:00+00:00"
LATER = "2026-03-02T11:00:00+00:00"


class HeldData:
    """Wraps the SMTP server's handler: once ``allow`` messages are accepted, the next message is queued
    for delivery but its ``250`` reply waits until ``release`` is set (the client waits for it)."""

    def __init__(self, inner: Any, server: SmtpServer) -> None:
        self.inner = inner
        self.server = server
        self.allow: int | None = None
        self.held = 0
        self.release = threading.Event()

    def reset(self) -> None:
        self.allow, self.held = None, 0
        self.release.clear()

    async def handle_EHLO(self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        result: list[str] = await self.inner.handle_EHLO(smtp, session, envelope, hostname, responses)
        return result  # PIPELINING offered: the next message's envelope waits behind the held one

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        result: str = await self.inner.handle_RCPT(smtp, session, envelope, address, rcpt_options)
        return result

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        hold = self.allow is not None and len(self.server.messages) >= self.allow
        result: str = await self.inner.handle_DATA(smtp, session, envelope)  # queued for delivery
        if hold:
            self.held += 1
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        return result


@pytest.fixture(autouse=True)
def one_agent_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run here is the same agent, restarted after its SIGKILL (as systemd restarts it): on
    PostgreSQL it takes its dead predecessor's claims over at once; another name would wait for the lease."""
    monkeypatch.setenv("ARREARS_AGENT", "crash-test")


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmtpServer, HeldData]]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp-held"))
    held = HeldData(server.controller.handler, server)
    server.controller.handler = held
    server.start()
    try:
        yield server, held
    finally:
        held.release.set()
        server.stop()


@pytest.fixture
def mail(smtp: tuple[SmtpServer, HeldData]) -> tuple[SmtpServer, HeldData]:
    server, held = smtp
    held.reset()
    server.reset()
    return server, held


def _fleet(folder: Path, db: str, server: SmtpServer, *names: str) -> LocalFleet:
    accounts = [debtor(f"{name}-{n:02d}", name) for n, name in enumerate(names, start=1)]
    return build_fleet(folder, accounts, debt_at=DEBT_AT, db=db,
                       notices={"smtp": {"host": server.host, "port": server.port, "timeout": 20}})


def _message_ids(server: SmtpServer) -> Counter[str]:
    with server.lock:
        return Counter(str(m.message["Message-ID"]) for m in server.messages)


def _killed(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the agent process alone (a child it started lives on, as after a real crash)."""
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_orphans(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the dead agent's orphaned host batch (its own session) has finished too."""
    wait_for(lambda: _group_gone(proc.pid), timeout=30, what="the orphaned host batch to end")


def _suspension_rows(fleet: LocalFleet, account: str) -> list[tuple[Any, ...]]:
    return fleet.arrears.query("select status, at from stages_taken where account = :account "
                               "and stage = 'suspension'", account=account)


def test_sigkill_while_a_host_batch_is_in_flight_then_a_run_finishes_the_work(
        tmp_path: Path, db_url: str, mail: tuple[SmtpServer, HeldData]) -> None:
    server, _ = mail
    fleet = _fleet(tmp_path / "cfg", db_url, server, "acme")
    acme = fleet.accounts[0]
    arrears = fleet.arrears
    fleet.gate.close()
    proc = arrears.start("run", "--at", T, log=tmp_path / "run1.log")
    fleet.gate.wait_calls(1)
    # the batch is in flight: the account's host jobs are claimed, nothing is recorded as taken yet
    in_flight = arrears.query("select kind, host from jobs where status = 'claimed' order by kind, host")
    assert [h for kind, h in in_flight if kind == "host"] == ["mail1", "web1", "web1"]
    assert _suspension_rows(fleet, acme.id) == [("in_flight", None)]
    _killed(proc)
    fleet.gate.open()  # the orphaned reload finishes on its own
    _wait_orphans(proc)

    after_crash = arrears.show(acme.id, T)
    assert after_crash["state"] == "debtor" and after_crash["in_flight"] == ["suspension"]
    assert sum(j["claimed"] for j in after_crash["jobs"].values()) == len(in_flight)  # `show` tells the operator
    assert _message_ids(server) == Counter()  # the suspension notice waits until every host applied it

    summary = arrears.json("run", "--at", T)
    assert summary["executor"]["reclaimed"] == len(in_flight)  # the lock holder took the orphaned claims over at once
    assert [t["stage"] for t in summary["executor"]["taken"]] == ["suspension"]

    expected_id = f"<arrears.{acme.id}.1.suspension@hosting.test>"
    server.wait_messages(1)
    assert _message_ids(server) == Counter({expected_id: 1})
    msg = server.messages[0]
    assert msg.rcpt_tos == (f"billing@{acme.site}",)
    assert [_s[0] for _s in _suspension_rows(fleet, acme.id)] == ["taken"]
    info = arrears.show(acme.id, T)
    assert info["state"] == "suspended" and info["holds"] == ["debt"]
    assert [s["stage"] for s in info["stages_taken"]] == ["suspension"] and info["in_flight"] == []
    assert info["jobs"] == {}
    assert arrears.job_statuses(acme.id) == {"done": 6}
    # the hosts show what is recorded: the site redirects, the mailbox is restricted, each once
    assert fleet.host_suspended(acme)
    assert set(fleet.mail_flags(acme).values()) == {1}
    assert "return 302" in fleet.snippet(acme).read_text()

    again = arrears.json("run", "--at", LATER)
    assert again["executor"]["claimed"] == 0 and again["executor"]["taken"] == []
    assert _message_ids(server) == Counter({expected_id: 1})


def test_sigkill_while_the_mail_server_holds_a_notice_then_a_run_sends_what_is_missing(
        tmp_path: Path, db_url: str, mail: tuple[SmtpServer, HeldData]) -> None:
    """The window is one message: each notice is recorded as sent the moment the mail server accepted it,
    so of a batch of two only the one in flight when the agent died (the server accepted it, the agent never
    heard back) goes out a second time, with the same Message-ID so the receiving side can tell; the one
    accepted before is never sent again, and none is lost."""
    server, held = mail
    fleet = _fleet(tmp_path / "cfg", db_url, server, "acme", "bravo")
    arrears = fleet.arrears
    held.allow = 1  # the first suspension notice goes through, the second waits in DATA
    proc = arrears.start("run", "--at", T, log=tmp_path / "run1.log")
    wait_for(lambda: held.held == 1, timeout=60, what="the second notice to wait in DATA")
    with server.lock:
        first_id, held_id = (str(m.message["Message-ID"]) for m in server.messages)
    by_id = dict(arrears.query("select message_id, status from notices"))
    # the first one is recorded as sent before the second went out; the second is claimed, in flight
    assert by_id == {first_id: "sent", held_id: "claimed"}
    _killed(proc)
    held.release.set()
    # the mail server has both: the first one the agent recorded, the second one it never heard of
    assert len(server.messages) == 2

    summary = arrears.json("run", "--at", T)
    assert summary["executor"]["errors"] == []
    assert summary["executor"]["notices_sent"] == 1  # only the one in flight
    ids = {f"<arrears.{a.id}.{n}.suspension@hosting.test>" for n, a in enumerate(fleet.accounts, start=1)}
    assert {first_id, held_id} == ids
    counts = _message_ids(server)
    assert counts == Counter({first_id: 1, held_id: 2})
    assert dict(arrears.query("select message_id, status from notices")) == {first_id: "sent", held_id: "sent"}
    for acc in fleet.accounts:
        info = arrears.show(acc.id, T)
        assert info["state"] == "suspended" and info["jobs"] == {} and info["failed_notices"] == []
        assert fleet.host_suspended(acc)

    arrears.json("run", "--at", LATER)
    assert _message_ids(server) == counts


def test_sigkill_in_the_middle_of_a_chunk_loses_nothing_and_resends_only_the_message_in_flight(
        tmp_path: Path, db_url: str, mail: tuple[SmtpServer, HeldData]) -> None:
    """A chunk of four notices goes over one connection; the agent dies after the server accepted two
    and while it holds the third. The two are recorded as sent, the third and fourth are claimed; the
    next run sends the third again (the same Message-ID) and the fourth once, over one connection, and
    finishes every account's suspension: nothing lost, nothing but the one in flight sent twice."""
    server, held = mail
    fleet = _fleet(tmp_path / "cfg", db_url, server, "acme", "bravo", "charlie", "delta")
    arrears = fleet.arrears
    held.allow = 2
    proc = arrears.start("run", "--at", T, log=tmp_path / "run1.log")
    wait_for(lambda: held.held == 1, timeout=90, what="the third notice to wait in DATA")
    with server.lock:
        accepted = [str(m.message["Message-ID"]) for m in server.messages]
    assert server.connections == 1  # the whole chunk on one connection
    first, second, in_flight = accepted
    statuses = dict(arrears.query("select message_id, status from notices"))
    assert len(statuses) == 4  # the whole chunk was claimed before the first message went out
    assert statuses[first] == statuses[second] == "sent" and statuses[in_flight] == "claimed"
    (never_sent,) = set(statuses) - set(accepted)
    assert statuses[never_sent] == "claimed"
    _killed(proc)
    held.release.set()
    server.reset()

    summary = arrears.json("run", "--at", T)
    assert summary["executor"]["errors"] == []
    assert summary["executor"]["notices_sent"] == 2  # the one in flight, and the one never sent
    assert _message_ids(server) == Counter({in_flight: 1, never_sent: 1})
    assert server.connections == 1
    assert {s for _, s in arrears.query("select message_id, status from notices")} == {"sent"}
    for acc in fleet.accounts:
        info = arrears.show(acc.id, T)
        assert info["state"] == "suspended" and info["jobs"] == {} and info["failed_notices"] == []
    arrears.json("run", "--at", LATER)
    assert _message_ids(server) == Counter({in_flight: 1, never_sent: 1})  # nothing more goes out
