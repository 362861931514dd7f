"""CloudBlue account class: prepay subzero period and pay with negative balance, postpay expiration
and grace, guaranteed payment."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policy import can_spend, evaluate
from policy.model import AccountSnapshot, Invoice, Override
from tests.policy.helpers import Replay, at, charge, pay, resolve

PREPAY = """\
timezone: UTC
defaults:
  credit_limit: 200
  financial_threshold: 200
  pay_with_negative: true
  triggers: {subzero_period: -1}
  stages:
    - {name: credit_hold, action: suspend, template: credit_hold}
"""

POSTPAY = """\
timezone: UTC
defaults:
  triggers: {over_limit: false, invoice_expiration: 10, stop_grace: 5}
  stages:
    - {name: stop, action: suspend, template: stopped}
"""


def prepay(subzero: int) -> str:
    return PREPAY.replace("subzero_period: -1", f"subzero_period: {subzero}")


def test_subzero_minus_one_never_holds_within_the_threshold() -> None:
    r = Replay(resolve(prepay(-1)), AccountSnapshot(id="7", ledger=(charge("2026-01-01 12:00", "10"),)))
    r.daily("2026-01-01 13:00", 365)
    assert r.taken() == []
    assert r.decisions[-1].next_check is None  # nothing will change without new input
    # beyond the threshold the credit hold is immediate
    r.add(charge("2027-01-05 12:00", "191"))
    assert [m.stage for m in r.tick(at("2027-01-05 12:00")).measures] == ["credit_hold"]


def test_subzero_n_days_then_credit_hold() -> None:
    r = Replay(resolve(prepay(3)), AccountSnapshot(id="7", ledger=(charge("2026-01-01 12:00", "10"),)))
    first = r.tick(at("2026-01-01 13:00"))
    assert first.trigger is None and first.next_check == at("2026-01-04 12:00")
    r.daily("2026-01-02 12:00", 10)
    assert r.taken() == [("credit_hold", "2026-01-04 12:00")]
    hit = next(d for d in r.decisions if d.start_episode).start_episode
    assert hit is not None and hit.trigger == "subzero_period" and hit.at == at("2026-01-04 12:00")
    assert hit.reason.inputs["negative_since"] == at("2026-01-01 12:00").isoformat()


def test_subzero_clock_restarts_when_the_balance_goes_back_to_zero() -> None:
    snap = AccountSnapshot(id="7", ledger=(charge("2026-01-01 12:00", "10"), pay("2026-01-03 12:00", "10"),
                                           charge("2026-01-03 18:00", "10")))
    d = evaluate(snap, resolve(prepay(3)), at("2026-01-05 12:00"))
    assert d.trigger is None and d.next_check == at("2026-01-06 18:00")


def test_pay_with_negative_balance_threshold_200_balance_minus_10_gives_190() -> None:
    snap = AccountSnapshot(id="7", ledger=(charge("2026-01-01 12:00", "10"),))
    policy = resolve(prepay(-1))
    verdict = can_spend(snap, policy, at("2026-01-02 00:00"), Decimal("190"))
    assert verdict.allowed and verdict.available == Decimal("190")
    refused = can_spend(snap, policy, at("2026-01-02 00:00"), Decimal("190.01"))
    assert not refused.allowed and refused.available == Decimal("190") and "refused" in refused.reason


def test_without_pay_with_negative_the_balance_may_not_go_negative() -> None:
    text = prepay(-1).replace("pay_with_negative: true", "pay_with_negative: false")
    policy = resolve(text)
    rich = AccountSnapshot(id="7", ledger=(pay("2026-01-01 12:00", "30"),))
    assert can_spend(rich, policy, at("2026-01-02 00:00"), Decimal("30")).allowed
    assert not can_spend(rich, policy, at("2026-01-02 00:00"), Decimal("30.01")).allowed
    poor = AccountSnapshot(id="7", ledger=(charge("2026-01-01 12:00", "10"),))
    verdict = can_spend(poor, policy, at("2026-01-02 00:00"), Decimal("1"))
    assert not verdict.allowed and verdict.available == Decimal(0)


def test_debtors_may_not_buy() -> None:
    snap = AccountSnapshot(id="7", ledger=(charge("2026-01-01 12:00", "250"),))
    verdict = can_spend(snap, resolve(prepay(-1)), at("2026-01-02 00:00"), Decimal("0.01"))
    assert not verdict.allowed and verdict.available == 0 and "debtor" in verdict.reason
    with pytest.raises(ValueError):
        can_spend(snap, resolve(prepay(-1)), at("2026-01-02 00:00"), Decimal("-1"))


def test_postpay_invoice_expires_then_stops_after_grace() -> None:
    invoice = Invoice("INV-1", issued_at=at("2026-02-01 00:00"), due_at=at("2026-02-15 00:00"), amount=Decimal("99"))
    r = Replay(resolve(POSTPAY), AccountSnapshot(id="9", invoices=(invoice,)))
    d = r.tick(at("2026-02-20 00:00"))
    assert d.trigger is None and d.next_check == at("2026-03-02 00:00")  # 15 Feb + 10 + 5 days
    r.daily("2026-02-21 06:00", 12)
    assert r.taken() == [("stop", "2026-03-02 06:00")]
    # paying the invoice ends the episode and lifts the stop
    r.snap = AccountSnapshot(**{**r.snap.__dict__, "invoices": (Invoice(
        "INV-1", invoice.issued_at, invoice.due_at, invoice.amount, paid_at=at("2026-03-05 00:00")),)})
    assert r.tick(at("2026-03-05 01:00")).resume


def test_postpay_unpaid_total_over_a_limit() -> None:
    text = POSTPAY.replace("invoice_expiration: 10, stop_grace: 5", "unpaid_total_over: 100")
    inv = [Invoice(f"I{n}", at(f"2026-0{n}-01 00:00"), at(f"2026-0{n}-20 00:00"), Decimal("60")) for n in (1, 2)]
    d = evaluate(AccountSnapshot(id="9", invoices=tuple(inv)), resolve(text), at("2026-01-15 00:00"))
    assert d.trigger is None and d.next_check == at("2026-02-01 00:00")
    d2 = evaluate(AccountSnapshot(id="9", invoices=tuple(inv)), resolve(text), at("2026-02-01 00:00"))
    assert d2.trigger is not None and d2.trigger.trigger == "unpaid_total_over"
    assert [m.stage for m in d2.measures] == ["stop"]


def test_guaranteed_payment_is_temporary_credit_capped_by_the_policy() -> None:
    text = """\
