"""A JSON-able account of why the evaluator decides what it decides."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from policy.engine import evaluate_full
from policy.model import AccountSnapshot, Measure, Reason, ResolvedPolicy, Stage

__all__ = ["explain"]


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def _reason(r: Reason | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"rule": r.rule, "text": r.text, "thresholds": dict(r.thresholds), "inputs": dict(r.inputs)}


def _measure(m: Measure) -> dict[str, Any]:
    return {"stage": m.stage, "action": m.action, "due_at": _iso(m.due_at), "template": m.template,
            "hook": m.hook, "hold": m.hold, "reason": _reason(m.reason)}


def _stage(s: Stage) -> dict[str, Any]:
    return {"name": s.name, "action": s.action, "after_days": s.after.days, "after_seconds": s.after.seconds,
            "template": s.template, "enabled": s.enabled, "hook": s.hook}


def _plain(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _policy(policy: ResolvedPolicy) -> dict[str, Any]:
    values = {
        "timezone": policy.timezone,
        "currency": policy.currency,
        "credit_limit": policy.credit_limit,
        "financial_threshold": policy.spend_threshold,
        "resume_on_payment": policy.resume_on_payment,
        "pay_with_negative": policy.pay_with_negative,
        **{f"triggers.{k}": v for k, v in asdict(policy.triggers).items()},
        "guaranteed_payment.limit": policy.guaranteed_payment.limit,
        "guaranteed_payment.days": policy.guaranteed_payment.days,
    }
    fields = {k: {"value": _plain(v), "source": policy.sources.get(k, "builtin")} for k, v in values.items()}
    if policy.financial_threshold is None:
        fields["financial_threshold"]["source"] = f"credit_limit ({fields['credit_limit']['source']})"
    fields["stages"] = {"value": [_stage(s) for s in policy.stages], "source": policy.sources.get("stages", "builtin")}
    return fields


_LAYER_RANK = {"defaults": 0, "reseller": 1, "plan": 2, "account": 3}


def _layers(policy: ResolvedPolicy) -> list[str]:
    """The layers that set at least one field, from the most general to the account's own."""
    used = {v for v in policy.sources.values() if v.split(":", 1)[0] in _LAYER_RANK}
    return sorted(used, key=lambda v: _LAYER_RANK[v.split(":", 1)[0]])


def explain(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> dict[str, Any]:
    """Layers and sources per field, every trigger (fired?, at, inputs, thresholds) and the decision
    (measures, next, next_check, held_back), as plain JSON-able values."""
    ev = evaluate_full(snapshot, policy, now)
    d = ev.decision
    episode = snapshot.episode
    return {
        "account": snapshot.id,
        "now": _iso(now),
        "balance": str(d.balance),
        "in_debt": d.in_debt,
        "layers": _layers(policy),
        "policy": _policy(policy),
        "triggers": [
            {"trigger": t.name, "enabled": t.enabled, "fired": t.holds, "at": _iso(t.since),
             "upcoming": _iso(t.upcoming), "text": t.reason.text, "thresholds": dict(t.reason.thresholds),
             "inputs": dict(t.reason.inputs)}
            for t in ev.triggers
        ],
        "episode": None if episode is None else {
            "started_at": _iso(episode.started_at), "trigger": episode.trigger,
            "counted_from": _iso(ev.episode_start),
            "stages_taken": [{"stage": s.stage, "at": _iso(s.at), **({"undelivered": True} if s.undelivered else {})}
                             for s in episode.stages_taken],
        },
        "holds": [{"kind": h.kind, "since": _iso(h.since), "reason": h.reason, "actor": h.actor}
                  for h in snapshot.holds],
        "decision": {
            "trigger": None if d.trigger is None else {"trigger": d.trigger.trigger, "at": _iso(d.trigger.at)},
            "start_episode": None if d.start_episode is None else {
                "trigger": d.start_episode.trigger, "at": _iso(d.start_episode.at)},
            "end_episode": _reason(d.end_episode),
            "release_holds": list(d.release_holds),
            "resume": d.resume,
            "measures": [_measure(m) for m in d.measures],
            "next": None if d.next is None else {"stage": d.next.stage, "action": d.next.action,
                                                 "due_at": _iso(d.next.due_at)},
            "next_check": _iso(d.next_check),
            "held_back": _reason(d.held_back),
        },
    }
