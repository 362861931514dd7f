"""Drives the ``arrears`` CLI in a temporary config folder, the way an operator would, with ``--at``.

The database is ``--db DB`` when one is given, else the config folder's ``arrears.db``. Every scenario
runs on both backends: tests/scenarios/conftest.py sets :attr:`Arrears.new_database` (one new database
per :meth:`Arrears.create`) from the parametrised ``new_database`` fixture (tests/backends.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from click.testing import CliRunner, Result

from agent.cli import cli
from tests import backends

__all__ = ["POLICY", "Arrears", "day"]

POLICY = """\
timezone: Europe/Amsterdam
defaults:
  currency: USD
  credit_limit: 0
  triggers: {over_limit: true, subzero_period: -1, max_delay: null,
             unpaid_total_over: null, invoice_expiration: null, stop_grace: null, trial: true}
  stages:
    - {name: outstanding_notice, action: notice,  after: null, template: outstanding}
    - {name: pre_suspension,     action: notice,  after: 5,    template: pre_suspension}
    - {name: suspension,         action: suspend, after: 3,    template: suspended}
    - {name: deletion_warning,   action: notice,  after: 14,   template: deletion_warning}
    - {name: deletion,           action: delete,  after: 7,    template: deleted}
  resume_on_payment: {resume}
  pay_with_negative: false
  guaranteed_payment: {limit: 100, days: 10}
notices:
  from_addr: billing@example.net
  company: Example Hosting
  payment_url: https://billing.example.net/pay/{account_id}
  spool_dir: outbox
"""


def day(n: int, hour: int = 10) -> str:
    """Day ``n`` of the timeline (day 0 = 2026-03-02, a Monday) at ``hour`` UTC, as an ISO string."""
    return (datetime(2026, 3, 2, hour, tzinfo=UTC) + timedelta(days=n)).isoformat()


@dataclass
class Arrears:
    folder: Path
    db: str | None = None

    #: Makes the database of each new :class:`Arrears` (its URL), or None for the config folder's own.
    new_database: ClassVar[Callable[[], str | None]] = staticmethod(lambda: None)

    @classmethod
    def create(cls, folder: Path, *, policy: str | None = None, resume: str = "true",
               accounts: Iterable[Mapping[str, Any]] = ()) -> Arrears:
        folder.mkdir(parents=True, exist_ok=True)
        source = policy if policy is not None else POLICY.replace("{resume}", resume)
        (folder / "policy.yaml").write_text(source)
        self = cls(folder, cls.new_database())
        if accounts:
            self.ok("accounts", "import", str(self.write("accounts.jsonl", accounts)))
        return self

    def write(self, name: str, records: Iterable[Mapping[str, Any]]) -> Path:
        path = self.folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    def invoke(self, *args: str) -> Result:
        db = ("--db", self.db) if self.db else ()
        return CliRunner().invoke(cli, ["--config", str(self.folder), *db, *args], catch_exceptions=False,
                                  env={"ARREARS_CONFIG": None, "ARREARS_DB": None, "ARREARS_DEBUG": None})

    def ok(self, *args: str) -> Result:
        result = self.invoke(*args)
        assert result.exit_code == 0, f"arrears {' '.join(args)} exited {result.exit_code}: {result.output}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def fails(self, *args: str, code: int = 2) -> str:
        """Runs a command that must be refused; returns its message (stderr)."""
        result = self.invoke(*args)
        assert result.exit_code == code, f"expected exit {code}, got {result.exit_code}: {result.output}"
        assert "Traceback" not in result.output
        return result.stderr

    def run(self, n: int) -> dict[str, Any]:
        return self.json("run", "--at", day(n))

    def show(self, account: str, n: int) -> dict[str, Any]:
        return self.json("show", account, "--at", day(n))

    def charge(self, account: str, n: int, amount: str, ref: str) -> None:
        path = self.write(f"charge-{ref}.jsonl", [{"account": account, "at": day(n, 8), "amount": f"-{amount}",
                                                  "kind": "charge", "ref": ref}])
        self.ok("ledger", "import", str(path))

    def spool(self) -> list[str]:
        out = self.folder / "outbox"
        return sorted(p.name for p in out.iterdir()) if out.is_dir() else []

    @property
    def url(self) -> str:
        return self.db or backends.sqlite_url(self.folder)

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Read the database directly (what no command shows); ``:name`` parameters."""
        return backends.query(self.url, sql, **params)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (to prove that a refused command wrote nothing)."""
        return backends.dump(self.url)
