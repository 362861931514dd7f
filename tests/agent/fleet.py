"""A local test fleet for the agent's robustness tests, and the ``arrears`` command that drives it.

:func:`build_fleet` lays out the demo's two hosts (``web1``: nginx sites and homes, ``mail1``: dovecot and
postfix mailboxes, all as files, transport ``local``) for a few accounts, writes policy.yaml (suspension as
the first stage, so an account in debt is suspended on its first run) and inventory.yaml, and imports the
accounts with their debt. nginx's reload on ``web1`` goes through a :class:`Gate`: a shell script that
records each call and then waits until the test opens the gate, so a test can stop or kill the agent
exactly while a host batch is in flight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from agent.demo import DemoAccount, account_line, demo_inventory, demo_policy, host_dirs, lay_out_host_files
from tests import backends
from tests.servers.base import wait_for

__all__ = ["FROM_ADDR", "Arrears", "Gate", "LocalFleet", "build_fleet", "debtor"]

FROM_ADDR = "billing@hosting.test"

_STAGES = [
    {"name": "suspension", "action": "suspend", "after": None, "template": "suspended"},
    {"name": "deletion_warning", "action": "notice", "after": 30, "template": "deletion_warning"},
    {"name": "deletion", "action": "delete", "after": 30, "template": "deleted"},
]


def debtor(account_id: str, username: str) -> DemoAccount:
    """An account of the test fleet (its site ``USERNAME.example``, mailbox ``info@USERNAME.example``)."""
    return DemoAccount(account_id, username, "test account", ())


class Gate:
    """nginx's reload command on ``web1``: appends a line to ``calls`` and waits while the gate is closed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.calls_file = folder / "calls"
        self.open_file = folder / "open"
        self.script = folder / "reload.sh"
        self.script.write_text(
            "#!/bin/sh\n"
            f"echo \"$$\" >> '{self.calls_file}'\n"
            f"while [ ! -e '{self.open_file}' ]; do sleep 0.02; done\n"
        )
        self.open()

    @property
    def command(self) -> list[str]:
        return ["sh", str(self.script)]

    @property
    def calls(self) -> int:
        return len(self.calls_file.read_text().split()) if self.calls_file.exists() else 0

    def open(self) -> None:
        self.open_file.touch()

    def close(self) -> None:
        self.open_file.unlink(missing_ok=True)

    def wait_calls(self, n: int, timeout: float = 30.0) -> None:
        """Wait until the reload was entered ``n`` times in all (a host batch is in flight)."""
        wait_for(lambda: self.calls >= n, timeout=timeout, what=f"nginx reload entered {n} times")


def _arrears_argv() -> list[str]:
    return [sys.executable, "-m", "agent.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("ARREARS_CONFIG", "ARREARS_DB", "ARREARS_DEBUG")}


@dataclass
class Arrears:
    """The real ``arrears`` command on one configuration folder, on the database ``db`` (a URL), else on the
    folder's ``arrears.db``."""

    folder: Path
    db: str | None = None

    @property
    def url(self) -> str:
        return self.db or backends.sqlite_url(self.folder)

    def argv(self, *args: str) -> list[str]:
        return [*_arrears_argv(), "--config", str(self.folder), *(("--db", self.db) if self.db else ()), *args]

    def invoke(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=_env(), timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> str:
        result = self.invoke(*args)
        assert result.returncode == 0, (f"arrears {' '.join(args)} exited {result.returncode}:\n"
                                        f"{result.stdout}\n{result.stderr}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start ``arrears ARGS`` in the background (its own session), output to ``log``."""
        with log.open("ab") as out:
            return subprocess.Popen(self.argv(*args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_env(), start_new_session=True)

    def show(self, account: str, at: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.json("show", account, *(("--at", at) if at else ()))
        return result

    def query(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        """Read the database directly (what no command shows, e.g. claimed jobs); ``:name`` parameters."""
        return backends.query(self.url, sql, **params)

    def job_statuses(self, account: str | None = None) -> dict[str, int]:
        where = "where account = :account" if account else ""
        return dict(self.query(f"select status, count(*) from jobs {where} group by status", account=account))


@dataclass
class LocalFleet:
    """The configuration folder, its hosts and the gate on nginx's reload."""

    folder: Path
    accounts: list[DemoAccount]
    gate: Gate
    arrears: Arrears

    @property
    def web(self) -> Path:
        return host_dirs(self.folder)["web1"]

    @property
    def mail(self) -> Path:
        return host_dirs(self.folder)["mail1"]

    def snippet(self, acc: DemoAccount) -> Path:
        """The include snippet that redirects a suspended site."""
        return self.web / "etc/nginx/arrears.d" / f"{acc.site}.conf"

    def mail_flags(self, acc: DemoAccount) -> dict[str, int]:
        """How often the mailbox is listed in each of the mail host's deny files."""
        return {p.name: p.read_text().split().count(acc.mailbox)
                for p in sorted((self.mail / "etc/dovecot/arrears").glob("deny.*"))
                if acc.mailbox in p.read_text().split()}

    def host_suspended(self, acc: DemoAccount) -> bool:
        """Both hosts show the account suspended: the site's snippet exists, its mailbox is restricted."""
        return self.snippet(acc).exists() and bool(self.mail_flags(acc))

    def host_untouched(self, acc: DemoAccount) -> bool:
        return not self.snippet(acc).exists() and not self.mail_flags(acc)


def build_fleet(folder: Path, accounts: Sequence[DemoAccount], *, notices: dict[str, Any], debt_at: datetime,
                debt: str = "-50.00", db: str | None = None) -> LocalFleet:
    """Write the configuration and hosts under ``folder`` and import ``accounts``, each with a charge of
    ``debt`` at ``debt_at``. ``notices`` is policy.yaml's ``notices:`` section (``smtp`` or ``spool_dir``);
    ``db`` the database's URL (default: the folder's ``arrears.db``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cast = list(accounts)
    gate = Gate(folder / "gate")
    policy = demo_policy()
    policy["timezone"] = "UTC"
    policy["defaults"]["stages"] = _STAGES
    policy["notices"] = {"from_addr": FROM_ADDR, "company": "Test Hosting",
                         "payment_url": "https://billing.hosting.test/pay/{account_id}", **notices}
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    (folder / "inventory.yaml").write_text(yaml.safe_dump(demo_inventory(folder, web_reload=gate.command),
                                                          sort_keys=False))
    lay_out_host_files(folder, cast)
    billing = folder / "billing"
    billing.mkdir(exist_ok=True)
    (billing / "accounts.jsonl").write_text("".join(json.dumps(account_line(folder, a)) + "\n" for a in cast))
    at = debt_at.isoformat()
    (billing / "ledger.jsonl").write_text("".join(
        json.dumps({"account": a.id, "at": at, "amount": debt, "kind": "charge", "ref": f"debt-{a.id}"}) + "\n"
        for a in cast))
    arrears = Arrears(folder, db)
    arrears.ok("accounts", "import", str(billing / "accounts.jsonl"))
    arrears.ok("ledger", "import", str(billing / "ledger.jsonl"))
    return LocalFleet(folder, cast, gate, arrears)

