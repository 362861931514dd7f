"""The H-Sphere debtor timeline replayed day by day through the CLI with ``--at``.

An account goes into debt, gets the outstanding-balance notice at once, the pre-suspension notice 5
days later, is suspended 3 days after that (with its suspension notice), gets the deletion warning
14 days later and is deleted 7 days after that. Payments by card resume; a cheque does not when
``resume_on_payment: [card]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scenarios.harness import POLICY, Arrears, day

ACCOUNT = {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example", "plan": "basic"}


@pytest.fixture
def arrears(tmp_path: Path) -> Arrears:
    a = Arrears.create(tmp_path / "cfg", accounts=[ACCOUNT])
    a.charge("acme-01", 0, "30.00", "inv-1")
    return a


def taken(result: dict) -> list[str]:
    return [t["stage"] for t in result["executor"]["taken"]]


def test_full_timeline_each_stage_on_its_day(arrears: Arrears) -> None:
    expected = {0: ["outstanding_notice"], 5: ["pre_suspension"], 8: ["suspension"], 22: ["deletion_warning"],
                29: ["deletion"]}
    for n in range(0, 31):
        assert taken(arrears.run(n)) == expected.get(n, []), f"day {n}"
        if n == 0:
            info = arrears.show("acme-01", 0)
            assert info["state"] == "debtor"
            assert info["balance"] == "-30.00"
            assert info["episode"]["trigger"] == "over_limit"
            assert [s["stage"] for s in info["stages_taken"]] == ["outstanding_notice"]
            assert info["next"] == {"stage": "pre_suspension", "action": "notice",
                                    "due_at": "2026-03-06T23:00:00+00:00"}
        if n == 8:
            info = arrears.show("acme-01", 8)
            assert info["state"] == "suspended"
            assert info["holds"] == ["debt"]
            assert info["stages_taken"][-1] == {"stage": "suspension", "at": day(8)}
    info = arrears.show("acme-01", 30)
    assert info["state"] == "deleted"
    assert [s["stage"] for s in info["stages_taken"]] == [
        "outstanding_notice", "pre_suspension", "suspension", "deletion_warning", "deletion"]
    # every notice went out once, the suspension's and the deletion's after the measure took effect
    assert arrears.spool() == sorted(f"acme-01:1:{s}.eml" for s in (
        "outstanding_notice", "pre_suspension", "suspension", "deletion_warning", "deletion"))
    history = arrears.json("history", "acme-01")
    assert [st["status"] for st in history["episodes"][0]["stages"]] == ["taken"] * 5


def test_notice_carries_the_amount_and_goes_to_the_billing_address(arrears: Arrears) -> None:
    arrears.run(0)
    eml = (arrears.folder / "outbox" / "acme-01:1:outstanding_notice.eml").read_text()
    assert "To: billing@acme.example" in eml
    assert "30.00" in eml
    assert "Message-ID: <" in eml


def test_a_missed_tick_catches_up(arrears: Arrears) -> None:
    arrears.run(0)
    # nobody ran the agent for 9 days: the overdue pre-suspension notice goes out on the next run, and
    # the suspension counts its 3 days from the day that notice was actually sent
    assert taken(arrears.run(9)) == ["pre_suspension"]
    assert arrears.show("acme-01", 9)["next"]["due_at"] == "2026-03-13T23:00:00+00:00"
    assert taken(arrears.run(11)) == []
    assert taken(arrears.run(12)) == ["suspension"]
    assert arrears.show("acme-01", 12)["state"] == "suspended"


def test_plan_shows_what_run_would_do_and_changes_nothing(arrears: Arrears) -> None:
    arrears.run(0)
    before = arrears.dump()
    plan = arrears.json("plan", "--at", day(5))
    assert [(p["account"], p["stage"], p["action"]) for p in plan] == [("acme-01", "pre_suspension", "notice")]
    assert plan[0]["due_at"] == "2026-03-06T23:00:00+00:00"
    assert "after" in plan[0]["reason"]
    assert arrears.dump() == before
    assert arrears.json("plan", "--at", day(4)) == []


def test_forecast_lists_every_measure_to_come(arrears: Arrears) -> None:
    arrears.run(0)
    items = arrears.json("forecast", "--days", "40", "--at", day(1))
    assert [i["stage"] for i in items] == ["pre_suspension", "suspension", "deletion_warning", "deletion"]
    assert {"account", "stage", "action", "due_at", "reason"} <= set(items[0])


def test_card_payment_mid_way_resumes(arrears: Arrears) -> None:
    for n in (0, 5, 8):
        arrears.run(n)
    assert arrears.show("acme-01", 8)["state"] == "suspended"
    arrears.ok("payment", "acme-01", "30.00", "--method", "card", "--at", day(10, 9))
    result = arrears.run(10)
    assert result["resumes"] == ["acme-01"]
    info = arrears.show("acme-01", 10)
    assert info["state"] == "active"
    assert info["holds"] == []
    assert info["episode"] is None
    assert info["next"] is None
    # nothing more happens to a paid account
    assert taken(arrears.run(30)) == []


def test_partial_payment_changes_nothing(arrears: Arrears) -> None:
    arrears.run(0)
    arrears.ok("payment", "acme-01", "10.00", "--at", day(3))
    arrears.run(3)
    assert taken(arrears.run(5)) == ["pre_suspension"]
    assert arrears.show("acme-01", 5)["balance"] == "-20.00"


def test_payment_before_suspension_ends_the_episode(arrears: Arrears) -> None:
    arrears.run(0)
    arrears.ok("payment", "acme-01", "30", "--at", day(2))
    arrears.run(2)
    info = arrears.show("acme-01", 2)
    assert info["state"] == "active" and info["episode"] is None
    assert taken(arrears.run(8)) == []


def test_cheque_does_not_resume_when_only_card_does(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path / "cfg", resume="[card]", accounts=[ACCOUNT])
    a.charge("acme-01", 0, "30.00", "inv-1")
    for n in (0, 5, 8):
        a.run(n)
    a.ok("payment", "acme-01", "30.00", "--method", "check", "--at", day(9))
    result = a.run(9)
    assert result["resumes"] == []
    info = a.show("acme-01", 9)
    assert info["state"] == "suspended"
    assert info["holds"] == ["debt"]
    assert info["balance"] == "0.00"
    assert "card" in (info["held_back"] or "")


def test_repeated_ledger_import_does_nothing(arrears: Arrears) -> None:
    path = arrears.write("ledger.jsonl", [
        {"account": "acme-01", "at": day(1), "amount": "5.00", "kind": "payment", "method": "card", "ref": "p-1"},
        {"account": "acme-01", "at": day(1), "amount": "-2.50", "kind": "charge"},
    ])
    first = arrears.json("ledger", "import", str(path))
    assert (first["created"], first["skipped"]) == (2, 0)
    before = arrears.dump()["ledger"]
    again = arrears.json("ledger", "import", str(path))
    assert (again["created"], again["skipped"]) == (0, 2)
    assert arrears.dump()["ledger"] == before
    assert arrears.show("acme-01", 2)["balance"] == "-27.50"


def test_csv_ledger_import(arrears: Arrears) -> None:
    path = arrears.folder / "ledger.csv"
    path.write_text("account,at,amount,kind,method,ref\n"
                    f"acme-01,{day(1)},30.00,payment,card,p-9\n")
    assert arrears.json("ledger", "import", str(path))["created"] == 1
    arrears.run(1)
    assert arrears.show("acme-01", 1)["balance"] == "0.00"


def test_transitions_are_sent_to_billing_as_events(tmp_path: Path) -> None:
    sink = tmp_path / "events.jsonl"
    policy = POLICY.replace("{resume}", "true") + (
        f"events:\n  command: [sh, -c, 'cat >> {sink}; echo >> {sink}']\n  retries: 0\n")
    a = Arrears.create(tmp_path / "cfg", policy=policy, accounts=[ACCOUNT])
    a.charge("acme-01", 0, "30.00", "inv-1")
    for n in (0, 5, 8):
        a.run(n)
    a.ok("payment", "acme-01", "30", "--at", day(9))
    a.run(9)
    events = [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]
    assert [(e["type"], e["stage"]) for e in events] == [
        ("debt_started", "episode"), ("notice_sent", "outstanding_notice"), ("notice_sent", "pre_suspension"),
        ("suspended", "suspension"), ("resumed", "resume")]
    resumed = events[-1]
    assert resumed["suspension"] == {"start": day(8).replace("+00:00", "Z"), "end": day(9).replace("+00:00", "Z")}
