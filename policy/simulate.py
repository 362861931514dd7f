"""Applying a decision to a snapshot the way the agent records it, without any I/O.

Used by :func:`policy.forecast` and by replays: every measure is taken at the decision's ``now``.
"""

from __future__ import annotations

from dataclasses import replace

from policy.model import AccountSnapshot, Decision, Episode, Hold, StageTaken

__all__ = ["apply_decision"]


def apply_decision(snapshot: AccountSnapshot, decision: Decision) -> AccountSnapshot:
    """The snapshot after ``decision`` took effect at ``decision.now``: the episode started or ended,
    stages recorded as taken now, holds added (suspend) or released, the account deleted (delete)."""
    now = decision.now
    episode = snapshot.episode
    holds = list(snapshot.holds)
    deleted = snapshot.deleted
    if decision.start_episode is not None:
        episode = Episode(started_at=decision.start_episode.at, trigger=decision.start_episode.trigger)
    if decision.end_episode is not None:
        episode = None
    for measure in decision.measures:
        if episode is not None:
            episode = replace(episode, stages_taken=(*episode.stages_taken, StageTaken(measure.stage, now)))
        if measure.action == "suspend" and measure.hold is not None and all(h.kind != measure.hold for h in holds):
            holds.append(Hold(kind=measure.hold, since=now, reason=measure.stage, actor="policy"))
        if measure.action == "delete":
            deleted = True
    holds = [h for h in holds if h.kind not in decision.release_holds]
    in_flight = tuple(s for s in snapshot.in_flight if all(m.stage != s for m in decision.measures))
    return replace(snapshot, episode=episode, holds=tuple(holds), deleted=deleted, in_flight=in_flight)
