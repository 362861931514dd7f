"""The dovecot+postfix mail connector against a real dovecot and postfix, driven over SSH.

Account A owns info@a.test and sales@a.test, account B owns info@b.test, all on the same host. Real
clients (imaplib, poplib, smtplib) show each flag's effect and that B is never touched.
"""

from __future__ import annotations

import imaplib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.base import BatchResult, Transport, build_script, run_batch
from connectors.local import LocalTransport
from connectors.mail import flags
from connectors.mail.dovecot_postfix import DovecotPostfixConnector, DovecotPostfixSettings
from connectors.validate import UnsafeValue
from tests.connectors.crash_window import crash, stop_after
from tests.servers.base import wait_for
from tests.servers.mail import MAILBOXES, MailServer, fresh_source, imap_login_ok, pop3_login_ok
from tests.servers.sshd import SshdServer

A, B = "acct-a", "acct-b"
A_BOXES = ["info@a.test", "sales@a.test"]
B_BOXES = ["info@b.test"]
OUTSIDE = "someone@outside.test"


@pytest.fixture
def transport(ssh_transport: Transport) -> Transport:
    return ssh_transport


@pytest.fixture(scope="module")
def connector(mail_server: MailServer) -> DovecotPostfixConnector:
    return DovecotPostfixConnector(DovecotPostfixSettings(**mail_server.settings()), "mail-test")


# -- real clients --------------------------------------------------------------------------------------



def imap_ok(port: int, box: str) -> bool:
    return imap_login_ok("127.0.0.1", port, box, MAILBOXES[box])


def pop3_ok(port: int, box: str) -> bool:
    return pop3_login_ok("127.0.0.1", port, box, MAILBOXES[box])


def rcpt(server: MailServer, to: str, *, login: str | None = None) -> int:
    """The SMTP answer to RCPT TO (nothing is sent: the transaction is reset)."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=10,
                      source_address=fresh_source()) as smtp:
        smtp.ehlo()
        if login:
            smtp.login(login, MAILBOXES[login])
        smtp.mail(login or OUTSIDE)
        code, _ = smtp.rcpt(to)
        smtp.rset()
        return code


def deliver(server: MailServer, to: str) -> None:
    """An outside sender's message to ``to``, waited for in its maildir."""
    before = len(server.inbox(to))
    with smtplib.SMTP("127.0.0.1", server.smtp_port, local_hostname="client.test", timeout=10) as smtp:
        smtp.sendmail(OUTSIDE, [to], f"From: {OUTSIDE}\r\nTo: {to}\r\nSubject: test\r\n\r\nhello\r\n")
    server.wait_delivered(to, before + 1)


def access(server: MailServer, box: str, *, local_to: str = "info@b.test") -> dict[str, bool]:
    """Every flag's effect on one mailbox, as its user and an outside sender see it (True = allowed)."""
    return {
        "imap": imap_ok(server.imap_port, box),
        "webmail": imap_ok(server.webmail_port, box),
        "pop3": pop3_ok(server.pop3_port, box),
        "incoming": rcpt(server, box) == 250,
        "relay": rcpt(server, OUTSIDE, login=box) == 250,
        "local": rcpt(server, local_to, login=box) == 250,
        "password": box not in _locked(server),
    }


OPEN = {"imap": True, "webmail": True, "pop3": True, "incoming": True, "relay": True, "local": True,
        "password": True}
SUSPENDED = {"imap": False, "webmail": False, "pop3": False, "incoming": False, "relay": False, "local": True,
             "password": False}


def _locked(server: MailServer) -> list[str]:
    lock = server.password_lock
    return lock.read_text().split() if lock.exists() else []


def apply(transport: Transport, connector: DovecotPostfixConnector, action: str,
          accounts: dict[str, list[str]]) -> BatchResult:
    ops = [op for acct, boxes in accounts.items()
           for op in connector.operations(action, acct, {"mailboxes": boxes})]  # type: ignore[arg-type]
    batch = run_batch(transport, ops, connector.handlers())
    assert batch.ok, {k: (r.error, r.stderr) for k, r in batch.results.items() if not r.ok}
    for name, handler in batch.handlers.items():
        assert handler.ok, (name, handler.error, handler.stderr)
    return batch


