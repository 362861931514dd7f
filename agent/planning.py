"""Evaluating the due accounts, a chunk at a time (what a tick records, :mod:`agent.tick`), and the plan:
what a tick at a moment would do, changing nothing.

Everything here reads through SQLAlchemy Core (:mod:`agent.store.snapshots`) with a ``Connection`` or a
``Session``: a plan runs without the ORM, which it never loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Connection

from agent.store.snapshots import BATCH, DueAccount, due_chunks, load_snapshots
from policy import PolicyError, evaluate
from policy.model import AccountSnapshot, Decision, ResolvedPolicy

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from policy.loader import PolicySet

__all__ = ["PLAN_CHUNK", "Evaluated", "Layered", "PlannedMeasure", "evaluate_chunks", "plan", "resolve_for"]


class Layered(Protocol):
    """What the policy of an account is layered by: an account row, or a Core row of these columns."""

    @property
    def id(self) -> str: ...
    @property
    def plan(self) -> str | None: ...
    @property
    def reseller(self) -> str | None: ...
    @property
    def policy(self) -> dict[str, Any] | None: ...
    @property
    def currency(self) -> str: ...


def resolve_for(policy: PolicySet, acc: Layered) -> ResolvedPolicy:
    """The policy of ``acc``, in the account's own currency (the one place that layers it)."""
    return policy.resolve(acc.id, acc.plan, acc.reseller, acc.policy, acc.currency)


@dataclass
class Evaluated:
    account: DueAccount
    snapshot: AccountSnapshot
    policy: ResolvedPolicy | None
    decision: Decision | None
    error: str | None = None
    changed_at: datetime | None = None  # when the account's inputs had last changed, as it was evaluated


def _evaluate(policy: PolicySet, acc: DueAccount, snap: AccountSnapshot, now: datetime) -> Evaluated:
    try:
        resolved = resolve_for(policy, acc)
        decision = evaluate(snap, resolved, now)
    except (PolicyError, ValueError) as exc:
        return Evaluated(acc, snap, None, None, f"{acc.id}: {exc}", changed_at=acc.changed_at)
    return Evaluated(acc, snap, resolved, decision, changed_at=acc.changed_at)


def evaluate_chunks(session: Session | Connection, policy: PolicySet, now: datetime, *,
                    size: int = BATCH, lock: bool = False) -> Iterator[list[Evaluated]]:
    """Evaluate every account due at ``now``, ``size`` accounts at a time: one query for the chunk's
    accounts and one per table for their snapshots. Reads only the due accounts; the next chunk is read
    when the caller asks for it (after it recorded this one)."""
    for accounts in due_chunks(session, now, size=size, lock=lock):  # lock: see due_chunks
        snaps = load_snapshots(session, accounts)
        yield [_evaluate(policy, acc, snaps[acc.id], now) for acc in accounts]


@dataclass(frozen=True)
class PlannedMeasure:
    account: str
    stage: str
    action: str
    due_at: datetime
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "stage": self.stage, "action": self.action,
                "due_at": self.due_at.isoformat(), "reason": self.reason}


# Accounts per chunk of a plan (each chunk is one range of the index on (next_check_at, id)).
PLAN_CHUNK = 4 * BATCH


def plan(session: Session | Connection, policy: PolicySet, now: datetime) -> tuple[list[PlannedMeasure], list[str]]:
    """What a tick at ``now`` would do (measures and resumes), changing nothing; plus per-account errors."""
    items: list[PlannedMeasure] = []
    errors: list[str] = []
    for chunk in evaluate_chunks(session, policy, now, size=PLAN_CHUNK):
        for ev in chunk:
            if ev.decision is None:
                errors.append(ev.error or ev.account.id)
                continue
            d = ev.decision
            for ms in d.measures:
                items.append(PlannedMeasure(ev.account.id, ms.stage, ms.action, ms.due_at, ms.reason.text))
            if d.resume:
                items.append(PlannedMeasure(ev.account.id, "resume", "resume", now,
                                            "the last hold is released: " + ", ".join(d.release_holds)))
    return items, errors