timezone: UTC
defaults:
  guaranteed_payment: {limit: 50, days: 7}
  stages: [{name: hold, action: suspend}]
"""
    guarantee = Override("guarantee", actor="support", reason="customer promised a transfer",
                         created_at=at("2026-01-01 00:00"), expires_at=at("2026-02-01 00:00"), amount=Decimal("80"))
    snap = AccountSnapshot(id="3", ledger=(charge("2026-01-02 00:00", "40"),), overrides=(guarantee,))
    policy = resolve(text)
    d = evaluate(snap, policy, at("2026-01-03 00:00"))
    assert d.trigger is None
    assert d.next_check == at("2026-01-08 00:00")  # the policy caps the period at 7 days
    assert can_spend(snap, policy, at("2026-01-03 00:00"), Decimal("10")).available == Decimal("10")
    after = evaluate(snap, policy, at("2026-01-08 00:00"))
    assert after.trigger is not None and after.trigger.at == at("2026-01-08 00:00")
    assert [m.stage for m in after.measures] == ["hold"]
    # the amount is capped at the policy's limit of 50
    deeper = AccountSnapshot(id="3", ledger=(charge("2026-01-02 00:00", "60"),), overrides=(guarantee,))
    hit = evaluate(deeper, policy, at("2026-01-03 00:00")).trigger
    assert hit is not None and hit.reason.thresholds["guarantee"] == "50"