def observed(transport: Transport, connector: DovecotPostfixConnector, boxes: list[str]) -> str:
    """What the connector reads from the real server's status facts for one account's mailboxes."""
    facts: dict[str, str] = {}
    for r in apply(transport, connector, "status", {A: boxes}).results.values():
        facts.update(r.facts)
    return connector.observe(facts).state


# -- tests ---------------------------------------------------------------------------------------------


@pytest.fixture
def preset_pop3(mail_server: MailServer) -> Iterator[Path]:
    """sales@a.test already had -p (the owner closed POP3) before any suspension."""
    deny = mail_server.deny_dir / f"deny.pop3.{mail_server.pop3_port}"
    original = deny.read_text() if deny.exists() else None
    deny.write_text((original or "") + "sales@a.test\n")
    deny.chmod(0o644)
    yield deny
    if original is None:
        deny.unlink()
    else:
        deny.write_text(original)


def test_suspend_closes_every_door_of_one_account_and_resume_opens_them_again(
    mail_server: MailServer, connector: DovecotPostfixConnector, transport: Transport, preset_pop3: Path
) -> None:
    # before: everything works (sales@a.test has its own -p)
    for box in ["info@a.test", "info@b.test"]:
        assert access(mail_server, box) == OPEN
        deliver(mail_server, box)
    assert access(mail_server, "sales@a.test") == {**OPEN, "pop3": False}

    status = apply(transport, connector, "status", {A: A_BOXES})
    assert status.results[f"{A}:mail:status:sales@a.test"].facts["flags:sales@a.test"] == "p"
    assert observed(transport, connector, A_BOXES) == "active"

    session = imaplib.IMAP4("127.0.0.1", mail_server.imap_port, timeout=10)
    session.login("info@a.test", MAILBOXES["info@a.test"])
    session.select("INBOX")
    reloads = (mail_server.reloads("postfix"), mail_server.reloads("dovecot"))

    batch = apply(transport, connector, "suspend", {A: A_BOXES})

    # every operation changed the host, the services were reloaded once for the whole batch
    assert all(r.changed for r in batch.results.values())
    assert mail_server.reloads("postfix") == reloads[0] + 1
    assert mail_server.reloads("dovecot") == reloads[1] + 1
    assert batch.handlers["handler:mail-postfix"].facts["reloaded"] == "yes"
    assert batch.handlers["handler:mail-dovecot"].facts["kicked"].split() == A_BOXES
    # what was there before is returned (and kept on the host)
    facts = batch.results[f"{A}:mail:suspend:sales@a.test"].facts
    assert facts["before:sales@a.test"] == "p"
    assert facts["added:sales@a.test"] == "dwibr"
    assert facts["flags:sales@a.test"] == "dpwibr"
    assert batch.results[f"{A}:mail:suspend:info@a.test"].facts["before:info@a.test"] == ""

    # the open IMAP session of A was closed
    def closed() -> bool:
        try:
            session.noop()
        except (imaplib.IMAP4.abort, OSError):
            return True
        return False

    wait_for(closed, timeout=10, what="the open IMAP session to be kicked")

    for box in A_BOXES:
        assert access(mail_server, box) == SUSPENDED, box
    assert sorted(_locked(mail_server)) == sorted(A_BOXES)
    assert access(mail_server, "info@b.test") == OPEN
    deliver(mail_server, "info@b.test")
    assert observed(transport, connector, A_BOXES) == "suspended"

    # suspending again changes nothing: no operation changed, no reload ran
    again = apply(transport, connector, "suspend", {A: A_BOXES})
    assert [r.changed for r in again.results.values()] == [False, False]
    assert again.handlers == {}
    assert (mail_server.reloads("postfix"), mail_server.reloads("dovecot")) == (reloads[0] + 1, reloads[1] + 1)
    assert again.results[f"{A}:mail:suspend:sales@a.test"].facts["before:sales@a.test"] == "p"

    resumed = apply(transport, connector, "resume", {A: A_BOXES, B: B_BOXES})
    changed = {k: r.changed for k, r in resumed.results.items()}
    assert changed == {f"{A}:mail:resume:info@a.test": True, f"{A}:mail:resume:sales@a.test": True,
                       f"{B}:mail:resume:info@b.test": False}
    assert mail_server.reloads("postfix") == reloads[0] + 2
    assert mail_server.reloads("dovecot") == reloads[1] + 2

    assert access(mail_server, "info@a.test") == OPEN
    deliver(mail_server, "info@a.test")
    # the owner's own -p survived the suspension
    assert access(mail_server, "sales@a.test") == {**OPEN, "pop3": False}
    assert resumed.results[f"{A}:mail:resume:sales@a.test"].facts["flags:sales@a.test"] == "p"
    assert access(mail_server, "info@b.test") == OPEN
    assert _locked(mail_server) == []


