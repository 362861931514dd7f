"""The triggers that start a debt episode, each evaluated at a moment from the account's history.

Every trigger answers: does it hold at ``now``, since when, and (when it does not hold yet) the future
moment it would start to hold if nothing new happened. A trigger holds from its start on (inclusive).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from policy.model import AccountSnapshot, Invoice, LedgerEntry, Override, Reason, ResolvedPolicy

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
    if not snapshot.overrides:
        return []  # (most accounts: asked several times per evaluation)
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


# _Context and TriggerState are made for every account evaluated (seven per evaluation) and read only within
# it: plain slotted classes, whose construction costs a fraction of a frozen dataclass's (which sets each field
# through object.__setattr__). Nothing changes them once made.


@dataclass(slots=True, eq=False)
class _Context:
    """What the triggers of one evaluation read: the six states share it, for their reasons."""

    snapshot: AccountSnapshot
    policy: ResolvedPolicy
    ledger: Ledger
    now: datetime
    balance: Decimal  # at ``now``
    negative: datetime | None  # since when the balance is below zero without a break; None: it is not


_Written = tuple[str, dict[str, str], dict[str, str]]  # a reason's text, thresholds and inputs


@dataclass(slots=True)
class TriggerState:
    """One trigger at one moment: enabled by the policy?, holding?, since when, or when it would start.

    Its :attr:`reason` is written when first read: a decision reads the reason of the trigger that
    holds first, ``explain`` every one; the others are never written."""

    name: str
    enabled: bool
    holds: bool
    since: datetime | None
    upcoming: datetime | None
    context: _Context = field(repr=False, compare=False)
    _reason: Reason | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def reason(self) -> Reason:
        if self._reason is None:
            text, thresholds, inputs = _WRITERS[self.name](self, self.context)
            self._reason = Reason(rule=f"trigger.{self.name}", text=text, thresholds=thresholds, inputs=inputs)
        return self._reason


def evaluate_triggers(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime,
                      ledger: Ledger | None = None) -> list[TriggerState]:
    """Every trigger of ``policy`` for ``snapshot`` at ``now``, in :data:`TRIGGER_ORDER`. ``ledger`` is
    the snapshot's ledger when the caller has built it already."""
    if ledger is None:
        ledger = Ledger(snapshot.ledger)
    balance = ledger.balance(now)
    c = _Context(snapshot, policy, ledger, now, balance, _negative_since(ledger, now) if balance < 0 else None)
    return [_over_limit(c), _subzero(c), _max_delay(c), _unpaid_total(c), _invoice_expiration(c), _trial(c)]


def _state(name: str, enabled: bool, since: datetime | None, upcoming: datetime | None, c: _Context) -> TriggerState:
    holds = enabled and since is not None and since <= c.now
    return TriggerState(
        name=name,
        enabled=enabled,
        holds=holds,
        since=since if holds else None,
        upcoming=upcoming if enabled and not holds and upcoming is not None and upcoming > c.now else None,
        context=c,
    )


def _over_limit(c: _Context) -> TriggerState:
    snapshot, policy, ledger = c.snapshot, c.policy, c.ledger
    enabled = policy.triggers.over_limit
    since = upcoming = None
    if enabled:
        over: Callable[[datetime], bool]
        if any(o.kind == "guarantee" for o in snapshot.overrides):
            def over(t: datetime) -> bool:
                return ledger.balance(t) < -(policy.credit_limit + guarantee_at(snapshot, policy, t))

            points = [*ledger.times, *guarantee_points(snapshot, policy)]
        else:  # no guarantee: the guaranteed credit is zero throughout, the line is the credit limit
            line = -policy.credit_limit

            def over(t: datetime) -> bool:
                return ledger.balance(t) < line

            points = ledger.times
        since = _holding_since(over, points, c.now)
        upcoming = _first_future(over, points, c.now) if since is None else None
    return _state("over_limit", enabled, since, upcoming, c)


def _over_limit_reason(state: TriggerState, c: _Context) -> _Written:
    guarantee = guarantee_at(c.snapshot, c.policy, c.now)
    limit = c.policy.credit_limit + guarantee
    text = (f"balance {c.balance} is below -{limit} (credit limit {c.policy.credit_limit} + guarantee {guarantee})"
            if state.since else f"balance {c.balance} is not below -{limit}")
    return (text, {"credit_limit": str(c.policy.credit_limit), "guarantee": str(guarantee)},
            {"balance": str(c.balance), "over_since": _iso(state.since)})


def _negative_since(ledger: Ledger, now: datetime) -> datetime | None:
    return _holding_since(lambda t: ledger.balance(t) < 0, ledger.times, now)


def _subzero_start(c: _Context) -> datetime | None:
    days = c.policy.triggers.subzero_period
    return c.negative + timedelta(days=days) if days >= 0 and c.negative is not None else None


def _subzero(c: _Context) -> TriggerState:
    start = _subzero_start(c)
    return _state("subzero_period", c.policy.triggers.subzero_period >= 0, start if start and start <= c.now else None,
                  start, c)


def _subzero_reason(state: TriggerState, c: _Context) -> _Written:
    days = c.policy.triggers.subzero_period
    if days < 0:
        text = "subzero period is -1: a negative balance never triggers by time alone"
    elif c.negative is None:
        text = f"balance {c.balance} is not negative"
    else:
        text = (f"balance negative since {c.negative.isoformat()}; the subzero period of {days} days ends "
                f"{_iso(_subzero_start(c))}")
    return (text, {"subzero_period_days": str(days)},
            {"balance": str(c.balance), "negative_since": _iso(c.negative)})


