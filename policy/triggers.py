"""The triggers that start a debt episode, each evaluated at a moment from the account's history.

Every trigger answers: does it hold at ``now``, since when, and (when it does not hold yet) the future
moment it would start to hold if nothing new happened. A trigger holds from its start on (inclusive).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from policy.model import AccountSnapshot, LedgerEntry, Override, Reason, ResolvedPolicy

__all__ = [
    "TRIGGER_ORDER",
    "Ledger",
    "TriggerState",
    "active_overrides",
    "evaluate_triggers",
    "guarantee_at",
]

TRIGGER_ORDER = ("over_limit", "subzero_period", "max_delay", "unpaid_total_over", "invoice_expiration", "trial")


def _iso(t: datetime | None) -> str:
    return "never" if t is None else t.isoformat()


def _seconds_text(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} days ({seconds}s)"
    return f"{seconds}s"


class Ledger:
    """The account's ledger in time order, answering the balance at any moment."""

    def __init__(self, entries: Iterable[LedgerEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: e.at)
        self.times = [e.at for e in self.entries]
        running = Decimal(0)
        self.after: list[Decimal] = []
        for entry in self.entries:
            running += entry.amount
            self.after.append(running)

    def balance(self, t: datetime) -> Decimal:
        """Sum of the amounts of every entry with ``at <= t``."""
        i = bisect_right(self.times, t)
        return self.after[i - 1] if i else Decimal(0)

    def last_payment(self, t: datetime) -> LedgerEntry | None:
        for entry in reversed(self.entries[: bisect_right(self.times, t)]):
            if entry.kind == "payment" and entry.amount > 0:
                return entry
        return None

    def clearing_entry(self, t: datetime) -> LedgerEntry | None:
        """The latest positive entry at or before ``t`` that was paid into a negative balance: the one
        that (last) reduced the debt."""
        end = bisect_right(self.times, t)
        for i in range(end - 1, -1, -1):
            entry = self.entries[i]
            before = self.after[i - 1] if i else Decimal(0)
            if entry.amount > 0 and before < 0:
                return entry
        return None


def active_overrides(snapshot: AccountSnapshot, kind: str, t: datetime) -> list[Override]:
    """Overrides of ``kind`` in force at ``t`` (created, not yet expired). Expired ones are ignored."""
    return [
        o
        for o in snapshot.overrides
        if o.kind == kind and o.created_at <= t and (o.expires_at is None or t < o.expires_at)
    ]


def _guarantee_window(o: Override, days: int) -> tuple[datetime, datetime]:
    end = o.created_at + timedelta(days=days)
    if o.expires_at is not None:
        end = min(end, o.expires_at)
    return o.created_at, end


def guarantee_at(snapshot: AccountSnapshot, policy: ResolvedPolicy, t: datetime) -> Decimal:
    """Temporary credit from guaranteed payments in force at ``t``, capped by the policy's limit and
    period (``guaranteed_payment.limit`` / ``.days``)."""
    cap = policy.guaranteed_payment
    if cap.limit <= 0 or cap.days <= 0:
        return Decimal(0)
    total = Decimal(0)
    for o in snapshot.overrides:
        if o.kind != "guarantee" or o.amount is None or o.amount <= 0:
            continue
        start, end = _guarantee_window(o, cap.days)
        if start <= t < end:
            total += o.amount
    return min(total, cap.limit)


def guarantee_points(snapshot: AccountSnapshot, policy: ResolvedPolicy) -> list[datetime]:
    """Every moment the guaranteed credit changes."""
    points: list[datetime] = []
    for o in snapshot.overrides:
        if o.kind == "guarantee":
            points.extend(_guarantee_window(o, policy.guaranteed_payment.days))
    return points


def _holding_since(cond: Callable[[datetime], bool], points: Iterable[datetime], now: datetime) -> datetime | None:
    """When ``cond`` (piecewise constant, changing only at ``points``) started to hold without a break
    up to ``now``; ``None`` if it does not hold at ``now``."""
    if not cond(now):
        return None
    since = now
    for p in sorted({p for p in points if p <= now}, reverse=True):
        if not cond(p):
            break
        since = p
    return since


def _first_future(cond: Callable[[datetime], bool], points: Iterable[datetime], now: datetime) -> datetime | None:
    for p in sorted({p for p in points if p > now}):
        if cond(p):
            return p
    return None


@dataclass(frozen=True)
class TriggerState:
    """One trigger at one moment: enabled by the policy?, holding?, since when, or when it would start."""

    name: str
    enabled: bool
    holds: bool
    since: datetime | None
    upcoming: datetime | None
    reason: Reason


def evaluate_triggers(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> list[TriggerState]:
    """Every trigger of ``policy`` for ``snapshot`` at ``now``, in :data:`TRIGGER_ORDER`."""
    ledger = Ledger(snapshot.ledger)
    return [
        _over_limit(snapshot, policy, ledger, now),
        _subzero(policy, ledger, now),
        _max_delay(policy, ledger, now),
        _unpaid_total(snapshot, policy, now),
        _invoice_expiration(snapshot, policy, now),
        _trial(snapshot, policy, now),
    ]


def _state(name: str, enabled: bool, since: datetime | None, upcoming: datetime | None, now: datetime,
           text: str, thresholds: dict[str, str], inputs: dict[str, str]) -> TriggerState:
    holds = enabled and since is not None and since <= now
    return TriggerState(
        name=name,
        enabled=enabled,
        holds=holds,
        since=since if holds else None,
        upcoming=upcoming if enabled and not holds and upcoming is not None and upcoming > now else None,
        reason=Reason(rule=f"trigger.{name}", text=text, thresholds=thresholds, inputs=inputs),
    )


def _over_limit(snapshot: AccountSnapshot, policy: ResolvedPolicy, ledger: Ledger, now: datetime) -> TriggerState:
    def over(t: datetime) -> bool:
        return ledger.balance(t) < -(policy.credit_limit + guarantee_at(snapshot, policy, t))

    points = [*ledger.times, *guarantee_points(snapshot, policy)]
    enabled = policy.triggers.over_limit
    since = _holding_since(over, points, now) if enabled else None
    upcoming = _first_future(over, points, now) if enabled and since is None else None
    balance = ledger.balance(now)
    guarantee = guarantee_at(snapshot, policy, now)
    limit = policy.credit_limit + guarantee
    text = (f"balance {balance} is below -{limit} (credit limit {policy.credit_limit} + guarantee {guarantee})"
            if since else f"balance {balance} is not below -{limit}")
    return _state("over_limit", enabled, since, upcoming, now, text,
                  {"credit_limit": str(policy.credit_limit), "guarantee": str(guarantee)},
                  {"balance": str(balance), "over_since": _iso(since)})


def _negative_since(ledger: Ledger, now: datetime) -> datetime | None:
    return _holding_since(lambda t: ledger.balance(t) < 0, ledger.times, now)


def _subzero(policy: ResolvedPolicy, ledger: Ledger, now: datetime) -> TriggerState:
    days = policy.triggers.subzero_period
    enabled = days >= 0
    negative = _negative_since(ledger, now)
    start = negative + timedelta(days=days) if enabled and negative is not None else None
    balance = ledger.balance(now)
    if not enabled:
        text = "subzero period is -1: a negative balance never triggers by time alone"
    elif negative is None:
        text = f"balance {balance} is not negative"
    else:
        text = f"balance negative since {negative.isoformat()}; the subzero period of {days} days ends {_iso(start)}"
    return _state("subzero_period", enabled, start if start and start <= now else None, start, now, text,
                  {"subzero_period_days": str(days)},
                  {"balance": str(balance), "negative_since": _iso(negative)})


def _max_delay(policy: ResolvedPolicy, ledger: Ledger, now: datetime) -> TriggerState:
    delay = policy.triggers.max_delay
    enabled = delay is not None
    negative = _negative_since(ledger, now)
    last = ledger.last_payment(now)
    start: datetime | None = None
    if delay is not None and negative is not None:
        counted_from = last.at if last is not None else negative
        start = max(negative, counted_from + timedelta(seconds=delay))
    balance = ledger.balance(now)
    if not enabled:
        text = "no max_delay set"
    elif negative is None:
        text = f"balance {balance} is not negative"
    else:
        base = f"the last payment at {last.at.isoformat()}" if last else f"going negative at {negative.isoformat()}"
        text = f"in debt ({balance}); max_delay counted from {base} runs out at {_iso(start)}"
    return _state("max_delay", enabled, start if start and start <= now else None, start, now, text,
                  {"max_delay": _seconds_text(delay) if delay is not None else "none"},
                  {"balance": str(balance), "negative_since": _iso(negative),
                   "last_payment": _iso(last.at if last else None)})


def _unpaid(snapshot: AccountSnapshot, t: datetime) -> Decimal:
    return sum(
        (i.amount for i in snapshot.invoices if i.issued_at <= t and (i.paid_at is None or i.paid_at > t)),
        Decimal(0),
    )


def _unpaid_total(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> TriggerState:
    limit = policy.triggers.unpaid_total_over
    enabled = limit is not None

    def over(t: datetime) -> bool:
        return limit is not None and _unpaid(snapshot, t) > limit

    points = [i.issued_at for i in snapshot.invoices] + [i.paid_at for i in snapshot.invoices if i.paid_at]
    since = _holding_since(over, points, now) if enabled else None
    upcoming = _first_future(over, points, now) if enabled and since is None else None
    total = _unpaid(snapshot, now)
    text = f"unpaid invoices total {total}, limit {limit}" if enabled else "no unpaid_total_over set"
    return _state("unpaid_total_over", enabled, since, upcoming, now, text,
                  {"unpaid_total_over": str(limit)}, {"unpaid_total": str(total)})


def _invoice_expiration(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> TriggerState:
    expiration = policy.triggers.invoice_expiration
    grace = policy.triggers.stop_grace or 0
    enabled = expiration is not None
    unpaid = [i for i in snapshot.invoices if i.issued_at <= now and (i.paid_at is None or i.paid_at > now)]
    oldest = min(unpaid, key=lambda i: (i.due_at, i.id)) if unpaid else None
    start = None
    expired_at = None
    if expiration is not None and oldest is not None:
        expired_at = oldest.due_at + timedelta(days=expiration)
        start = expired_at + timedelta(days=grace)
    if not enabled:
        text = "no invoice_expiration set"
    elif oldest is None:
        text = "no unpaid invoice"
    else:
        text = (f"oldest unpaid invoice {oldest.id} due {oldest.due_at.isoformat()} expires {_iso(expired_at)}; "
                f"stopped after {grace} more days of grace at {_iso(start)}")
    # A future invoice may also become the oldest unpaid one: the next check covers its issue time.
    return _state("invoice_expiration", enabled, start if start and start <= now else None, start, now, text,
                  {"invoice_expiration_days": str(expiration), "stop_grace_days": str(grace)},
                  {"oldest_unpaid_invoice": oldest.id if oldest else "none",
                   "due_at": _iso(oldest.due_at if oldest else None)})


def _trial(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> TriggerState:
    enabled = policy.triggers.trial
    ends = snapshot.trial_ends_at
    start = ends if enabled and ends is not None and not snapshot.has_billing_profile else None
    if ends is None:
        text = "not a trial account"
    elif snapshot.has_billing_profile:
        text = "the trial user has a billing profile"
    else:
        text = f"trial ends {ends.isoformat()} and there is no billing profile"
    return _state("trial", enabled, start if start and start <= now else None, start, now, text, {},
                  {"trial_ends_at": _iso(ends), "has_billing_profile": str(snapshot.has_billing_profile).lower()})
