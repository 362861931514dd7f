"""Builders and a day-by-day replay for the policy tests: applies each decision as the agent would."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from policy import apply_decision, evaluate, load_policy
from policy.model import AccountSnapshot, Decision, LedgerEntry, Override, ResolvedPolicy

__all__ = ["HSPHERE", "Replay", "at", "charge", "pay", "resolve"]

HSPHERE = """\
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
  resume_on_payment: true
  pay_with_negative: false
  guaranteed_payment: {limit: 0, days: 0}
"""


def at(text: str) -> datetime:
    """An aware UTC moment from ``YYYY-MM-DD HH:MM`` (or an ISO string with its own offset)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def charge(when: str, amount: str, ref: str | None = None) -> LedgerEntry:
    return LedgerEntry(at=at(when), amount=-Decimal(amount), kind="charge", ref=ref)


def pay(when: str, amount: str, method: str = "card", ref: str | None = None) -> LedgerEntry:
    return LedgerEntry(at=at(when), amount=Decimal(amount), kind="payment", method=method, ref=ref)


def resolve(text: str = HSPHERE, account: str = "42", plan: str | None = None, reseller: str | None = None,
            account_layer: Mapping[str, Any] | None = None) -> ResolvedPolicy:
    return load_policy(text, "policy.yaml").resolve(account, plan, reseller, account_layer)


@dataclass
class Replay:
    """An account driven tick by tick: each decision is applied the moment it is made."""

    policy: ResolvedPolicy
    snap: AccountSnapshot
    decisions: list[Decision] = field(default_factory=list)

    def add(self, *entries: LedgerEntry) -> None:
        self.snap = replace(self.snap, ledger=(*self.snap.ledger, *entries))

    def promise(self, when: str, days: int, actor: str = "carol", reason: str = "pays on Friday") -> Override:
        """An admin resumes the account with a promise to pay (``arrears resume --grace DAYS``): a pause
        until ``when`` + ``days``, and the debt, admin and trial holds released."""
        now = at(when)
        pause = Override("pause", actor=actor, reason=reason, created_at=now, expires_at=now + timedelta(days=days))
        holds = tuple(h for h in self.snap.holds if h.kind not in ("debt", "admin", "trial"))
        self.snap = replace(self.snap, holds=holds, overrides=(*self.snap.overrides, pause))
        return pause

    def tick(self, now: datetime) -> Decision:
        decision = evaluate(self.snap, self.policy, now)
        self.snap = apply_decision(self.snap, decision)
        self.decisions.append(decision)
        return decision

    def daily(self, first: str, days: int) -> None:
        start = at(first)
        for i in range(days):
            self.tick(start + timedelta(days=i))

    def taken(self) -> list[tuple[str, str]]:
        """Every measure taken so far, as ``(stage, UTC time 'YYYY-MM-DD HH:MM')``."""
        return [(m.stage, d.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M")) for d in self.decisions for m in d.measures]

    def resumed(self) -> list[str]:
        return [d.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for d in self.decisions if d.resume]
