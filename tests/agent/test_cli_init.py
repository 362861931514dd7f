"""`arrears init` and the sample data: a fresh folder is ready to import, plan and run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agent.cli import cli

ENV = {"ARREARS_CONFIG": None, "ARREARS_DB": None}


def arrears(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=ENV)
    return result.exit_code, result.stdout, result.stderr


def test_init_writes_the_samples_and_creates_the_database(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    code, out, _ = arrears("init", str(folder), "--json")
    assert code == 0
    info = json.loads(out)
    assert sorted(info["written"]) == ["accounts.jsonl", "inventory.yaml", "invoices.jsonl", "ledger.jsonl",
                                       "policy.yaml"]
    assert (folder / "arrears.db").is_file()
    assert info["database"] == f"sqlite:///{folder / 'arrears.db'}"
    # the operator's edits survive a second init
    (folder / "policy.yaml").write_text((folder / "policy.yaml").read_text() + "# mine\n")
    code, out, _ = arrears("init", str(folder), "--json")
    assert code == 0 and "policy.yaml" in json.loads(out)["kept"]
    assert (folder / "policy.yaml").read_text().endswith("# mine\n")


def test_sample_data_imports_plans_and_runs(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    assert arrears("init", str(folder))[0] == 0
    cfg = ("--config", str(folder))
    for kind, name in (("accounts", "accounts.jsonl"), ("ledger", "ledger.jsonl"), ("invoices", "invoices.jsonl")):
        code, _, err = arrears(*cfg, kind, "import", str(folder / name))
        assert code == 0, err
    code, out, _ = arrears(*cfg, "plan", "--at", "2026-03-02T10:00:00Z", "--json")
    assert code == 0
    due = {(p["account"], p["stage"]) for p in json.loads(out)}
    assert ("acme-01", "outstanding_notice") in due and not any(a == "bravo-02" for a, _ in due)
    code, out, _ = arrears(*cfg, "run", "--at", "2026-03-02T10:00:00Z", "--json")
    assert code == 0
    assert json.loads(out)["executor"]["notices_sent"] >= 1
    assert any((folder / "outbox").iterdir())
    code, out, _ = arrears(*cfg, "debtors", "--at", "2026-03-02T10:00:00Z", "--json")
    assert "acme-01" in {r["account"] for r in json.loads(out)}


def test_help_lists_the_commands() -> None:
    code, out, _ = arrears("--help")
    assert code == 0
    for name in ("init", "accounts", "ledger", "invoices", "payment", "plan", "run", "show", "explain", "forecast",
                 "debtors", "history", "set-debt-date", "exempt", "guarantee", "can-spend"):
        assert name in out
