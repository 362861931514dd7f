"""The debt lifecycle through the ``arrears`` command on real servers, checked with real clients.

Each test has its own configuration folder and database on the module's one fleet (tests/e2e/conftest.py)
and replays days with ``arrears run --at``; stages are one day apart. The notices are read back from
the SMTP server, the sites over HTTP, the mailboxes over IMAP, POP3 and SMTP, the login over SSH.

The module's web servers are not the suite's hand-made ones: they run from Debian's own nginx and
apache2 configuration trees (tests/servers/stock.py), each with a customer vhost per site of :data:`SLOTS`
copied from the package's default site and no arrears hook anywhere, and ``arrears hosts prepare``
(over the same SSH transport as every batch) makes the fleet ready before the first test; a second run
must change nothing. Its ``--dry-run`` and the stock dovecot and postfix are tested in
tests/connectors/test_prepare.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    FROM_ADDR,
    MESSAGE_DOMAIN,
    SLOTS,
    Arrears,
    Fleet,
    Slot,
    body_text,
    day,
    eventually,
)
from tests.servers.stock import stock_apache, stock_nginx
from tests.servers.web import WebServer

pytestmark = pytest.mark.servers

SITES = [slot.site for slot in SLOTS.values()]


def _serve(server: WebServer) -> Iterator[WebServer]:
    try:
        assert server.daemon is not None
        server.daemon.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="module")
def nginx_server() -> Iterator[WebServer]:
    """Debian's nginx, its customer vhosts without the hook (this module's fleet uses it)."""
    yield from _serve(stock_nginx(SITES, vhost_name="{site}.conf"))


@pytest.fixture(scope="module")
def apache_server() -> Iterator[WebServer]:
    """Debian's apache2, its customer vhosts without the hook (this module's fleet uses it)."""
    yield from _serve(stock_apache(SITES))


def folders(fleet: Fleet) -> dict[str, str]:
    """Every vhost's sha256 and link, and the mode of each folder ``prepare`` looks after."""
    snap = fleet.vhost_snapshot()
    for p in [fleet.state_dir, *(w.hook_dir for w in fleet.web.values()), fleet.mail.deny_dir]:
        snap[str(p)] = oct(p.stat().st_mode & 0o7777) if p.exists() else "absent"
    return snap


@dataclass(frozen=True)
class Prepared:
    """What ``arrears hosts prepare`` found and left: :func:`folders` before, after it and after a second run
    (with that run's output), and every vhost's text before and after it."""

    untouched: dict[str, str]
    prepared: dict[str, str]
    again: dict[str, str]
    again_output: str
    vhosts_before: dict[Path, str]
    vhosts_after: dict[Path, str]


