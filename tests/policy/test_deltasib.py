"""DeltaSIB DebitControl: MaxDebit and MaxDelay (from the last payment), inherited server ->
reseller (VISP) -> user."""

from __future__ import annotations

from decimal import Decimal

from policy import evaluate
from policy.model import AccountSnapshot
from tests.policy.helpers import Replay, at, charge, pay, resolve

DEBIT_CONTROL = """\
timezone: Asia/Tehran
defaults:                       # the Server param: applies to every user
  currency: IRR
  credit_limit: 800000          # MaxDebit (Rls)
  triggers: {max_delay: 2592000s}   # MaxDelay: 30 days
  stages:
    - {name: disconnect, action: suspend, template: finish}
resellers:
  visp-a: {credit_limit: 20}
plans:
  home: {triggers: {max_delay: 7d}}
"""


def test_max_debit_blocks_above_the_limit() -> None:
    policy = resolve(DEBIT_CONTROL)
    ok = AccountSnapshot(id="u1", currency="IRR", ledger=(charge("2026-01-01 00:00", "800000"),))
    assert evaluate(ok, policy, at("2026-01-02 00:00")).trigger is None
    over = AccountSnapshot(id="u1", currency="IRR", ledger=(charge("2026-01-01 00:00", "800001"),))
    d = evaluate(over, policy, at("2026-01-02 00:00"))
    assert d.trigger is not None and d.trigger.trigger == "over_limit"
    assert [m.action for m in d.measures] == ["suspend"]


def test_max_delay_counts_from_the_last_payment() -> None:
    policy = resolve(DEBIT_CONTROL)
    snap = AccountSnapshot(id="u1", ledger=(pay("2026-01-01 00:00", "1000"), charge("2026-01-10 00:00", "5000")))
    d = evaluate(snap, policy, at("2026-01-20 00:00"))
    assert d.trigger is None and d.next_check == at("2026-01-31 00:00")  # 2592000 s after the payment
    r = Replay(policy, snap)
    r.daily("2026-01-20 00:00", 15)
    assert r.taken() == [("disconnect", "2026-01-31 00:00")]
    hit = next(d for d in r.decisions if d.start_episode).start_episode
    assert hit is not None and hit.trigger == "max_delay"
    assert hit.reason.inputs["last_payment"] == at("2026-01-01 00:00").isoformat()
    assert hit.reason.thresholds["max_delay"] == "30 days (2592000s)"


def test_max_delay_without_any_payment_counts_from_going_negative() -> None:
    snap = AccountSnapshot(id="u1", ledger=(charge("2026-01-10 00:00", "5000"),))
    d = evaluate(snap, resolve(DEBIT_CONTROL), at("2026-01-11 00:00"))
    assert d.next_check == at("2026-02-09 00:00")


def test_old_last_payment_makes_a_new_debt_due_at_once() -> None:
    snap = AccountSnapshot(id="u1", ledger=(pay("2025-10-01 00:00", "10"), charge("2026-01-10 00:00", "5000")))
    d = evaluate(snap, resolve(DEBIT_CONTROL), at("2026-01-10 00:00"))
    assert d.trigger is not None and d.trigger.trigger == "max_delay" and d.trigger.at == at("2026-01-10 00:00")


def test_inheritance_server_reseller_plan_user() -> None:
    ps = DEBIT_CONTROL
    server = resolve(ps, "u1")
    assert server.credit_limit == Decimal(800000) and server.triggers.max_delay == 2592000
    assert server.sources["credit_limit"] == "defaults"
    visp = resolve(ps, "u2", reseller="visp-a")
    assert visp.credit_limit == Decimal(20) and visp.sources["credit_limit"] == "reseller:visp-a"
    assert visp.sources["triggers.max_delay"] == "defaults"
    home = resolve(ps, "u3", plan="home", reseller="visp-a")
    assert home.triggers.max_delay == 7 * 86400 and home.sources["triggers.max_delay"] == "plan:home"
    assert home.credit_limit == Decimal(20)
    user = resolve(ps, "u4", plan="home", reseller="visp-a", account_layer={"credit_limit": "150",
                                                                           "triggers": {"max_delay": None}})
    assert user.credit_limit == Decimal("150") and user.sources["credit_limit"] == "account:u4"
    assert user.triggers.max_delay is None and user.sources["triggers.max_delay"] == "account:u4"
    unknown = resolve(ps, "u5", plan="nosuch", reseller="nosuch")
    assert unknown.credit_limit == Decimal(800000)
    # the inherited values drive the decision: 25 over the VISP limit of 20
    snap = AccountSnapshot(id="u2", ledger=(charge("2026-01-01 00:00", "45"), pay("2026-01-01 01:00", "20")))
    assert evaluate(snap, visp, at("2026-01-01 02:00")).trigger is not None
    assert evaluate(snap, server, at("2026-01-01 02:00")).trigger is None
