"""Admin actions through the CLI: outstanding-balance date, exemption, guaranteed payment, purchase gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios.harness import Arrears, day

ACCOUNT = {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example"}


@pytest.fixture
def arrears(tmp_path: Path) -> Arrears:
    return Arrears.create(tmp_path / "cfg", accounts=[ACCOUNT])


def test_outstanding_balance_date_moves_the_episode_start(arrears: Arrears) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.ok("set-debt-date", "acme-01", "2026-02-20", "--actor", "alice", "--at", day(0, 9))
    arrears.run(0)
    info = arrears.show("acme-01", 0)
    assert info["episode"]["started_at"] == "2026-02-19T23:00:00+00:00"  # midnight in Amsterdam
    assert arrears.json("debtors", "--at", day(1))[0]["days_in_debt"] == 11
    audit = arrears.json("history", "acme-01")["audit"]
    assert any(a["action"] == "override.debt_date" and a["actor"] == "alice" for a in audit)


def test_exemption_holds_measures_back_until_it_expires(arrears: Arrears) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.run(0)
    arrears.ok("exempt", "acme-01", "--until", day(12), "--reason", "key customer", "--at", day(1))
    for n in range(1, 12):
        assert arrears.run(n)["executor"]["taken"] == [], f"day {n}"
    assert "exempt" in arrears.show("acme-01", 11)["held_back"]
    assert [t["stage"] for t in arrears.run(12)["executor"]["taken"]] == ["pre_suspension"]


def test_exemption_needs_a_future_date(arrears: Arrears) -> None:
    assert "is not in the future" in arrears.fails("exempt", "acme-01", "--until", day(0), "--reason", "x",
                                                   "--at", day(1))


def test_guaranteed_payment_lifts_the_limit_for_its_days(arrears: Arrears) -> None:
    arrears.ok("guarantee", "acme-01", "50", "--days", "5", "--at", day(0, 7))
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    assert arrears.run(0)["episodes_started"] == 0
    assert arrears.show("acme-01", 0)["state"] == "active"
    # when the guarantee runs out, the debt counts
    result = arrears.run(6)
    assert result["episodes_started"] == 1
    assert arrears.show("acme-01", 6)["state"] == "debtor"


def test_guarantee_over_the_policy_limit_is_refused(arrears: Arrears) -> None:
    before = arrears.dump()
    assert "over the policy's guaranteed payment limit" in arrears.fails("guarantee", "acme-01", "500")
    assert "--days must be between 1 and the policy's 10 days" in arrears.fails("guarantee", "acme-01", "50",
                                                                                 "--days", "11")
    assert arrears.dump() == before


def test_can_spend_exit_codes_and_json(arrears: Arrears) -> None:
    path = arrears.write("credit.jsonl", [{"account": "acme-01", "at": day(0, 7), "amount": "20.00",
                                           "kind": "payment", "method": "card", "ref": "p-1"}])
    arrears.ok("ledger", "import", str(path))
    ok = arrears.invoke("can-spend", "acme-01", "15", "--at", day(0), "--json")
    assert ok.exit_code == 0
    assert '"allowed": true' in ok.stdout
    no = arrears.invoke("can-spend", "acme-01", "25", "--at", day(0), "--json")
    assert no.exit_code == 1
    assert '"allowed": false' in no.stdout and '"available": "20.00"' in no.stdout


def test_debtors_report_formats(arrears: Arrears) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    arrears.run(0)
    rows = arrears.json("debtors", "--at", day(1))
    assert [(r["account"], r["balance"], r["state"]) for r in rows] == [("acme-01", "-30.00", "debtor")]
    csv_out = arrears.ok("debtors", "--format", "csv", "--at", day(1)).stdout.splitlines()
    assert csv_out[0].startswith("account,username,billing_email")
    assert csv_out[1].startswith("acme-01,acme,billing@acme.example")


def test_explain_names_the_layers(arrears: Arrears) -> None:
    arrears.charge("acme-01", 0, "30.00", "inv-1")
    info = arrears.json("explain", "acme-01", "--at", day(0))
    assert info["sources"]["credit_limit"] == "defaults"