@pytest.fixture(scope="module", autouse=True)
def prepared(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """``arrears hosts prepare`` over SSH on the stock fleet, twice, before the module's first test."""
    arrears = Arrears(tmp_path_factory.mktemp("prepare"))  # prepare reads only the inventory
    fleet.write_inventory(arrears.folder)
    def texts() -> dict[Path, str]:
        return {p: p.read_text() for w in fleet.web.values() for p in w.vhost_files()}

    untouched, before = folders(fleet), texts()
    arrears.ok("hosts", "prepare")
    after, vhosts = folders(fleet), texts()
    output = arrears.ok("hosts", "prepare")
    return Prepared(untouched, after, folders(fleet), output, before, vhosts)


def test_prepare_makes_the_stock_fleet_ready_over_ssh_and_a_second_run_changes_nothing(prepared: Prepared,
                                                                                         fleet: Fleet) -> None:
    nginx, apache = fleet.web["nginx"], fleet.web["apache"]
    for site in SITES:
        ngx, apa = nginx.vhost_dir / f"{site}.conf", apache.vhost_dir / f"{site}.conf"
        assert "arrears.d" not in prepared.vhosts_before[ngx] + prepared.vhosts_before[apa]
        assert f"\tinclude {nginx.hook_dir}/{site}.con[f];\n" in prepared.vhosts_after[ngx]
        assert f"\tIncludeOptional {apache.hook_dir}/{site}.conf\n" in prepared.vhosts_after[apa]
    assert prepared.prepared != prepared.untouched
    assert prepared.again == prepared.prepared
    # web, login, home on web-nginx; web-apache; mail
    assert prepared.again_output.count("(nothing to change)") == 5, prepared.again_output

PATHS = ["/", "/a/b/c.html", "/?x=1&y=2"]
BACKENDS = ("nginx", "apache")
OPEN = {"imap": True, "webmail": True, "pop3": True, "incoming": True}
CLOSED = {"imap": False, "webmail": False, "pop3": False, "incoming": False}


def taken(result: dict[str, object]) -> list[tuple[str, str, str]]:
    executor = result["executor"]
    assert isinstance(executor, dict)
    return [(t["account"], t["stage"], t["action"]) for t in executor["taken"]]


def assert_clean(result: dict[str, object]) -> None:
    executor = result["executor"]
    assert isinstance(executor, dict)
    assert result["errors"] == [] and executor["errors"] == [], (result["errors"], executor["errors"])
    assert executor["failed"] == 0 and executor["retrying"] == 0


def newest_notice(fleet: Fleet, slot: Slot, count: int) -> EmailMessage:
    """The account's newest notice; the SMTP server must hold exactly ``count`` notices for it."""
    got = fleet.notices(slot.billing_email)
    assert len(got) == count, [m["Subject"] for m in got]
    return got[-1]


def check_notice(msg: EmailMessage, slot: Slot, episode: int, stage: str, subject: str, amounts: list[str]) -> None:
    """Recipient, sender, subject (its start: dates are checked at the end), Message-ID and amounts."""
    assert msg["To"] == slot.billing_email
    assert msg["From"] == FROM_ADDR
    assert msg["Subject"].startswith(subject), (msg["Subject"], subject)
    assert msg["Message-ID"] == f"<arrears.{slot.id}.{episode}.{stage}@{MESSAGE_DOMAIN}>"
    text = body_text(msg)
    for amount in amounts:
        assert amount in text, f"{amount!r} not in the {stage} notice:\n{text}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_suspended(fleet: Fleet, slot: Slot) -> None:
    for backend in BACKENDS:
        for path in PATHS:
            eventually(partial(fleet.redirected, backend, slot.site, path),
                       f"{slot.site}{path} on {backend} to redirect to the suspended page")
    assert fleet.mail_access(slot.mailbox) == CLOSED
    assert fleet.incoming(slot.mailbox) == 550
    assert fleet.ssh_login(slot.id) is None


def check_serving(fleet: Fleet, slot: Slot) -> None:
    for backend in BACKENDS:
        for path in PATHS[:2]:
            eventually(partial(fleet.serves_own_content, backend, slot.site, path),
                       f"{slot.site}{path} on {backend} to serve its own content")


def check_reconciled(arrears: Arrears, n: int) -> None:
    """``arrears reconcile`` reads every placement on the real hosts and finds them as recorded."""
    result = arrears.invoke("reconcile", "--json", "--at", day(n, 12))
    report = json.loads(result.stdout)
    assert (result.returncode, report["differences"], report["errors"]) == (0, [], []), result.stdout
    assert report["checked"] == len(SLOTS) * 5  # web on two hosts, mail, login, home


def check_archive(arrears: Arrears, account: str, service: str, host: str, gone: Path, member: str) -> None:
    """The deletion's archive exists, its sha256 is the one recorded, it holds ``member``; ``gone`` is gone."""
    facts = arrears.placement_state(account, service, host)["delete"]
    archive = Path(facts["archive"])
    assert archive.is_file(), facts
    assert sha256(archive) == facts["sha256"]
    listing = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert any(line.rstrip("/").endswith(member) for line in listing.splitlines()), listing
    assert not gone.exists()


def test_debtor_is_noticed_suspended_everywhere_warned_and_deleted(fleet: Fleet, tmp_path: Path) -> None:
    slot, other = SLOTS["acct-1"], SLOTS["acct-2"]
    user = fleet.users[slot.id]
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(a) for a in SLOTS])
    check_serving(fleet, slot)
    assert fleet.mail_access(slot.mailbox) == OPEN
    assert fleet.ssh_login(slot.id) == user.name
    nginx_vhost = fleet.web["nginx"].vhost_dir / f"{slot.site}.conf"
    apache_vhost = fleet.web["apache"].vhost_dir / f"{slot.site}.conf"
    local, _, domain = slot.mailbox.partition("@")
    maildir = fleet.mail.mail_dir / domain / local

    arrears.charge(slot.id, 0, "42.50", "inv-1")

    # day 0: the debt starts, the first notice goes out
    result = arrears.run(0)
    assert_clean(result)
    assert taken(result) == [(slot.id, "outstanding_notice", "notice")]
    episode = arrears.show(slot.id, 0)["episode"]["id"]
    check_notice(newest_notice(fleet, slot, 1), slot, episode, "outstanding_notice",
                 f"Outstanding balance on your account {slot.id}", ["-€42.50", "€0.00"])

    # day 1: the warning before the suspension
    result = arrears.run(1)
    assert_clean(result)
    assert taken(result) == [(slot.id, "pre_suspension", "notice")]
    check_notice(newest_notice(fleet, slot, 2), slot, episode, "pre_suspension",
                 f"Your account {slot.id} will be suspended on", ["-€42.50"])
    check_serving(fleet, slot)

    # day 2: suspended on every host, then the suspension notice
    result = arrears.run(2)
    assert_clean(result)
    assert taken(result) == [(slot.id, "suspension", "suspend")]
    check_suspended(fleet, slot)
    check_notice(newest_notice(fleet, slot, 3), slot, episode, "suspension",
                 f"Your account {slot.id} has been suspended", ["-€42.50"])
    info = arrears.show(slot.id, 2)
    assert info["state"] == "suspended" and info["jobs"] == {}
    check_reconciled(arrears, 2)
    # the other account is untouched
    check_serving(fleet, other)
    assert fleet.ssh_login(other.id) == fleet.users[other.id].name
    assert fleet.mail_access(other.mailbox)["imap"]

    # day 3: the deletion warning
    result = arrears.run(3)
    assert_clean(result)
    assert taken(result) == [(slot.id, "deletion_warning", "notice")]
    check_notice(newest_notice(fleet, slot, 4), slot, episode, "deletion_warning",
                 f"Your account {slot.id} will be deleted on", ["-€42.50"])
    assert user.home.is_dir()

    # day 4: deleted (archived, verified, removed), then the deletion notice
    result = arrears.run(4)
    assert_clean(result)
    assert taken(result) == [(slot.id, "deletion", "delete")]
    check_notice(newest_notice(fleet, slot, 5), slot, episode, "deletion",
                 f"Your account {slot.id} has been deleted", ["-€42.50"])
    assert arrears.show(slot.id, 4)["state"] == "deleted"
    check_archive(arrears, slot.id, "home", "web-nginx", user.home, "notes.txt")
    check_archive(arrears, slot.id, "web", "web-nginx", nginx_vhost, f"{slot.site}.conf")
    check_archive(arrears, slot.id, "web", "web-apache", apache_vhost, f"{slot.site}.conf")
    check_archive(arrears, slot.id, "mail", "mail", maildir, local)
    assert fleet.ssh_login(slot.id) is None
    assert fleet.mail_access(slot.mailbox) == CLOSED  # a deleted mailbox bounces and refuses logins
    check_reconciled(arrears, 4)  # every host ends as the records say: deleted sites, mailbox, login, home

    # nothing more happens, and no notice goes out twice
    assert taken(arrears.run(5)) == []
    notices = fleet.notices(slot.billing_email)
    assert len({m["Message-ID"] for m in notices}) == len(notices) == 5
    check_serving(fleet, other)
    # the warnings name the day their measure falls due (each stage comes one day after the previous one)
    assert [m["Subject"] for m in notices] == [
        f"Outstanding balance on your account {slot.id}",
        f"Your account {slot.id} will be suspended on 2026-03-04",
        f"Your account {slot.id} has been suspended",
        f"Your account {slot.id} will be deleted on 2026-03-06",
        f"Your account {slot.id} has been deleted",
    ]