@pytest.mark.parametrize("then", ["cont", "kill"])
def test_a_change_on_disk_when_the_agent_dies_is_loaded_by_the_next_batch(
    mail_server: MailServer, connector: DovecotPostfixConnector, transport: Transport, sshd: SshdServer,
    tmp_path: Path, then: str,
) -> None:
    """The batch stops right after the mailbox's lists reached the disk, the agent is SIGKILLed, the
    batch goes on without its connection (or is killed too): the next batch finds nothing to change and
    still reloads dovecot and rebuilds postfix's maps, so the login is refused and no mail comes in."""
    box = "info@a.test"
    ops = connector.operations("suspend", A, {"mailboxes": [box]})
    script = build_script(*stop_after(ops, connector.handlers(), tmp_path / "pid"), state_dir=str(tmp_path))
    reloads = (mail_server.reloads("postfix"), mail_server.reloads("dovecot"))
    crash(sshd.settings(), script, tmp_path / "pid", then=then)  # type: ignore[arg-type]
    assert box in _locked(mail_server)  # on disk
    assert (mail_server.reloads("postfix"), mail_server.reloads("dovecot")) == reloads  # not loaded

    again = run_batch(transport, ops, connector.handlers(), state_dir=str(tmp_path))
    assert access(mail_server, box) == SUSPENDED
    assert again.ok and not any(r.changed for r in again.results.values())
    assert {name: h.ok for name, h in again.handlers.items()} == {"handler:mail-dovecot": True,
                                                                  "handler:mail-postfix": True}
    assert (mail_server.reloads("postfix"), mail_server.reloads("dovecot")) == (reloads[0] + 1, reloads[1] + 1)
    assert list((tmp_path / "pending").iterdir()) == []

    apply(transport, connector, "resume", {A: [box]})
    assert access(mail_server, box) == OPEN


def test_partial_flags_set_only_those(
    mail_server: MailServer, connector: DovecotPostfixConnector, transport: Transport
) -> None:
    ops = connector.operations("suspend", B, {"mailboxes": B_BOXES, "flags": "-b -r"})
    batch = run_batch(transport, ops, connector.handlers())
    assert batch.ok
    assert batch.handlers["handler:mail-postfix"].facts["reloaded"] == "yes"
    assert batch.handlers["handler:mail-dovecot"].facts["reloaded"] == "no"
    assert access(mail_server, "info@b.test", local_to="info@a.test") == {**OPEN, "incoming": False, "relay": False}
    apply(transport, connector, "resume", {B: B_BOXES})
    assert access(mail_server, "info@b.test") == OPEN


def test_delete_archives_the_maildirs_and_restore_brings_them_back(
    mail_server: MailServer, connector: DovecotPostfixConnector, transport: Transport
) -> None:
    deliver(mail_server, "sales@a.test")
    maildir = mail_server.mail_dir / "a.test" / "sales"
    before = {p.relative_to(maildir): p.read_bytes() for p in maildir.rglob("*") if p.is_file()}
    deleted = apply(transport, connector, "delete", {A: ["sales@a.test"]})
    facts = deleted.results[f"{A}:mail:delete:maildirs"].facts
    assert not maildir.exists()
    assert Path(facts["archive"]).is_file() and facts["sha256"]
    # a deleted mailbox stays suspended: mail to it bounces instead of filling a new maildir
    assert access(mail_server, "sales@a.test") == SUSPENDED
    assert observed(transport, connector, ["sales@a.test"]) == "deleted"
    assert not any(r.changed for r in apply(transport, connector, "delete", {A: ["sales@a.test"]}).results.values())

    restore = connector.operations("restore", A, {"mailboxes": ["sales@a.test"], **facts})
    batch = run_batch(transport, restore, connector.handlers())
    assert batch.ok, batch.results
    after = {p.relative_to(maildir): p.read_bytes() for p in maildir.rglob("*") if p.is_file()}
    assert after == before
    assert observed(transport, connector, ["sales@a.test"]) == "suspended"  # resume follows on payment
    apply(transport, connector, "resume", {A: ["sales@a.test"]})
    assert imap_ok(mail_server.imap_port, "sales@a.test")
    assert observed(transport, connector, ["sales@a.test"]) == "active"


