"""The purchase gate: may the account pay for an order from its balance?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from policy.durations import require_aware
from policy.engine import evaluate
from policy.model import AccountSnapshot, ResolvedPolicy
from policy.triggers import guarantee_at

__all__ = ["SpendVerdict", "can_spend"]


@dataclass(frozen=True)
class SpendVerdict:
    allowed: bool
    available: Decimal
    reason: str


def can_spend(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, amount: Decimal) -> SpendVerdict:
    """Whether an order of ``amount`` may be paid from the balance at ``now``.

    A debtor (any trigger holding, or a debt hold) may not buy. With ``pay_with_negative`` an order up
    to ``spend_threshold + balance`` may be paid (``financial_threshold``, by default the credit limit);
    without it the balance may not go negative. An active guaranteed payment adds its (capped) amount.
    """
    require_aware(now, "now")
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount must be a finite Decimal, got {amount!r}")
    if amount < 0:
        raise ValueError(f"amount must not be negative, got {amount}")
    if snapshot.deleted:
        return SpendVerdict(False, Decimal(0), "the account is deleted")
    decision = evaluate(snapshot, policy, now)
    if decision.trigger is not None:
        return SpendVerdict(False, Decimal(0),
                            f"the account is a debtor ({decision.trigger.trigger}: {decision.trigger.reason.text}); "
                            "debtors may not buy")
    if any(h.kind == "debt" for h in snapshot.holds):
        return SpendVerdict(False, Decimal(0), "the account is suspended for debt; debtors may not buy")
    balance = decision.balance
    guarantee = guarantee_at(snapshot, policy, now)
    if policy.pay_with_negative:
        available = max(policy.spend_threshold + balance + guarantee, Decimal(0))
        rule = f"pay_with_negative: threshold {policy.spend_threshold} + balance {balance}"
    else:
        available = max(balance + guarantee, Decimal(0))
        rule = f"the balance may not go negative: balance {balance}"
    if guarantee:
        rule += f" + guarantee {guarantee}"
    allowed = amount <= available
    verdict = "allowed" if allowed else "refused"
    return SpendVerdict(allowed, available, f"{verdict}: {amount} against {available} available ({rule})")
