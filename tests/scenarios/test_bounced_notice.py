"""A billing address that hard-bounces, replayed through the CLI with ``--at`` against a real SMTP server
(aiosmtpd on loopback): the account is still suspended on its day, staff get one message per notice that
failed for good, ``status`` lists them, deletion waits for a delivered deletion warning, and an admin's
explicit ``delete --yes`` still deletes. A temporary failure (4xx, connection refused) is retried.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.agent.fleet import Arrears as Process
from tests.scenarios.harness import POLICY, Arrears, day
from tests.servers.base import free_port, wait_for
from tests.servers.smtp import SmtpServer

STAFF = "staff@example.net"
ACME = {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example"}
GLOBEX = {"id": "globex-02", "username": "globex", "billing_email": "billing@globex.example"}
INITECH = {"id": "initech-03", "username": "initech", "billing_email": "billing@initech.example"}


def policy_for(host: str, port: int, *, staff: bool = True) -> str:
    out = f"  smtp: {{host: {host}, port: {port}, timeout: 5}}\n"
    if staff:
        out = f"  staff_email: {STAFF}\n" + out
    return POLICY.replace("{resume}", "true").replace("  spool_dir: outbox\n", out)


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    smtp_server.reset()
    yield smtp_server


def at(n: int, minutes: int = 0) -> str:
    return (datetime.fromisoformat(day(n)) + timedelta(minutes=minutes)).isoformat()


def to(server: SmtpServer, address: str) -> list[EmailMessage]:
    return [r.message for r in list(server.messages) if address in r.rcpt_tos]


def jobs(arrears: Arrears, account: str, action: str) -> int:
    [(count,)] = arrears.query("select count(*) from jobs where account = :account and action = :action",
                               account=account, action=action)
    return int(count)


def staff_about(server: SmtpServer) -> list[tuple[str, str]]:
    """(account, stage) named by each message staff got, from its subject, in order."""
    out = []
    for msg in to(server, STAFF):
        subject = str(msg["Subject"])
        account = subject.split("account ", 1)[1].split(",", 1)[0]
        out.append((account, subject.rsplit("stage ", 1)[1]))
    return out


def test_a_hard_bounced_address_is_suspended_on_its_day_staff_are_told_and_deletion_waits(
        tmp_path: Path, smtp: SmtpServer) -> None:
    arrears = Arrears.create(tmp_path / "cfg", policy=policy_for(smtp.host, smtp.port), accounts=[ACME, GLOBEX])
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.charge("globex-02", 0, "30.00", "inv-2")
    arrears.run(0)
    assert len(to(smtp, "billing@acme.example")) == len(to(smtp, "billing@globex.example")) == 1
    # from now on the billing addresses bounce: acme at RCPT, globex at the end of DATA
    smtp.reject.add("billing@acme.example")
    smtp.reject_data.add("billing@globex.example")

    result = arrears.run(5)
    assert result["executor"]["notices_failed"] == 2 and result["executor"]["notices_sent"] == 2  # to staff
    for n in (5, 6, 7):  # later runs never send the staff messages again
        arrears.run(n)
    assert staff_about(smtp) == [("acme-01", "pre_suspension"), ("globex-02", "pre_suspension")]
    acme_mail, globex_mail = to(smtp, STAFF)
    episode = arrears.show("acme-01", 7)["episode"]["id"]
    assert acme_mail["Message-ID"] == f"<arrears.acme-01.{episode}.pre_suspension.staff@example.net>"
    assert acme_mail["From"] == "billing@example.net" and acme_mail["Auto-Submitted"] == "auto-generated"
    body = acme_mail.get_content()
    assert "billing@acme.example" in body and "550 5.1.1 <billing@acme.example>" in body and "acme-01" in body
    assert "550 5.7.1 <billing@globex.example>: Message rejected" in globex_mail.get_content()

    # status names each notice that failed for good: account, stage, address, the server's reply
    status = arrears.json("status")
    assert [(f["account"], f["stage"], f["to"], f["notice"]) for f in status["failed_notices"]] == [
        ("acme-01", "pre_suspension", "billing@acme.example", "to the billing address"),
        ("globex-02", "pre_suspension", "billing@globex.example", "to the billing address")]
    assert "550 5.1.1 <billing@acme.example>: Recipient address rejected" in status["failed_notices"][0]["reply"]
    assert status["failed_notices"][0]["failed_at"] == day(5)
    text = arrears.ok("status").stdout
    assert "notices failed for good: 2" in text
    assert "acme-01 pre_suspension to the billing address billing@acme.example: recipient billing@acme.example " \
           "refused: 550 5.1.1 <billing@acme.example>: Recipient address rejected: User unknown" in text

    # the suspension still comes on its day: 3 calendar days after the pre-suspension notice failed
    info = arrears.show("acme-01", 7)
    assert info["state"] == "debtor" and info["next"]["stage"] == "suspension"
    assert info["stages_taken"][-1] == {"stage": "pre_suspension", "at": day(5), "undelivered": True}
    assert [t["stage"] for t in arrears.run(8)["executor"]["taken"]] == ["suspension", "suspension"]
    assert arrears.show("acme-01", 8)["state"] == "suspended"
    assert arrears.show("globex-02", 8)["state"] == "suspended"

    # the deletion warning bounces too: the deletion never comes, however long it waits
    for n in (22, 29, 40):
        arrears.run(n)
    assert jobs(arrears, "acme-01", "delete") == 0 and jobs(arrears, "globex-02", "delete") == 0
    info = arrears.show("acme-01", 40)
    assert info["state"] == "suspended" and info["next"]["stage"] == "deletion"
    assert "no deletion warning (deletion_warning) was delivered" in info["held_back"]
    # one staff message per notice that failed for good, never twice
    failed = arrears.json("status")["failed_notices"]
    assert sorted(staff_about(smtp)) == sorted((f["account"], f["stage"]) for f in failed)
    assert [s for a, s in staff_about(smtp) if a == "acme-01"] == ["pre_suspension", "suspension", "deletion_warning"]
    assert len({str(m["Message-ID"]) for m in to(smtp, STAFF)}) == len(failed) == 6

    # an admin deletes explicitly: that still works
    done = arrears.json("delete", "acme-01", "--yes", "--reason", "no way to reach them", "--actor", "carol",
                        "--at", day(40, 12), "--now")
    assert done["state_after"] == "deleted"
    assert arrears.show("acme-01", 41)["state"] == "deleted"
    assert arrears.show("globex-02", 41)["state"] == "suspended"


def test_a_failed_notice_without_staff_email_is_still_listed(tmp_path: Path, smtp: SmtpServer) -> None:
    arrears = Arrears.create(tmp_path / "cfg", policy=policy_for(smtp.host, smtp.port, staff=False),
                             accounts=[ACME])
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    smtp.reject.add("billing@acme.example")
    assert "0 notices sent, 1 failed for good (see arrears status)" in arrears.ok("run", "--at", day(0)).stdout
    assert smtp.messages == []
    assert [(f["account"], f["stage"]) for f in arrears.json("status")["failed_notices"]] == [
        ("acme-01", "outstanding_notice")]
    assert jobs(arrears, "acme-01", "notice") == 1  # no message to staff queued


def test_a_temporary_failure_is_retried_and_not_counted_as_failed_for_good(tmp_path: Path,
                                                                           smtp: SmtpServer) -> None:
    closed = free_port()
    arrears = Arrears.create(tmp_path / "cfg", policy=policy_for(smtp.host, closed), accounts=[INITECH])
    arrears.charge("initech-03", 0, "30.00", "inv-3")
    # the mail server is down: connection refused
    x = arrears.run(0)["executor"]
    assert x["notices_failed"] == 0 and x["retrying"] == 1 and "cannot connect" in x["errors"][0]
    # it is up again but answers 451 for the address: try again later
    (arrears.folder / "policy.yaml").write_text(policy_for(smtp.host, smtp.port))
    smtp.defer.add("billing@initech.example")
    x = arrears.json("run", "--at", at(0, 5))["executor"]
    assert x["notices_failed"] == 0 and x["retrying"] == 1 and "451 4.3.0" in x["errors"][0]
    info = arrears.show("initech-03", 0)
    assert info["in_flight"] == ["outstanding_notice"] and info["failed_notices"][0]["permanent"] is False
    assert "451 4.3.0" in info["jobs"]["notice"]["last_error"]
    assert arrears.json("status")["failed_notices"] == [] and to(smtp, STAFF) == []
    # the back-off (60 s, doubling) has run out: delivered once, and the stage is taken
    smtp.defer.clear()
    x = arrears.json("run", "--at", at(0, 10))["executor"]
    assert x["notices_sent"] == 1 and [t["stage"] for t in x["taken"]] == ["outstanding_notice"]
    assert len(to(smtp, "billing@initech.example")) == 1 and to(smtp, STAFF) == []
    assert arrears.json("status")["failed_notices"] == []
    assert arrears.show("initech-03", 0)["stages_taken"] == [{"stage": "outstanding_notice", "at": at(0, 10)}]


def _get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def test_the_daemon_exports_the_notices_that_failed_for_good(tmp_path: Path, smtp: SmtpServer) -> None:
    arrears = Arrears.create(tmp_path / "cfg", policy=policy_for(smtp.host, smtp.port), accounts=[ACME])
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    smtp.reject.add("billing@acme.example")
    arrears.run(0)
    process = Process(arrears.folder, arrears.db)
    port = free_port()
    log = tmp_path / "daemon.log"
    proc = process.start("daemon", "--interval", "3600", "--metrics-port", str(port), log=log)
    try:
        # the gauge is set after the daemon's first tick; nothing changes until its next one, an hour away
        wait_for(lambda: "last_tick" in _get(port, "/healthz"), timeout=60,
                 what="the daemon's first tick", log=log)
        gauge = next(line for line in _get(port, "/metrics").splitlines()
                     if line.startswith("arrears_notices_failed_permanently{"))
        failed: list[dict[str, Any]] = json.loads(process.ok("status", "--json"))["failed_notices"]
        assert len(failed) >= 1 and float(gauge.split()[1]) == len(failed)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