@pytest.fixture
def owner_closed_pop3(fleet: Fleet) -> Iterator[str]:
    """acct-2's mailbox had -p (its owner closed POP3) before any suspension."""
    box = SLOTS["acct-2"].mailbox
    deny = fleet.mail.deny_dir / f"deny.pop3.{fleet.mail.pop3_port}"
    original = deny.read_text() if deny.exists() else None
    deny.write_text((original or "") + f"{box}\n")
    deny.chmod(0o644)
    yield box
    if original is None:
        deny.unlink()
    else:
        deny.write_text(original)


def test_card_payment_after_suspension_resumes_exactly(fleet: Fleet, tmp_path: Path, owner_closed_pop3: str) -> None:
    slot = SLOTS["acct-2"]
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(slot.id)])
    vhosts = fleet.vhost_snapshot()
    before = {**OPEN, "pop3": False}
    assert fleet.mail_access(slot.mailbox) == before
    arrears.charge(slot.id, 0, "30.00", "inv-1")
    for n in (0, 1, 2):
        assert_clean(arrears.run(n))
    check_suspended(fleet, slot)
    assert arrears.show(slot.id, 2)["state"] == "suspended"
    assert len(fleet.notices(slot.billing_email)) == 3

    arrears.ok("payment", slot.id, "30.00", "--method", "card", "--ref", "pay-1", "--at", day(2, 15))
    result = arrears.run(2, 16)
    assert_clean(result)
    assert taken(result) == [(slot.id, "resume", "resume")]

    check_serving(fleet, slot)
    for backend in BACKENDS:
        assert not (fleet.web[backend].hook_dir / f"{slot.site}.conf").exists()
    assert fleet.vhost_snapshot() == vhosts
    # the owner's own -p stays; every door the suspension closed is open again
    assert fleet.mail_access(slot.mailbox) == before
    assert slot.mailbox in (fleet.mail.deny_dir / f"deny.pop3.{fleet.mail.pop3_port}").read_text().split()
    fleet.deliver(slot.mailbox)
    assert fleet.ssh_login(slot.id) == fleet.users[slot.id].name
    info = arrears.show(slot.id, 2, 16)
    assert (info["state"], info["holds"], info["episode"], info["jobs"]) == ("active", [], None, {})

    # later days bring no further measure and no further notice
    for n in (3, 4, 5):
        assert taken(arrears.run(n)) == []
    assert len(fleet.notices(slot.billing_email)) == 3
    assert fleet.serves_own_content("nginx", slot.site)


