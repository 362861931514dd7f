"""One timeline per rule of the seeds, replayed day by day through the CLI with ``--at``.

Disabled stages (H-Sphere), subzero period -1 and N and pay-with-negative-balance (CloudBlue prepay),
invoice expiration + grace (CloudBlue postpay), MaxDebit/MaxDelay inherited server -> reseller -> user
(DeltaSIB), and the expired trial without a billing profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.scenarios.harness import Arrears, day

NOTICES = """\
notices:
  from_addr: billing@example.net
  spool_dir: outbox
"""


def policy(defaults: str, extra: str = "") -> str:
    return f"timezone: UTC\ndefaults:\n{defaults}{extra}{NOTICES}"


STAGES = """\
  stages:
    - {name: outstanding_notice, action: notice,  after: null, template: outstanding}
    - {name: pre_suspension,     action: notice,  after: 5,    template: pre_suspension}
    - {name: suspension,         action: suspend, after: 3,    template: suspended}
"""


def acct(account: str, **fields: Any) -> dict[str, Any]:
    return {"id": account, "billing_email": f"{account}@example.net", **fields}


def taken_on(a: Arrears, days: range) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = {}
    for n in days:
        got = [(t["account"], t["stage"]) for t in a.run(n)["executor"]["taken"]]
        if got:
            out[n] = got
    return out


def test_a_disabled_stage_is_skipped_and_the_count_runs_from_the_previous_one(tmp_path: Path) -> None:
    stages = STAGES.replace("after: 5,    template: pre_suspension}",
                            "after: 5,    template: pre_suspension, enabled: false}")
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 0\n" + stages), accounts=[acct("h1")])
    a.charge("h1", 0, "10", "c1")
    assert taken_on(a, range(0, 10)) == {0: [("h1", "outstanding_notice")], 3: [("h1", "suspension")]}


def test_empty_days_change_nothing(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 0\n" + STAGES), accounts=[acct("h1")])
    a.charge("h1", 0, "10", "c1")
    a.run(0)
    before = a.dump()
    for n in range(1, 5):
        a.run(n)
    after = a.dump()
    assert after["stages_taken"] == before["stages_taken"] and after["jobs"] == before["jobs"]


def test_subzero_period_minus_one_never_and_n_days(tmp_path: Path) -> None:
    base = "  credit_limit: 200\n  financial_threshold: 200\n" + STAGES
    never = Arrears.create(tmp_path / "never", policy=policy(base + "  triggers: {subzero_period: -1}\n"),
                           accounts=[acct("p1")])
    never.charge("p1", 0, "10", "c1")
    assert taken_on(never, range(0, 30)) == {}
    five = Arrears.create(tmp_path / "five", policy=policy(base + "  triggers: {subzero_period: 5}\n"),
                          accounts=[acct("p1")])
    five.charge("p1", 0, "10", "c1")
    assert taken_on(five, range(0, 7)) == {5: [("p1", "outstanding_notice")]}
    assert five.show("p1", 5)["episode"]["trigger"] == "subzero_period"


def test_pay_with_negative_balance_threshold_200_balance_minus_10(tmp_path: Path) -> None:
    base = "  credit_limit: 200\n  financial_threshold: 200\n" + STAGES
    a = Arrears.create(tmp_path / "on", policy=policy(base + "  pay_with_negative: true\n"), accounts=[acct("p1")])
    a.charge("p1", 0, "10", "c1")
    assert a.json("can-spend", "p1", "190", "--at", day(1))["allowed"] is True
    assert a.invoke("can-spend", "p1", "190.01", "--at", day(1)).exit_code == 1
    assert a.json("can-spend", "p1", "1", "--at", day(1))["available"] == "190"
    b = Arrears.create(tmp_path / "off", policy=policy(base + "  pay_with_negative: false\n"), accounts=[acct("p1")])
    b.charge("p1", 0, "10", "c1")
    refused = b.invoke("can-spend", "p1", "1", "--at", day(1), "--json")
    assert refused.exit_code == 1 and '"available": "0"' in refused.stdout


def test_postpay_invoice_expiration_and_grace(tmp_path: Path) -> None:
    base = ("  credit_limit: 100000\n" + STAGES
            + "  triggers: {over_limit: true, invoice_expiration: 10, stop_grace: 5}\n")
    a = Arrears.create(tmp_path, policy=policy(base), accounts=[acct("pp1")])
    a.charge("pp1", 0, "50", "c1")
    invoice = {"account": "pp1", "id": "inv-1", "issued_at": day(0, 8), "due_at": day(0, 8), "amount": "50.00"}
    a.ok("invoices", "import", str(a.write("inv.jsonl", [invoice])))
    assert taken_on(a, range(0, 16)) == {15: [("pp1", "outstanding_notice")]}
    assert a.show("pp1", 15)["episode"]["trigger"] == "invoice_expiration"
    # billing marks the invoice paid (and the payment arrives): the episode ends
    a.ok("invoices", "import", str(a.write("inv.jsonl", [{**invoice, "paid_at": day(16, 8)}])))
    a.ok("ledger", "import", str(a.write("pay.jsonl", [{"account": "pp1", "at": day(16, 8), "amount": "50",
                                                        "method": "card", "ref": "p1"}])))
    a.run(16)
    assert a.show("pp1", 16)["episode"] is None


def test_deltasib_max_debit_and_max_delay_inherited(tmp_path: Path) -> None:
    # server level: MaxDebit 100; reseller visp-a: MaxDelay 3 days; one user of visp-a: MaxDelay 1 day
    text = policy("  credit_limit: 100\n" + STAGES,
                  "resellers:\n  visp-a: {triggers: {max_delay: 3d}}\n")
    a = Arrears.create(tmp_path, policy=text, accounts=[
        acct("srv-user"),
        acct("visp-user", reseller="visp-a"),
        acct("fast-user", reseller="visp-a", policy={"triggers": {"max_delay": "1d"}}),
        acct("big-debt", reseller="visp-a"),
    ])
    for account in ("srv-user", "visp-user", "fast-user"):
        a.charge(account, 0, "20", f"c-{account}")
    a.charge("big-debt", 0, "150", "c-big")
    got = taken_on(a, range(0, 5))
    assert got[0] == [("big-debt", "outstanding_notice")]  # over MaxDebit at once
    assert got[1] == [("fast-user", "outstanding_notice")]  # its own MaxDelay of one day
    assert got[3] == [("visp-user", "outstanding_notice")]  # the reseller's three days
    assert all(acc != "srv-user" for day_items in got.values() for acc, _ in day_items)  # no MaxDelay above it
    explain = a.json("explain", "fast-user", "--at", day(1))
    assert explain["sources"]["triggers.max_delay"] == "account:fast-user"
    assert a.json("explain", "visp-user", "--at", day(1))["sources"]["triggers.max_delay"] == "reseller:visp-a"


def test_deltasib_max_delay_counts_from_the_last_payment(tmp_path: Path) -> None:
    text = policy("  credit_limit: 100\n" + STAGES + "  triggers: {max_delay: 3d}\n")
    a = Arrears.create(tmp_path, policy=text, accounts=[acct("d1")])
    a.charge("d1", 0, "50", "c1")
    a.ok("payment", "d1", "10", "--at", day(2))  # a partial payment restarts the delay
    assert taken_on(a, range(0, 6)) == {5: [("d1", "outstanding_notice")]}


def test_expired_trial_without_billing_profile(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 0\n" + STAGES), accounts=[
        {"id": "t1", "billing_email": "t1@example.net", "trial_ends_at": day(2, 0), "has_billing_profile": False},
        {"id": "t2", "billing_email": "t2@example.net", "trial_ends_at": day(2, 0), "has_billing_profile": True},
    ])
    got = taken_on(a, range(0, 11))
    assert got == {2: [("t1", "outstanding_notice")], 7: [("t1", "pre_suspension")], 10: [("t1", "suspension")]}
    info = a.show("t1", 10)
    assert info["state"] == "suspended" and info["holds"] == ["trial"]
    assert info["episode"]["trigger"] == "trial"


def test_pay_with_negative_spends_down_to_the_credit_limit_when_no_threshold_is_set(tmp_path: Path) -> None:
    # CloudBlue's "financial blocking threshold" is H-Sphere's credit limit: the seed sets only that
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 200\n  pay_with_negative: true\n" + STAGES),
                       accounts=[acct("p1")])
    a.charge("p1", 0, "10", "c1")
    assert a.invoke("can-spend", "p1", "190", "--at", day(1)).exit_code == 0
    assert a.invoke("can-spend", "p1", "191", "--at", day(1)).exit_code == 1
    assert a.json("can-spend", "p1", "1", "--at", day(1))["available"] == "190"
    explained = a.json("explain", "p1", "--at", day(1))
    threshold = explained["policy"]["financial_threshold"]
    assert threshold["value"] == "200" and threshold["source"].startswith("credit_limit")


def test_an_explicit_financial_threshold_still_wins_over_the_credit_limit(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 200\n  financial_threshold: 50\n"
                                               "  pay_with_negative: true\n" + STAGES), accounts=[acct("p1")])
    a.charge("p1", 0, "10", "c1")
    assert a.invoke("can-spend", "p1", "40", "--at", day(1)).exit_code == 0
    assert a.invoke("can-spend", "p1", "41", "--at", day(1)).exit_code == 1


def test_show_and_debtors_name_the_stage_that_is_due_before_the_first_run(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 0\n" + STAGES), accounts=[acct("d1")])
    a.charge("d1", 0, "10", "c1")
    due = a.json("forecast", "d1", "--at", day(0))[0]
    assert (due["stage"], due["due_at"]) == ("outstanding_notice", day(0, 8))
    shown = a.show("d1", 0)["next"]
    assert (shown["stage"], shown["due_at"]) == ("outstanding_notice", day(0, 8))
    (row,) = a.json("debtors", "--at", day(0))
    assert (row["next_stage"], row["next_due"]) == ("outstanding_notice", day(0, 8))
    assert "next: outstanding_notice (notice) due" in a.ok("show", "d1", "--at", day(0)).stdout
    a.run(0)
    assert a.show("d1", 1)["next"]["stage"] == "pre_suspension"
    assert a.json("debtors", "--at", day(1))[0]["next_stage"] == "pre_suspension"


def test_templates_preview_renders_for_the_simulated_now(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path, policy=policy("  credit_limit: 0\n" + STAGES), accounts=[acct("t1")])
    a.charge("t1", 0, "30", "c1")
    a.charge("t1", 10, "20", "c2")  # billed on day 10
    early = a.ok("templates", "preview", "outstanding", "t1", "--at", day(2)).stdout
    late = a.ok("templates", "preview", "outstanding", "t1", "--at", day(11)).stdout
    assert "-$30.00" in early and "-$50.00" not in early
    assert "-$50.00" in late
