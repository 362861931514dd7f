"""The readable (non-JSON) views of one account: ``history`` as a table of its events, ``explain`` as
tables (policy fields with the layer that set each, triggers, decision), and ``show`` with the admin
actions in progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import registry
from connectors.testing import flag_backends, flag_inventory_yaml
from tests.scenarios.harness import POLICY, Arrears, day

ACCOUNTS = [
    {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example", "plan": "gold",
     "resources": {"web": {"host": "web1", "sites": ["acme.example"]}}},
    {"id": "bravo-02", "billing_email": "ap@bravo.example"},
]


@pytest.fixture
def arrears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Arrears:
    monkeypatch.setenv("COLUMNS", "160")  # the tables' width (wide enough that no row wraps)
    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)
    policy = POLICY.replace("{resume}", "true") + "plans:\n  gold: {credit_limit: 10}\n"
    a = Arrears.create(tmp_path / "cfg", policy=policy, accounts=ACCOUNTS)
    (a.folder / "inventory.yaml").write_text(flag_inventory_yaml({"web1": str(tmp_path / "hosts" / "web1")},
                                                                 services=("web",)))
    a.charge("acme-01", 0, "30.00", "inv-1")
    a.charge("bravo-02", 0, "5.00", "inv-2")
    a.run(0)
    return a


def rows(output: str) -> list[list[str]]:
    """The cells of every table row printed (box-drawn by rich), stripped."""
    return [[cell.strip() for cell in line.strip().strip("│┃").split("│")]
            for line in output.splitlines() if line.strip().startswith("│")]


def test_history_prints_a_table_of_the_accounts_events(arrears: Arrears) -> None:
    out = arrears.ok("history", "acme-01").stdout
    assert "history of acme-01" in out
    events = {tuple(r) for r in rows(out)}
    assert ("2026-03-02T08:00:00+00:00", "episode 1 starts (over_limit)") in events
    assert ("2026-03-02T08:00:00+00:00", "charge -30.00 ref inv-1") in events
    assert (day(0), "outstanding_notice (notice) taken") in events
    assert (day(0), "notice outstanding_notice to billing@acme.example: sent") in events
    # in time order, and only this account's events
    times = [r[0] for r in rows(out) if r[0]]
    assert times == sorted(times)
    assert "inv-2" not in out and "bravo" not in out


def test_explain_prints_policy_triggers_and_decision_as_tables(arrears: Arrears) -> None:
    out = arrears.ok("explain", "acme-01", "--at", day(1)).stdout
    assert "{'" not in out and '"policy"' not in out  # not a raw dict
    assert "balance -30.00, in debt; layers: defaults, plan:gold" in out
    cells = rows(out)
    # each policy field with its value and the layer that set it
    assert ["credit_limit", "10", "plan:gold"] in cells
    assert ["currency", "USD", "account"] in cells  # the account's own (the policy's default when imported)
    assert ["triggers.max_delay", "-", "defaults"] in cells
    assert ["stages", "outstanding_notice: notice at once (template outstanding)", "defaults"] in cells
    # the trigger that fired, since when, with its thresholds and inputs
    over = next(r for r in cells if r[0] == "over_limit")
    assert over[1:5] == ["yes", "yes", "2026-03-02T08:00:00+00:00", "credit_limit = 10"]
    assert over[5] == "balance = -30.00"
    assert next(r for r in cells if r[0] == "subzero_period")[1:3] == ["no", "no"]
    # the decision
    assert ["measures due", "none"] in cells
    assert ["next", "pre_suspension (notice) due 2026-03-06T23:00:00+00:00"] in cells
    assert ["next check", "2026-03-06T23:00:00+00:00"] in cells
    assert ["held back", "-"] in cells


def test_explain_shows_the_measures_due_and_what_holds_them_back(arrears: Arrears) -> None:
    out = arrears.ok("explain", "acme-01", "--at", day(5)).stdout
    assert ["measures due", "1"] in rows(out)
    assert any(r[:3] == ["pre_suspension", "notice", "2026-03-06T23:00:00+00:00"] for r in rows(out))
    arrears.ok("exempt", "acme-01", "--until", day(20), "--reason", "key customer", "--at", day(5))
    held = next(r for r in rows(arrears.ok("explain", "acme-01", "--at", day(6)).stdout) if r[0] == "held back")
    assert "exempt" in held[1]


def test_show_lists_the_admin_actions_in_progress(arrears: Arrears) -> None:
    arrears.ok("suspend", "acme-01", "--reason", "abuse [report] 4711", "--actor", "alice", "--at", day(1))
    info = arrears.show("acme-01", 1)
    assert info["manual_actions"] == [{"action": "suspend", "since": day(1), "reason": "abuse [report] 4711"}]
    out = arrears.ok("show", "acme-01", "--at", day(1)).stdout
    assert "admin actions in progress" in out
    assert ["suspend", day(1), "abuse [report] 4711"] in rows(out)
    assert arrears.show("bravo-02", 1)["manual_actions"] == []
    # once the hosts applied it, it is no longer in progress
    assert [t["action"] for t in arrears.run(1)["executor"]["taken"]] == ["suspend"]
    assert arrears.show("acme-01", 1)["manual_actions"] == []
    assert "admin actions in progress" not in arrears.ok("show", "acme-01", "--at", day(1)).stdout
