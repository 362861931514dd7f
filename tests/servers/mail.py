"""Real dovecot and postfix for tests: foreground daemons with their own configuration trees on loopback.

Fixture (registered for the whole suite through ``pytest_plugins`` in tests/conftest.py):

``mail_server``  module-scoped :class:`MailServer`: dovecot with an IMAP, a POP3 and a second
                 ("webmail") IMAP listener and an auth listener for postfix; postfix with SMTP on a free
                 port, SASL through dovecot, and maildir delivery to the virtual mailboxes of
                 :data:`MAILBOXES` in two domains. The arrears deny passdb and postfix access maps are
                 configured as docs/mail.md tells an operator to.

Reloads go through counting wrappers (``mail_server.reloads("postfix")``) so tests can prove one reload
per batch. The tree lives in a world-traversable temporary folder (dovecot's and postfix's own users
read it) removed at the end of the module.
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import poplib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.base import Daemon, free_port, require_binary, wait_for

__all__ = ["IMAP", "MAILBOXES", "POP3", "MailServer", "fresh_source", "imap_login_ok", "mail_server", "pop3_login_ok",
           "start_mail_server"]

_SOURCES = itertools.count()


def fresh_source() -> tuple[str, int]:
    """A fresh loopback source address per mail connection: dovecot delays every login from an address
    with recent failed logins (its auth penalty), and the tests expect many refusals."""
    n = next(_SOURCES)
    return (f"127.0.{n // 250 + 1}.{n % 250 + 1}", 0)


class IMAP(imaplib.IMAP4):
    """imaplib's client, connecting from a fresh source address."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=fresh_source())


class POP3(poplib.POP3):
    """poplib's client, connecting from a fresh source address."""

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=fresh_source())


def imap_login_ok(host: str, port: int, box: str, password: str) -> bool:
    """Whether an IMAP login of ``box`` is accepted on that listener."""
    with IMAP(host, port, timeout=10) as client:
        try:
            client.login(box, password)
        except imaplib.IMAP4.error:
            return False
        client.logout()
        return True


def pop3_login_ok(host: str, port: int, box: str, password: str) -> bool:
    """Whether a POP3 login of ``box`` is accepted."""
    client = POP3(host, port, timeout=10)
    try:
        client.user(box)
        client.pass_(password)
    except poplib.error_proto:
        return False
    finally:
        client.close()
    return True

MAILBOXES: dict[str, str] = {
    "info@a.test": "pw-info-a",
    "sales@a.test": "pw-sales-a",
    "info@b.test": "pw-info-b",
    "o'neil@b.test": "pw-oneil-b",  # an apostrophe is valid in a local part (RFC 5322 atext)
}
DOMAINS = ["a.test", "b.test"]
MAIL_UID = 8  # Debian's "mail" user owns the maildirs