@pytest.mark.parametrize("account, boxes", [
    ("x;rm -rf /", ["info@a.test"]),
    ("../../etc", ["info@a.test"]),
    (A, ["../../etc@a.test"]),
    (A, ["info@a.test;reboot"]),
    (A, ["in fo@a.test"]),
    (A, ["info@a.test\nx"]),
])
def test_unsafe_names_are_refused_before_anything_runs(account: str, boxes: list[str], tmp_path: Path) -> None:
    settings = DovecotPostfixSettings(deny_dir=str(tmp_path / "deny"), state_dir=str(tmp_path / "state"))
    with pytest.raises(UnsafeValue):
        DovecotPostfixConnector(settings, "h").operations("suspend", account, {"mailboxes": boxes})


def test_unknown_flag_letters_are_refused() -> None:
    with pytest.raises(UnsafeValue, match="unknown flag"):
        DovecotPostfixConnector(DovecotPostfixSettings(), "h").operations(
            "suspend", A, {"mailboxes": ["info@a.test"], "flags": "dx"})


def test_webmail_flag_needs_its_own_listener() -> None:
    with pytest.raises(ValueError, match="separate listeners"):
        DovecotPostfixSettings(imap_ports=[143], webmail_ports=[143])
    assert DovecotPostfixConnector(DovecotPostfixSettings(), "h").supported() == "dpibr"


def test_flag_letters_and_bits() -> None:
    assert flags.parse_flags("-r -d -p") == "dpr"
    assert flags.parse_flags("bbi") == "ib"
    assert flags.to_bits("dpwibr") == flags.MASK == 0x3F
    assert flags.to_bits("p") == 0x02 and flags.to_bits("r") == 0x20
    assert flags.from_bits(0x1000 | 0x08 | 0x01) == "di"
    assert flags.union("pb", "dp") == "dpb"
    assert flags.difference("dpwibr", "p") == "dwibr"
    with pytest.raises(UnsafeValue):
        flags.parse_flags("-s")


def test_mailboxes_are_matched_lower_cased_as_dovecot_looks_them_up() -> None:
    ops = DovecotPostfixConnector(DovecotPostfixSettings(), "h").operations(
        "suspend", A, {"mailboxes": ["Info@A.Test", "info@a.test"]})
    assert [op.id for op in ops] == [f"{A}:mail:suspend:info@a.test"]


