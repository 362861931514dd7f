"""Billing's and the hosts' text printed literally in every human output: Rich markup (``[/bold]``,
``[link=...]``, ``[emerg]``) is shown as written, control characters (``ESC c`` resets a terminal,
``ESC [8m`` hides text) are shown as escapes, and the CSV report cannot carry a spreadsheet formula.

The accounts are imported through the CLI with such usernames, plans, resellers and refs; a host job of the
fake fleet (connectors/testing.py) fails with an error made of the same text, as nginx's would be."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from agent.imports import parse_instant
from agent.service import Arrears as Service
from connectors.testing import FakeFleet
from tests.scenarios.harness import POLICY, Arrears, day

HOSTILE = "[/bold][link=https://evil.example]pay here[/link] [emerg] \x1bc\x1b[8mhidden\x07:smile:"
SHOWN = "[/bold][link=https://evil.example]pay here[/link] [emerg] \\x1bc\\x1b[8mhidden\\x07:smile:"
JOB_ERROR = f'nginx: [emerg] unknown directive "x" in [/etc/nginx/x]:3 {HOSTILE}'
FORMULA = '=HYPERLINK("https://evil.example","refund")'

ACCOUNTS: list[dict[str, Any]] = [
    {"id": "evil-01", "username": HOSTILE, "billing_email": "billing@evil.example", "plan": HOSTILE,
     "reseller": HOSTILE, "resources": {"web": {"host": "web1", "sites": ["evil.example"]}}},
    {"id": "csv-02", "username": FORMULA, "billing_email": "ap@csv.example", "plan": "+1", "reseller": "@SUM(A1)"},
]


@pytest.fixture
def arrears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Arrears:
    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no table cell is folded
    a = Arrears.create(tmp_path / "cfg", policy=POLICY.replace("{resume}", "true"), accounts=ACCOUNTS)
    a.ok("ledger", "import", str(a.write("ledger.jsonl", [
        {"account": "evil-01", "at": day(0, 8), "amount": "-30.00", "kind": "charge", "ref": HOSTILE},
        {"account": "csv-02", "at": day(0, 8), "amount": "-12.50", "kind": "charge", "ref": "-2+3+cmd"}])))
    fleet = FakeFleet()
    fleet.fail_job("evil-01", JOB_ERROR)
    with Service.open(a.folder, db=a.db, fleet=fleet) as svc:
        for n in (0, 5, 8):
            svc.run(now=parse_instant(day(n)))
    return a


def _printed(arrears: Arrears, *args: str) -> str:
    result = arrears.invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout + result.stderr


@pytest.mark.parametrize("args, shows", [
    (("show", "evil-01", "--at", day(8)), [SHOWN, JOB_ERROR.replace(HOSTILE, SHOWN)]),
    (("accounts", "list"), [SHOWN]),
    (("history", "evil-01"), [f"ref {SHOWN}"]),
    (("debtors", "--at", day(8)), ["evil-01", "csv-02"]),
    (("status",), ["accounts:"]),
    (("explain", "evil-01", "--at", day(8)), ["evil-01 at "]),
    (("forecast", "--at", day(8)), ["evil-01"]),
], ids=["show", "accounts-list", "history", "debtors", "status", "explain", "forecast"])
def test_data_and_job_errors_print_literally(arrears: Arrears, args: tuple[str, ...], shows: list[str]) -> None:
    out = _printed(arrears, *args)
    for text in shows:
        assert text in out, out
    # no control character reaches the terminal, markup and emoji codes are not interpreted
    assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in out), repr(out)
    assert "😄" not in out


def test_run_prints_the_job_errors_it_meets_literally(arrears: Arrears, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.service.running

    fleet = FakeFleet()  # the hosts of this run, as the fake fleet: the same failure again
    fleet.fail_job("evil-01", JOB_ERROR)
    monkeypatch.setattr(agent.service.running, "LazyFleet", lambda svc: fleet)
    result = arrears.invoke("run", "--at", day(12))
    assert result.exit_code == 0, result.output
    assert fleet.jobs, "the run retried the suspension on the hosts"
    assert "warning: evil-01:" in result.stderr and JOB_ERROR.replace(HOSTILE, SHOWN) in result.stderr
    assert "\x1b" not in result.stdout + result.stderr


def test_show_prints_a_job_error_with_a_path_in_brackets(arrears: Arrears) -> None:
    out = _printed(arrears, "show", "evil-01", "--at", day(8))
    assert "; last error: evil-01:web:suspend: " + JOB_ERROR.replace(HOSTILE, SHOWN) + "\n" in out
    assert "in [/etc/nginx/x]:3" in out


def test_the_csv_report_neutralises_formulas_and_keeps_numbers(arrears: Arrears) -> None:
    out = arrears.ok("debtors", "--format", "csv", "--at", day(8)).stdout
    rows = {r["account"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["csv-02"]["username"] == "'" + FORMULA
    assert rows["csv-02"]["plan"] == "'+1"
    assert rows["csv-02"]["reseller"] == "'@SUM(A1)"
    # a negative balance in a numeric column stays a readable number
    assert rows["csv-02"]["balance"] == "-12.50"
    assert rows["evil-01"]["balance"] == "-30.00"
    assert rows["evil-01"]["username"] == HOSTILE  # not a formula: CSV is data, kept exact (ESC [8m too)


def test_json_output_stays_exact(arrears: Arrears) -> None:
    info = arrears.json("show", "evil-01", "--at", day(8))
    assert info["username"] == HOSTILE
    assert info["jobs"]["web1"]["last_error"].endswith(JOB_ERROR)