_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def stop_mail(postfix: Daemon | None, postfix_dir: Path, dovecot: Daemon | None, root: Path) -> None:
    """Stop a test's postfix (``postfix stop``, then the daemon), its dovecot, and remove its folder."""
    if postfix is not None and postfix.proc is not None and postfix.proc.poll() is None:
        subprocess.run(["postfix", "-c", str(postfix_dir), "stop"], capture_output=True, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            postfix.proc.wait(timeout=15)
        postfix.stop()
    if dovecot is not None:
        dovecot.stop()
    shutil.rmtree(root, ignore_errors=True)


class MailServer:
    """Configuration trees, ports and helpers of one dovecot+postfix pair."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = "127.0.0.1"
        self.imap_port = free_port()
        self.webmail_port = free_port()
        self.pop3_port = free_port()
        self.auth_port = free_port()
        self.smtp_port = free_port()
        self.deny_dir = root / "arrears" / "deny"
        self.map_dir = root / "arrears" / "postfix"
        self.state_dir = root / "state"
        self.password_lock = root / "arrears" / "password-lock"
        self.mail_dir = root / "mail"
        self.bin_dir = root / "bin"
        self.dovecot_conf = root / "dovecot" / "dovecot.conf"
        self.postfix_dir = root / "postfix"
        self.dovecot_log = root / "dovecot.log"
        self.postfix_log = root / "postfix.log"
        self.dovecot: Daemon | None = None
        self.postfix: Daemon | None = None

    # -- configuration ------------------------------------------------------------------------------

    def _write_dovecot(self) -> None:
        r = self.root
        users = r / "dovecot" / "users"
        users.parent.mkdir(parents=True)
        # dovecot looks %u up in a passwd-file with ' escaped as \' (as in connectors' passwd_key)
        users.write_text("".join(f"{box.replace(chr(39), chr(92) + chr(39))}:{{PLAIN}}{pw}\n"
                                 for box, pw in MAILBOXES.items()))
        users.chmod(0o644)
        (r / "run").mkdir()
        self.dovecot_conf.write_text(f"""\
base_dir = {r}/run
state_dir = {r}/dovecot-state
instance_name = arrears-{r.name}
protocols = imap pop3
listen = 127.0.0.1
log_path = {self.dovecot_log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
# the default set refuses o'neil@b.test; empty allows every character (docs/mail.md)
auth_username_chars =
mail_location = maildir:{self.mail_dir}/%d/%n
first_valid_uid = {MAIL_UID}
# arrears: per-service, per-listener deny lists before the real passdb (docs/mail.md)
passdb {{
  driver = passwd-file
  args = {self.deny_dir}/deny.%s.%{{lport}}
  deny = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={self.mail_dir}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  inet_listener webmail {{
    port = {self.webmail_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}
""")

    def _write_postfix(self) -> None:
        r = self.root
        pf = self.postfix_dir
        pf.mkdir()
        (r / "postfix-queue").mkdir()
        (r / "postfix-data").mkdir()
        shutil.chown(r / "postfix-data", "postfix")
        vmailbox = pf / "vmailbox"
        vmailbox.write_text("".join(f"{box} {box.split('@')[1]}/{box.split('@')[0]}/\n" for box in MAILBOXES))
        self.map_dir.mkdir(parents=True)
        for name in ("bounce", "norelay"):
            (self.map_dir / name).write_text("")
        (pf / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{self.smtp_port}"))
        (pf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {r}/postfix-queue
data_directory = {r}/postfix-data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test
mydomain = mx.test
myorigin = mx.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 192.0.2.1/32
maillog_file_prefixes = {r}
maillog_file = {self.postfix_log}
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
smtpd_error_sleep_time = 0
virtual_mailbox_domains = {' '.join(DOMAINS)}
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = texthash:{vmailbox}
virtual_uid_maps = static:{MAIL_UID}
virtual_gid_maps = static:{MAIL_UID}
virtual_minimum_uid = {MAIL_UID}
default_transport = discard:outside mail is discarded in tests
relay_transport = discard:outside mail is discarded in tests
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{self.auth_port}
# arrears (docs/mail.md): -b and -r
smtpd_restriction_classes = arrears_norelay
arrears_norelay = permit_auth_destination, reject
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
    check_recipient_access hash:{self.map_dir}/bounce,
    check_sasl_access hash:{self.map_dir}/norelay,
    permit_sasl_authenticated,
    reject_unauth_destination
""")
        for name in ("bounce", "norelay"):  # with this instance's main.cf, not the machine's /etc/postfix
            subprocess.run(["postmap", "-c", str(pf), f"hash:{self.map_dir / name}"], check=True, capture_output=True)

    def _write_wrappers(self) -> None:
        """Reload commands that count their calls, then do the real reload."""
        self.bin_dir.mkdir()
        real = {
            "postfix-reload": f"postfix -c {self.postfix_dir} reload",
            "dovecot-reload": f"doveadm -c {self.dovecot_conf} reload",
        }
        for name, cmd in real.items():
            script = self.bin_dir / name
            script.write_text(f"#!/bin/sh\necho x >> {self.bin_dir}/{name}.count\nexec {cmd}\n")
            script.chmod(0o755)

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> MailServer:
        self.root.chmod(0o755)
        self.mail_dir.mkdir()
        shutil.chown(self.mail_dir, MAIL_UID, MAIL_UID)
        self.deny_dir.mkdir(parents=True)
        self._write_dovecot()
        self._write_postfix()
        self._write_wrappers()
        self.dovecot = Daemon("dovecot", ["dovecot", "-F", "-c", str(self.dovecot_conf)], log=self.root / "dovecot.out",
                              ports=[self.imap_port, self.webmail_port, self.pop3_port, self.auth_port]).start()
        self.postfix = Daemon("postfix", ["postfix", "-c", str(self.postfix_dir), "start-fg"],
                              log=self.root / "postfix.out", ports=[self.smtp_port]).start()
        return self

    def stop(self) -> None:
        stop_mail(self.postfix, self.postfix_dir, self.dovecot, self.root)

    # -- helpers for tests --------------------------------------------------------------------------

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings of the dovecot+postfix connector for this server."""
        values: dict[str, Any] = {
            "deny_dir": str(self.deny_dir),
            "imap_ports": [self.imap_port],
            "pop3_ports": [self.pop3_port],
            "webmail_ports": [self.webmail_port],
            "password_lock_file": str(self.password_lock),
            "bounce_map": str(self.map_dir / "bounce"),
            "norelay_map": str(self.map_dir / "norelay"),
            "postmap_command": f"postmap -c {self.postfix_dir}",
            "postfix_reload_command": str(self.bin_dir / "postfix-reload"),
            "dovecot_reload_command": str(self.bin_dir / "dovecot-reload"),
            "kick_command": f"doveadm -c {self.dovecot_conf} kick",
            "state_dir": str(self.state_dir),
            "maildir_template": f"{self.mail_dir}/{{domain}}/{{local}}",
            "mail_roots": [str(self.mail_dir)],
            "archive_dir": str(self.root / "archive"),
            "dovecot_config_dir": str(self.dovecot_conf.parent),
            "postfix_config_dir": str(self.postfix_dir),
        }
        values.update(overrides)
        return values

    def reloads(self, service: str) -> int:
        """How many times the connector's reload command for ``postfix`` or ``dovecot`` ran."""
        counter = self.bin_dir / f"{service}-reload.count"
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    def inbox(self, box: str) -> list[Path]:
        """Every message in the mailbox's INBOX (``new`` and ``cur``: a POP3 or IMAP login moves them)."""
        local, _, dom = box.partition("@")
        folders = [self.mail_dir / dom / local / sub for sub in ("new", "cur")]
        return sorted(p for folder in folders if folder.is_dir() for p in folder.iterdir())

    def wait_delivered(self, box: str, count: int, timeout: float = 20.0) -> None:
        wait_for(lambda: len(self.inbox(box)) >= count, timeout=timeout,
                 what=f"{count} message(s) in {box}", log=self.postfix_log)


def start_mail_server() -> MailServer:
    require_binary("dovecot", "doveadm", "postfix", "postmap")
    root = Path(tempfile.mkdtemp(prefix="arrears-mail-"))
    server = MailServer(root)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="module")
def mail_server() -> Iterator[MailServer]:
    server = start_mail_server()
    try:
        yield server
    finally:
        server.stop()
