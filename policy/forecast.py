"""Every measure still to come for an account, assuming nothing is paid and each measure takes
effect when it is due."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from policy.durations import require_aware
from policy.engine import evaluate
from policy.model import AccountSnapshot, Action, ResolvedPolicy, StageTaken
from policy.simulate import apply_decision

__all__ = ["ForecastItem", "forecast"]

_MAX_STEPS = 1000


@dataclass(frozen=True)
class ForecastItem:
    stage: str
    action: Action
    due_at: datetime
    reason: str


def _settle_in_flight(snapshot: AccountSnapshot, now: datetime) -> AccountSnapshot:
    """Stages being applied are assumed to take effect now."""
    if not snapshot.in_flight or snapshot.episode is None:
        return replace(snapshot, in_flight=())
    taken = list(snapshot.episode.stages_taken)
    taken += [StageTaken(stage, now) for stage in snapshot.in_flight]
    return replace(snapshot, in_flight=(), episode=replace(snapshot.episode, stages_taken=tuple(taken)))


def forecast(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, until: datetime) -> list[ForecastItem]:
    """The measures due from ``now`` up to and including ``until``, in order. Overdue measures are
    listed with their original due time (they are taken at ``now``)."""
    require_aware(now, "now")
    require_aware(until, "until")
    items: list[ForecastItem] = []
    snap = _settle_in_flight(snapshot, now)
    t = now
    for _ in range(_MAX_STEPS):
        if t > until or snap.deleted:
            break
        decision = evaluate(snap, policy, t)
        items += [ForecastItem(m.stage, m.action, m.due_at, m.reason.text) for m in decision.measures]
        snap = apply_decision(snap, decision)
        if decision.measures:
            continue  # what was just taken can make the next stage due at once (a deletion after its warning)
        if decision.next_check is None or decision.next_check <= t:
            break
        t = decision.next_check
    return items
