"""One real fleet per test module for the end-to-end tests, and the ``arrears`` command that drives it.

``fleet`` (module scope) takes the servers of tests/servers (one sshd, nginx, apache2, dovecot+postfix and
an aiosmtpd server that receives the notices) and adds what a hosting customer has on them: one unix user
per account of :data:`SLOTS` with a home dir and an SSH key, one site on both web servers, one mailbox with
a message in it. A module may give it other web servers by defining its own ``nginx_server`` and
``apache_server`` fixtures (test_lifecycle.py: Debian's stock trees, made ready by ``arrears hosts prepare``).
Every inventory host reaches this machine through the same test sshd:

==========  ===========================================
host        services
==========  ===========================================
web-nginx   web (nginx), login (unix), home (archive)
web-apache  web (apache)
mail        mail (dovecot-postfix)
==========  ===========================================

``fleet.config(folder, accounts)`` writes a configuration folder (inventory.yaml, policy.yaml with short
stages, one day apart, and notices over SMTP, accounts.jsonl), imports the accounts and returns an
:class:`Arrears` that runs the real ``arrears`` command in a subprocess with ``--config`` and ``--at``.
The fleet's methods are real clients: HTTP, IMAP, POP3, SMTP and SSH logins as the account's user.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from tests.servers.base import require_binary, wait_for
from tests.servers.mail import MAILBOXES, MailServer, fresh_source, imap_login_ok, pop3_login_ok
from tests.servers.smtp import SmtpServer
from tests.servers.sshd import SshdServer
from tests.servers.web import WebServer

__all__ = ["FROM_ADDR", "MESSAGE_DOMAIN", "SLOTS", "SUSPENDED_URL", "Arrears", "Fleet", "Slot", "User", "body_text",
           "day", "eventually", "fleet"]

SUSPENDED_URL = "http://billing.hosting.test/suspended.html"
FROM_ADDR = "billing@hosting.test"
MESSAGE_DOMAIN = "hosting.test"
OUTSIDE = "someone@outside.test"
SERVICES = ("web", "mail", "login", "home")
START = datetime(2026, 3, 2, 10, tzinfo=UTC)  # day 0 of every timeline (a Monday)


def day(n: int, hour: int = 10, minute: int = 0) -> str:
    """Day ``n`` of the timeline at ``hour:minute`` UTC, as the ISO string ``--at`` takes."""
    return (START + timedelta(days=n, hours=hour - 10, minutes=minute)).isoformat()


@dataclass(frozen=True)
class Slot:
    """What one account owns on the fleet (its site exists on both web servers)."""

    id: str
    site: str
    mailbox: str
    currency: str
    billing_email: str


SLOTS: dict[str, Slot] = {
    "acct-1": Slot("acct-1", "a1.test", "info@a.test", "EUR", "billing-1@customer.test"),
    "acct-2": Slot("acct-2", "b1.test", "sales@a.test", "USD", "billing-2@customer.test"),
    "acct-3": Slot("acct-3", "b2.test", "info@b.test", "GBP", "billing-3@customer.test"),
}

POLICY = """\
timezone: UTC
defaults:
  currency: USD
  credit_limit: 0
  triggers: {{over_limit: true, subzero_period: -1, max_delay: null,
             unpaid_total_over: null, invoice_expiration: null, stop_grace: null, trial: true}}
  stages:
    - {{name: outstanding_notice, action: notice,  after: null, template: outstanding}}
    - {{name: pre_suspension,     action: notice,  after: 1,    template: pre_suspension}}
    - {{name: suspension,         action: suspend, after: 1,    template: suspended}}
    - {{name: deletion_warning,   action: notice,  after: 1,    template: deletion_warning}}
    - {{name: deletion,           action: delete,  after: 1,    template: deleted}}
  resume_on_payment: [card]
  pay_with_negative: false
  guaranteed_payment: {{limit: 100, days: 7}}
notices:
  from_addr: {from_addr}
  company: Test Hosting
  payment_url: https://billing.hosting.test/pay/{{account_id}}
  support_email: support@hosting.test
  smtp: {{host: {smtp_host}, port: {smtp_port}, timeout: 10, helo: agent.hosting.test}}
agent:
  lease_seconds: 600
  backoff_seconds: 60
  backoff_max_seconds: 3600
  max_attempts: 8
  recheck_seconds: 300