def test_list_files_keep_their_other_lines_modes_and_the_saved_record(tmp_path: Path) -> None:
    """The files themselves, without daemons: other entries (with ':' or blanks after the name, a last line
    without its newline) survive a suspension and its resume byte for byte, new files are 0644, the record
    is 0600, and the kick list names the mailbox."""
    deny, maps, state = tmp_path / "deny", tmp_path / "maps", tmp_path / "state"
    settings = DovecotPostfixSettings(
        deny_dir=str(deny), imap_ports=[143], pop3_ports=[110], webmail_ports=[8143],
        password_lock_file=str(deny / "password-lock"), bounce_map=str(maps / "bounce"),
        norelay_map=str(maps / "norelay"), state_dir=str(state), postmap_command="true",
        postfix_reload_command="true", dovecot_reload_command="true", kick_command="true",
        maildir_template=str(tmp_path / "mail") + "/{domain}/{local}", mail_roots=[str(tmp_path / "mail")],
        archive_dir=str(tmp_path / "archive"))
    connector = DovecotPostfixConnector(settings, "local")
    local = LocalTransport("local")
    deny.mkdir()
    others = {
        deny / "deny.pop3.110": "info@a.test.example\nother@a.test:x\ninfo@a.test\n",  # info@a.test had -p
        deny / "deny.imap.143": "other@a.test\n info@a.test\nlast@a.test",
    }
    for file, text in others.items():
        file.write_text(text)
        file.chmod(0o600)

    def run(action: str) -> BatchResult:
        ops = connector.operations(action, A, {"mailboxes": ["Info@A.test"]})  # type: ignore[arg-type]
        batch = run_batch(local, ops, connector.handlers(), state_dir=str(state))
        assert batch.ok, batch.results
        return batch

    suspended = run("suspend")
    facts = suspended.results[f"{A}:mail:suspend:info@a.test"].facts
    assert [facts[f"{k}:info@a.test"] for k in ("before", "added", "flags")] == ["p", "dwibr", "dpwibr"]
    assert (deny / "deny.imap.143").read_text() == "other@a.test\n info@a.test\nlast@a.test\ninfo@a.test\n"
    assert (deny / "deny.pop3.110").read_text() == others[deny / "deny.pop3.110"]
    assert (deny / "deny.imap.8143").read_text() == (deny / "password-lock").read_text() == "info@a.test\n"
    assert (maps / "bounce").read_text() == "info@a.test 550 5.2.1 Mailbox disabled\n"
    assert (maps / "norelay").read_text() == "info@a.test arrears_norelay\n"
    for file in [deny / "deny.imap.143", deny / "deny.imap.8143", deny / "password-lock", maps / "bounce"]:
        assert file.stat().st_mode & 0o777 == 0o644, file
    record = state / "mail" / "info@a.test.flags"
    assert record.read_text() == "before=p\nadded=dwibr\n" and record.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.rglob("*.arrears-tmp")) and not list(tmp_path.rglob("*.tmp"))
    assert suspended.handlers["handler:mail-dovecot"].facts["kicked"] == "info@a.test"

    again = run("suspend")
    assert not any(r.changed for r in again.results.values()) and again.handlers == {}
    assert record.read_text() == "before=p\nadded=dwibr\n"

    resumed = run("resume")
    assert resumed.results[f"{A}:mail:resume:info@a.test"].facts["flags:info@a.test"] == "p"
    assert (deny / "deny.imap.143").read_text() == "other@a.test\n info@a.test\nlast@a.test\n"
    assert (deny / "deny.pop3.110").read_text() == others[deny / "deny.pop3.110"]
    assert [(deny / n).read_text() for n in ("deny.imap.8143", "password-lock")] == ["", ""]
    assert [(maps / n).read_text() for n in ("bounce", "norelay")] == ["", ""]
    assert not record.exists()
    assert run("status").results[f"{A}:mail:status:info@a.test"].facts == {
        "flags:info@a.test": "p", "suspended:info@a.test": "no", "maildir:info@a.test": "absent",
        "deleted:info@a.test": "no"}


def test_a_mailbox_with_an_apostrophe_is_suspended_and_resumed(
    mail_server: MailServer, connector: DovecotPostfixConnector, transport: Transport
) -> None:
    box = "o'neil@b.test"
    assert access(mail_server, box, local_to="info@a.test") == OPEN
    deliver(mail_server, box)

    batch = apply(transport, connector, "suspend", {B: [box]})
    (result,) = batch.for_account(B)
    assert result.changed and result.facts[f"added:{box}"] == "dpwibr"
    assert batch.handlers["handler:mail-dovecot"].facts["kicked"] == box
    assert access(mail_server, box, local_to="info@a.test") == SUSPENDED
    assert access(mail_server, "info@b.test", local_to="info@a.test") == OPEN  # the neighbour is untouched
    (status,) = apply(transport, connector, "status", {B: [box]}).for_account(B)
    assert connector.observe(status.facts).state == "suspended"

    again = apply(transport, connector, "suspend", {B: [box]})
    assert [r.changed for r in again.results.values()] == [False]

    apply(transport, connector, "resume", {B: [box]})
    assert access(mail_server, box, local_to="info@a.test") == OPEN
    deliver(mail_server, box)
    assert _locked(mail_server) == []