def test_admin_suspension_outlasts_the_payment_until_an_admin_resumes(fleet: Fleet, tmp_path: Path) -> None:
    slot = SLOTS["acct-3"]
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(slot.id)])
    vhosts = fleet.vhost_snapshot()
    arrears.charge(slot.id, 0, "25.00", "inv-1")
    assert_clean(arrears.run(0))
    assert arrears.show(slot.id, 0)["state"] == "debtor"

    arrears.ok("suspend", slot.id, "--reason", "abuse report 4711", "--actor", "alice", "--at", day(0, 12))
    result = arrears.run(0, 12)
    assert_clean(result)
    check_suspended(fleet, slot)
    info = arrears.show(slot.id, 0, 12)
    assert (info["state"], info["holds"]) == ("suspended", ["admin"])
    subjects = [m["Subject"] for m in fleet.notices(slot.billing_email)]
    assert subjects == [f"Outstanding balance on your account {slot.id}",
                        f"Your account {slot.id} has been suspended"]
    assert "-£25.00" in body_text(fleet.notices(slot.billing_email)[-1])

    # the debt is paid by card: the debt episode ends, the admin's suspension stays
    arrears.ok("payment", slot.id, "25.00", "--method", "card", "--ref", "pay-1", "--at", day(1, 9))
    for n in (1, 2, 3):
        assert_clean(arrears.run(n))
    info = arrears.show(slot.id, 3)
    assert (info["state"], info["holds"], info["episode"], info["in_debt"]) == ("suspended", ["admin"], None, False)
    check_suspended(fleet, slot)

    arrears.ok("resume", slot.id, "--actor", "bob", "--at", day(3, 11))
    result = arrears.run(3, 11)
    assert_clean(result)
    check_serving(fleet, slot)
    assert fleet.vhost_snapshot() == vhosts
    assert fleet.mail_access(slot.mailbox) == OPEN
    assert fleet.ssh_login(slot.id) == fleet.users[slot.id].name
    info = arrears.show(slot.id, 3, 11)
    assert (info["state"], info["holds"], info["jobs"]) == ("active", [], {})
    audit = [(a["action"], a["actor"], a["reason"]) for a in arrears.json("history", slot.id)["audit"]
             if a["action"] in ("manual.suspend", "manual.resume")]
    assert audit == [("manual.suspend", "alice", "abuse report 4711"),
                     ("manual.resume", "bob", "resumed by an admin")]