"""


# -- the arrears command --------------------------------------------------------------------------------


def _arrears_executable() -> str:
    beside = Path(sys.executable).with_name("arrears")
    found = str(beside) if beside.exists() else shutil.which("arrears")
    if found is None:
        pytest.fail("the arrears command is not installed (pip install -e '.[test]')")
    return found


@dataclass
class Arrears:
    """The real ``arrears`` command on one configuration folder (its database is ``arrears.db`` there)."""

    folder: Path

    def invoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("ARREARS_CONFIG", "ARREARS_DB", "ARREARS_DEBUG")}
        return subprocess.run([_arrears_executable(), "--config", str(self.folder), *args], capture_output=True,
                              text=True, env=env, timeout=300, check=False, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> str:
        result = self.invoke(*args)
        assert result.returncode == 0, (f"arrears {' '.join(args)} exited {result.returncode}:\n"
                                        f"{result.stdout}\n{result.stderr}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def run(self, n: int, hour: int = 10, minute: int = 0) -> dict[str, Any]:
        """``arrears run --at`` day ``n``; the run's JSON summary."""
        result: dict[str, Any] = self.json("run", "--at", day(n, hour, minute))
        return result

    def show(self, account: str, n: int, hour: int = 10, minute: int = 0) -> dict[str, Any]:
        result: dict[str, Any] = self.json("show", account, "--at", day(n, hour, minute))
        return result

    def write(self, name: str, records: Sequence[Mapping[str, Any]]) -> Path:
        path = self.folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    def charge(self, account: str, n: int, amount: str, ref: str) -> None:
        """Billing's ledger import: a charge of ``amount`` at 08:00 on day ``n``."""
        path = self.write(f"ledger-{ref}.jsonl", [{"account": account, "at": day(n, 8), "amount": f"-{amount}",
                                                  "kind": "charge", "ref": ref}])
        self.ok("ledger", "import", str(path))

    def placement_state(self, account: str, service: str, host: str) -> dict[str, Any]:
        """The facts the agent recorded for one placement (e.g. the archive and sha256 of a deletion)."""
        con = sqlite3.connect(self.folder / "arrears.db")
        try:
            row = con.execute("select state from placements where account = ? and service = ? and host = ?",
                              (account, service, host)).fetchone()
        finally:
            con.close()
        assert row is not None, f"no placement {service}@{host} for {account}"
        state: dict[str, Any] = json.loads(row[0]) if isinstance(row[0], str) else dict(row[0] or {})
        return state


# -- the fleet ------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class User:
    """A customer's unix user: it logs in over SSH with ``key`` and owns ``home``."""

    name: str
    key: Path
    home: Path