def _max_delay_start(c: _Context) -> datetime | None:
    delay = c.policy.triggers.max_delay
    if delay is None or c.negative is None:
        return None
    last = c.ledger.last_payment(c.now)
    counted_from = last.at if last is not None else c.negative
    return max(c.negative, counted_from + timedelta(seconds=delay))


def _max_delay(c: _Context) -> TriggerState:
    start = _max_delay_start(c)
    return _state("max_delay", c.policy.triggers.max_delay is not None, start if start and start <= c.now else None,
                  start, c)


def _max_delay_reason(state: TriggerState, c: _Context) -> _Written:
    delay = c.policy.triggers.max_delay
    last = c.ledger.last_payment(c.now)
    if delay is None:
        text = "no max_delay set"
    elif c.negative is None:
        text = f"balance {c.balance} is not negative"
    else:
        base = f"the last payment at {last.at.isoformat()}" if last else f"going negative at {c.negative.isoformat()}"
        text = f"in debt ({c.balance}); max_delay counted from {base} runs out at {_iso(_max_delay_start(c))}"
    return (text, {"max_delay": _seconds_text(delay) if delay is not None else "none"},
            {"balance": str(c.balance), "negative_since": _iso(c.negative),
             "last_payment": _iso(last.at if last else None)})


def _unpaid(snapshot: AccountSnapshot, t: datetime) -> Decimal:
    return sum(
        (i.amount for i in snapshot.invoices if i.issued_at <= t and (i.paid_at is None or i.paid_at > t)),
        Decimal(0),
    )


def _unpaid_total(c: _Context) -> TriggerState:
    snapshot = c.snapshot
    limit = c.policy.triggers.unpaid_total_over
    enabled = limit is not None

    def over(t: datetime) -> bool:
        return limit is not None and _unpaid(snapshot, t) > limit

    points = [i.issued_at for i in snapshot.invoices] + [i.paid_at for i in snapshot.invoices if i.paid_at]
    since = _holding_since(over, points, c.now) if enabled else None
    upcoming = _first_future(over, points, c.now) if enabled and since is None else None
    return _state("unpaid_total_over", enabled, since, upcoming, c)


def _unpaid_total_reason(state: TriggerState, c: _Context) -> _Written:
    limit = c.policy.triggers.unpaid_total_over
    total = _unpaid(c.snapshot, c.now)
    text = f"unpaid invoices total {total}, limit {limit}" if limit is not None else "no unpaid_total_over set"
    return text, {"unpaid_total_over": str(limit)}, {"unpaid_total": str(total)}


def _oldest_unpaid(c: _Context) -> Invoice | None:
    unpaid = [i for i in c.snapshot.invoices if i.issued_at <= c.now and (i.paid_at is None or i.paid_at > c.now)]
    return min(unpaid, key=lambda i: (i.due_at, i.id)) if unpaid else None


def _invoice_expiry(c: _Context, oldest: Invoice | None) -> tuple[datetime | None, datetime | None]:
    """When the oldest unpaid invoice expires, and when the grace after that ends (the trigger's start)."""
    expiration = c.policy.triggers.invoice_expiration
    if expiration is None or oldest is None:
        return None, None
    expired_at = oldest.due_at + timedelta(days=expiration)
    return expired_at, expired_at + timedelta(days=c.policy.triggers.stop_grace or 0)


def _invoice_expiration(c: _Context) -> TriggerState:
    # A future invoice may also become the oldest unpaid one: the next check covers its issue time.
    _, start = _invoice_expiry(c, _oldest_unpaid(c))
    return _state("invoice_expiration", c.policy.triggers.invoice_expiration is not None,
                  start if start and start <= c.now else None, start, c)


def _invoice_expiration_reason(state: TriggerState, c: _Context) -> _Written:
    expiration = c.policy.triggers.invoice_expiration
    grace = c.policy.triggers.stop_grace or 0
    oldest = _oldest_unpaid(c)
    expired_at, start = _invoice_expiry(c, oldest)
    if expiration is None:
        text = "no invoice_expiration set"
    elif oldest is None:
        text = "no unpaid invoice"
    else:
        text = (f"oldest unpaid invoice {oldest.id} due {oldest.due_at.isoformat()} expires {_iso(expired_at)}; "
                f"stopped after {grace} more days of grace at {_iso(start)}")
    return (text, {"invoice_expiration_days": str(expiration), "stop_grace_days": str(grace)},
            {"oldest_unpaid_invoice": oldest.id if oldest else "none",
             "due_at": _iso(oldest.due_at if oldest else None)})


def _trial(c: _Context) -> TriggerState:
    enabled = c.policy.triggers.trial
    ends = c.snapshot.trial_ends_at
    start = ends if enabled and ends is not None and not c.snapshot.has_billing_profile else None
    return _state("trial", enabled, start if start and start <= c.now else None, start, c)


def _trial_reason(state: TriggerState, c: _Context) -> _Written:
    ends = c.snapshot.trial_ends_at
    if ends is None:
        text = "not a trial account"
    elif c.snapshot.has_billing_profile:
        text = "the trial user has a billing profile"
    else:
        text = f"trial ends {ends.isoformat()} and there is no billing profile"
    return (text, {}, {"trial_ends_at": _iso(ends),
                       "has_billing_profile": str(c.snapshot.has_billing_profile).lower()})


_WRITERS: dict[str, Callable[[TriggerState, _Context], _Written]] = {
    "over_limit": _over_limit_reason,
    "subzero_period": _subzero_reason,
    "max_delay": _max_delay_reason,
    "unpaid_total_over": _unpaid_total_reason,
    "invoice_expiration": _invoice_expiration_reason,
    "trial": _trial_reason,
}