class Fleet:
    """The running servers, the customers' users, and real clients for each service."""

    def __init__(self, root: Path, sshd: SshdServer, nginx: WebServer, apache: WebServer, mail: MailServer,
                 smtp: SmtpServer, users: dict[str, User]) -> None:
        self.root = root
        self.sshd = sshd
        self.web = {"nginx": nginx, "apache": apache}
        self.mail = mail
        self.smtp = smtp
        self.users = users
        self.homes = root / "homes"
        self.state_dir = root / "state"
        self.archive_dir = root / "archive"

    # -- configuration ----------------------------------------------------------------------------------

    def _web_service(self, backend: str) -> dict[str, Any]:
        server = self.web[backend]
        return {"backend": backend, "hook_dir": str(server.hook_dir), "vhost_dir": str(server.vhost_dir),
                "enabled_dir": str(server.enabled_dir), "vhost_name": "{site}.conf",
                "state_dir": str(server.state_dir), "archive_dir": str(self.archive_dir / backend),
                "mode": "redirect", "suspended_url": SUSPENDED_URL,
                "config_test": server.config_test, "reload": server.reload}

    def inventory(self, ports: Mapping[str, int] | None = None) -> dict[str, Any]:
        """inventory.yaml as data; ``ports`` gives a host another SSH port (a closed one: unreachable)."""
        ports = ports or {}
        hosts: dict[str, Any] = {
            "web-nginx": {"services": {
                "web": self._web_service("nginx"),
                "login": {"backend": "unix", "state_dir": str(self.state_dir)},
                "home": {"backend": "archive", "roots": [str(self.homes)],
                         "archive_dir": str(self.archive_dir / "home"), "state_dir": str(self.state_dir)},
            }},
            "web-apache": {"services": {"web": self._web_service("apache")}},
            "mail": {"services": {"mail": {"backend": "dovecot-postfix", **self.mail.settings()}}},
        }
        for name, host in hosts.items():
            host.update(transport="ssh", address=self.sshd.host, port=ports.get(name, self.sshd.port))
        return {
            "defaults": {"parallel": 4, "connect_timeout": 5, "retries": 2, "retry_max_time": 5,
                         "batch_timeout": 120, "state_dir": str(self.state_dir), "user": "root",
                         "key": str(self.sshd.client_key), "known_hosts": str(self.sshd.known_hosts)},
            "hosts": hosts,
        }

    def write_inventory(self, folder: Path, ports: Mapping[str, int] | None = None) -> None:
        (folder / "inventory.yaml").write_text(yaml.safe_dump(self.inventory(ports), sort_keys=False))

    def policy(self) -> str:
        return POLICY.format(from_addr=FROM_ADDR, smtp_host=self.smtp.host, smtp_port=self.smtp.port)

    def account(self, account: str, services: Sequence[str] = SERVICES) -> dict[str, Any]:
        """The accounts.jsonl record of one account of :data:`SLOTS` with resources for ``services``."""
        slot, user = SLOTS[account], self.users[account]
        resources: dict[str, Any] = {
            "web": [{"host": "web-nginx", "sites": [slot.site]}, {"host": "web-apache", "sites": [slot.site]}],
            "mail": {"host": "mail", "mailboxes": [slot.mailbox]},
            "login": {"host": "web-nginx", "user": user.name},
            "home": {"host": "web-nginx", "path": str(user.home)},
        }
        return {"id": account, "username": user.name, "billing_email": slot.billing_email,
                "currency": slot.currency, "resources": {s: resources[s] for s in services}}

    def config(self, folder: Path, accounts: Sequence[Mapping[str, Any]],
               ports: Mapping[str, int] | None = None) -> Arrears:
        """A configuration folder for ``accounts``, imported into its new database."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "policy.yaml").write_text(self.policy())
        self.write_inventory(folder, ports)
        arrears = Arrears(folder)
        arrears.ok("accounts", "import", str(arrears.write("accounts.jsonl", accounts)))
        return arrears

    # -- web --------------------------------------------------------------------------------------------

    def get(self, backend: str, site: str, path: str = "/") -> tuple[int, str, str | None]:
        """(status, body, Location) of one request for ``site`` on one web server, redirects not followed."""
        r = self.web[backend].get(site, path)
        return r.status_code, r.text, r.headers.get("location")

    def serves_own_content(self, backend: str, site: str, path: str = "/") -> bool:
        status, body, _ = self.get(backend, site, path)
        return status == 200 and site in body

    def redirected(self, backend: str, site: str, path: str = "/") -> bool:
        status, _, location = self.get(backend, site, path)
        return status == 302 and location == SUSPENDED_URL

    def vhost_snapshot(self) -> dict[str, str]:
        """Every vhost file's sha256 and every sites-enabled link of both web servers."""
        snap: dict[str, str] = {}
        for server in self.web.values():
            for p in server.vhost_files():
                snap[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            for name, target in server.enabled_links().items():
                snap[f"{server.enabled_dir}/{name}"] = target
        return snap

    # -- mail -------------------------------------------------------------------------------------------

    def imap_ok(self, box: str, *, webmail: bool = False) -> bool:
        port = self.mail.webmail_port if webmail else self.mail.imap_port
        return imap_login_ok(self.mail.host, port, box, MAILBOXES[box])

    def pop3_ok(self, box: str) -> bool:
        return pop3_login_ok(self.mail.host, self.mail.pop3_port, box, MAILBOXES[box])

    def incoming(self, box: str) -> int:
        """The SMTP answer an outside sender gets to ``RCPT TO:<box>`` (nothing is sent)."""
        with smtplib.SMTP(self.mail.host, self.mail.smtp_port, local_hostname="client.test", timeout=10,
                          source_address=fresh_source()) as client:
            client.ehlo()
            client.mail(OUTSIDE)
            code, _ = client.rcpt(box)
            client.rset()
            return code

    def deliver(self, box: str) -> None:
        """An outside sender's message to ``box``, waited for in its maildir."""
        before = len(self.mail.inbox(box))
        with smtplib.SMTP(self.mail.host, self.mail.smtp_port, local_hostname="client.test", timeout=10) as client:
            client.sendmail(OUTSIDE, [box], f"From: {OUTSIDE}\r\nTo: {box}\r\nSubject: hello\r\n\r\nhello\r\n")
        self.mail.wait_delivered(box, before + 1)

    def mail_access(self, box: str) -> dict[str, bool]:
        """What the mailbox's owner and an outside sender may do (True = allowed)."""
        return {"imap": self.imap_ok(box), "webmail": self.imap_ok(box, webmail=True), "pop3": self.pop3_ok(box),
                "incoming": self.incoming(box) == 250}

    # -- login ------------------------------------------------------------------------------------------

    def ssh_login(self, account: str) -> str | None:
        """``id -un`` over an SSH login as the account's unix user; None when the login is refused."""
        user = self.users[account]
        client = paramiko.SSHClient()
        client.get_host_keys().load(str(self.sshd.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.sshd.host, port=self.sshd.port, username=user.name, key_filename=str(user.key),
                           allow_agent=False, look_for_keys=False, timeout=5, banner_timeout=5, auth_timeout=5)
        except paramiko.AuthenticationException:
            return None
        try:
            _, out, _ = client.exec_command("id -un", timeout=10)
            return str(out.read().decode().strip())
        finally:
            client.close()

    # -- notices ----------------------------------------------------------------------------------------

    def notices(self, to: str) -> list[EmailMessage]:
        """Every notice the SMTP server accepted for ``to``, oldest first (the envelope must name only it)."""
        with self.smtp.lock:
            received = list(self.smtp.messages)
        out = []
        for r in received:
            if to in r.rcpt_tos:
                assert r.rcpt_tos == (to,), f"a notice to {to} also went to {r.rcpt_tos}"
                out.append(r.message)
        return out


def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` (a reloaded server's old workers may answer a request or two the old way)."""
    wait_for(check, timeout=timeout, what=what)


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the notice has no text part"
    return str(part.get_content())


# -- setting the fleet up -------------------------------------------------------------------------------


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def _remove_user(name: str) -> None:
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, check=False)
    Path("/var/spool/cron/crontabs", name).unlink(missing_ok=True)
    subprocess.run(["userdel", "--force", "--remove", name], capture_output=True, check=False)


def _make_user(sshd: SshdServer, homes: Path, account: str) -> User:
    name = f"e2e{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}"
    home = homes / name
    # '*' rather than the default '!': with UsePAM no, sshd refuses key logins to a locked password
    _run("useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--password", "*", name)
    (home / "public_html").mkdir()
    (home / "public_html" / "index.html").write_text(f"<h1>{account}</h1>\n")
    (home / "notes.txt").write_text(f"the files of {account}\n")
    pw = subprocess.run(["getent", "passwd", name], capture_output=True, text=True, check=True).stdout.split(":")
    for p in [home, *home.rglob("*")]:
        os.lchown(p, int(pw[2]), int(pw[3]))
    return User(name=name, key=sshd.add_user_key(name), home=home)


@pytest.fixture(scope="module")
def fleet(sshd: SshdServer, nginx_server: WebServer, apache_server: WebServer, mail_server: MailServer,
          smtp_server: SmtpServer) -> Iterator[Fleet]:
    """The module's servers plus the customers of :data:`SLOTS`: unix users, home dirs, mailboxes with mail."""
    require_binary("useradd", "userdel", "usermod", "getent", "pkill", "tar", "gzip", "sha256sum", "realpath")
    root = Path(tempfile.mkdtemp(prefix="arrears-e2e-"))
    root.chmod(0o755)
    (root / "homes").mkdir(mode=0o755)
    users: dict[str, User] = {}
    try:
        for account in SLOTS:
            users[account] = _make_user(sshd, root / "homes", account)
        fleet = Fleet(root, sshd, nginx_server, apache_server, mail_server, smtp_server, users)
        for slot in SLOTS.values():
            fleet.deliver(slot.mailbox)  # every mailbox has a maildir with a message in it
        yield fleet
    finally:
        for user in users.values():
            _remove_user(user.name)
        shutil.rmtree(root, ignore_errors=True)
