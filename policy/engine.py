"""The evaluator: ``(snapshot, resolved policy, now) -> Decision``, pure and deterministic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from policy.durations import after_due, require_aware
from policy.model import (
    AccountSnapshot,
    Decision,
    HoldKind,
    Measure,
    Reason,
    ResolvedPolicy,
    Stage,
    StageTaken,
    TriggerHit,
    UpcomingMeasure,
)
from policy.triggers import TRIGGER_ORDER, Ledger, TriggerState, active_overrides, evaluate_triggers

__all__ = ["TRIAL_RESUSPEND", "Evaluation", "balance_at", "check_snapshot", "evaluate", "evaluate_full"]


def balance_at(snapshot: AccountSnapshot, now: datetime) -> Decimal:
    """The balance at ``now``: the sum of the ledger amounts with ``at <= now``."""
    require_aware(now, "now")
    return sum((e.amount for e in snapshot.ledger if e.at <= now), Decimal(0))


def check_snapshot(snapshot: AccountSnapshot) -> None:
    """ValueError when any time in ``snapshot`` is naive or any amount is not a Decimal."""
    for e in snapshot.ledger:
        require_aware(e.at, f"ledger entry {e.ref or ''} at")
        if not isinstance(e.amount, Decimal):
            raise ValueError(f"ledger amounts must be Decimal, got {type(e.amount).__name__}")
    for i in snapshot.invoices:
        require_aware(i.issued_at, f"invoice {i.id} issued_at")
        require_aware(i.due_at, f"invoice {i.id} due_at")
        if i.paid_at is not None:
            require_aware(i.paid_at, f"invoice {i.id} paid_at")
        if not isinstance(i.amount, Decimal):
            raise ValueError(f"invoice amounts must be Decimal, got {type(i.amount).__name__}")
    for h in snapshot.holds:
        require_aware(h.since, f"{h.kind} hold since")
    for o in snapshot.overrides:
        require_aware(o.created_at, f"{o.kind} override created_at")
        if o.expires_at is not None:
            require_aware(o.expires_at, f"{o.kind} override expires_at")
        if o.at is not None:
            require_aware(o.at, f"{o.kind} override at")
        if o.amount is not None and not isinstance(o.amount, Decimal):
            raise ValueError(f"override amounts must be Decimal, got {type(o.amount).__name__}")
    if snapshot.trial_ends_at is not None:
        require_aware(snapshot.trial_ends_at, "trial_ends_at")
    if snapshot.episode is not None:
        require_aware(snapshot.episode.started_at, "episode started_at")
        for taken in snapshot.episode.stages_taken:
            require_aware(taken.at, f"stage {taken.stage} taken at")


@dataclass(frozen=True)
class Evaluation:
    """A decision together with the trigger states it was made from (for ``explain``)."""

    decision: Decision
    triggers: list[TriggerState]
    episode_start: datetime | None


def evaluate(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> Decision:
    """What must happen to the account at ``now`` and when to look at it again."""
    return evaluate_full(snapshot, policy, now).decision


def _after_text(stage: Stage) -> str:
    if stage.after.seconds is not None:
        return f"{stage.after.seconds}s"
    if stage.after.days is not None:
        return f"{stage.after.days} calendar days"
    return "immediately"


def _future(times: list[datetime | None], now: datetime) -> datetime | None:
    future = [t for t in times if t is not None and t > now]
    return min(future) if future else None


def _input_times(snapshot: AccountSnapshot, triggers: list[TriggerState]) -> list[datetime | None]:
    """Every moment at which, without new input, a trigger or override may change."""
    times: list[datetime | None] = [t.upcoming for t in triggers]
    times += [e.at for e in snapshot.ledger]
    for i in snapshot.invoices:
        times += [i.issued_at, i.paid_at]
    for o in snapshot.overrides:
        times += [o.created_at, o.expires_at]
    times.append(snapshot.trial_ends_at)
    return times


def _earliest(holding: list[TriggerState]) -> TriggerState:
    return min(holding, key=lambda t: (t.since, TRIGGER_ORDER.index(t.name)))


def evaluate_full(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> Evaluation:
    require_aware(now, "now")
    check_snapshot(snapshot)
    ledger = Ledger(snapshot.ledger)
    balance = ledger.balance(now)
    triggers = evaluate_triggers(snapshot, policy, now)
    holding = [t for t in triggers if t.holds]
    in_debt = any(t.name != "trial" for t in holding)
    if snapshot.deleted:
        return Evaluation(Decision(account=snapshot.id, now=now, balance=balance, in_debt=in_debt, trigger=None),
                          triggers, None)
    hit = None
    if holding:
        first = _earliest(holding)
        assert first.since is not None
        hit = TriggerHit(trigger=first.name, at=first.since, reason=first.reason)
    inputs_next = _future(_input_times(snapshot, triggers), now)
    if hit is None:
        decision = _exit(snapshot, policy, now, balance, in_debt, ledger, inputs_next)
        return Evaluation(decision, triggers, None)
    return _in_episode(snapshot, policy, now, balance, in_debt, hit, inputs_next, triggers)


def _exit(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, balance: Decimal, in_debt: bool,
          ledger: Ledger, inputs_next: datetime | None) -> Decision:
    """No trigger holds: end the episode (if any) and release the episode's holds."""
    end = None
    if snapshot.episode is not None:
        end = Reason(
            rule="exit.no_trigger",
            text="no trigger holds any more: the episode ends and its counters reset",
            thresholds={"credit_limit": str(policy.credit_limit)},
            inputs={"balance": str(balance), "episode_started_at": snapshot.episode.started_at.isoformat(),
                    "episode_trigger": snapshot.episode.trigger},
        )
    kinds = {h.kind for h in snapshot.holds}
    release: list[HoldKind] = []
    held_back = None
    if "debt" in kinds:
        allowed, why = _payment_releases(policy, ledger, now)
        if allowed:
            release.append("debt")
        else:
            held_back = why
    if "trial" in kinds:
        release.append("trial")
    remaining = kinds - set(release)
    return Decision(
        account=snapshot.id,
        now=now,
        balance=balance,
        in_debt=in_debt,
        trigger=None,
        end_episode=end,
        release_holds=tuple(release),
        resume=bool(release) and not remaining,
        next_check=inputs_next,
        held_back=held_back,
    )


def _payment_releases(policy: ResolvedPolicy, ledger: Ledger, now: datetime) -> tuple[bool, Reason | None]:
    rule = policy.resume_on_payment
    if rule is True:
        return True, None
    entry = ledger.clearing_entry(now)
    method = entry.method if entry is not None else None
    if rule is False:
        allowed_text = "never (resume_on_payment: false)"
    else:
        allowed_text = ", ".join(sorted(rule))
        if method is not None and method in rule:
            return True, None
    return False, Reason(
        rule="exit.resume_on_payment",
        text=(f"the debt is paid (by {method or 'an unknown method'}), but resume_on_payment allows automatic "
              f"resumption only for: {allowed_text}; an admin must resume the account"),
        thresholds={"resume_on_payment": allowed_text},
        inputs={"payment_method": method or "unknown", "payment_ref": (entry.ref or "") if entry else "",
                "payment_at": entry.at.isoformat() if entry else "none"},
    )


def _in_episode(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, balance: Decimal,
                in_debt: bool, hit: TriggerHit, inputs_next: datetime | None,
                triggers: list[TriggerState]) -> Evaluation:
    debt_dates = active_overrides(snapshot, "debt_date", now)
    override_start = max((o.at or o.created_at) for o in debt_dates) if debt_dates else None
    start_episode = None
    if snapshot.episode is None:
        start = override_start or hit.at
        reason = hit.reason
        if override_start is not None:
            reason = Reason(rule=reason.rule, text=f"{reason.text}; episode start set by the outstanding-balance "
                            f"date {override_start.isoformat()}", thresholds=reason.thresholds,
                            inputs={**reason.inputs, "debt_date": override_start.isoformat()})
        start_episode = TriggerHit(trigger=hit.trigger, at=start, reason=reason)
        episode_trigger = hit.trigger
        taken: tuple[StageTaken, ...] = ()
    else:
        start = override_start or snapshot.episode.started_at
        episode_trigger = snapshot.episode.trigger
        taken = snapshot.episode.stages_taken
    hold_kind: HoldKind = "trial" if episode_trigger == "trial" else "debt"
    plan = _schedule(snapshot, policy, now, start, taken, hold_kind, hit)
    resuspend = _trial_resuspension(snapshot, policy, now, hold_kind, taken, triggers)
    if resuspend is not None and (plan.held_back is None or not plan.held_back.rule.startswith("override.")):
        plan.measures.insert(0, resuspend)
    next_check = _future([plan.next_check, inputs_next], now)
    decision = Decision(
        account=snapshot.id,
        now=now,
        balance=balance,
        in_debt=in_debt,
        trigger=hit,
        start_episode=start_episode,
        measures=tuple(plan.measures),
        next=plan.next,
        next_check=next_check,
        held_back=plan.held_back,
    )
    return Evaluation(decision, triggers, start)


TRIAL_RESUSPEND = "trial_resuspend"


def _trial_resuspension(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, hold_kind: HoldKind,
                        taken: tuple[StageTaken, ...], triggers: list[TriggerState]) -> Measure | None:
    """An expired trial resumed by hand is suspended again unless it now has a billing profile."""
    if hold_kind != "trial" or any(h.kind == "trial" for h in snapshot.holds):
        return None
    if any(name.startswith(TRIAL_RESUSPEND) for name in snapshot.in_flight):
        return None  # already on its way
    trial = next((t for t in triggers if t.name == "trial" and t.holds), None)
    names = {record.stage for record in taken}
    suspend = next((s for s in policy.stages if s.enabled and s.action == "suspend" and s.name in names), None)
    if trial is None or suspend is None:
        return None
    # Each re-suspension is its own stage record, so stores keyed on (episode, stage) keep them apart.
    count = sum(1 for record in taken if record.stage.startswith(TRIAL_RESUSPEND))
    return Measure(
        stage=TRIAL_RESUSPEND if count == 0 else f"{TRIAL_RESUSPEND}-{count + 1}",
        action="suspend",
        due_at=now,
        hold="trial",
        reason=Reason(
            rule="trial.resuspend",
            text=(f"the expired trial was resumed but still has no billing profile: suspended again "
                  f"(stage {suspend.name} was taken in this episode)"),
            inputs=dict(trial.reason.inputs),
        ),
    )


@dataclass
class _Plan:
    measures: list[Measure]
    next: UpcomingMeasure | None
    next_check: datetime | None
    held_back: Reason | None


def _schedule(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, start: datetime,
              taken: tuple[StageTaken, ...], hold_kind: HoldKind, hit: TriggerHit) -> _Plan:
    tz = ZoneInfo(policy.timezone)
    enabled = [s for s in policy.stages if s.enabled]
    index = 0
    ref, ref_what = start, "the episode start"
    for record in taken:
        for i, stage in enumerate(enabled):
            if stage.name == record.stage and i + 1 > index:
                index = i + 1
                ref, ref_what = record.at, f"stage {stage.name} taken"
    if index >= len(enabled):
        return _Plan([], None, None, None)
    stage = enabled[index]
    if stage.name in snapshot.in_flight:
        return _Plan([], None, None, Reason(
            rule="stage.in_flight",
            text=f"stage {stage.name} is being applied; the next counts from when it takes effect",
            inputs={"in_flight": ", ".join(snapshot.in_flight)}))
    due = after_due(stage.after, ref, tz)
    held = active_overrides(snapshot, "exempt", now) + active_overrides(snapshot, "pause", now)
    if held:
        until = [o.expires_at for o in held]
        expiry = None if any(u is None for u in until) else max(u for u in until if u is not None)
        first = held[0]
        until_text = expiry.isoformat() if expiry else "revoked"
        waiting = f"; {stage.name} is due since {due.isoformat()}" if now >= due else ""
        reason = Reason(
            rule=f"override.{first.kind}",
            text=f"{first.kind} by {first.actor} ({first.reason}) until {until_text}: automatic measures wait{waiting}",
            inputs={"actor": first.actor, "reason": first.reason, "expires_at": until_text},
        )
        upcoming_due = max(due, expiry) if expiry is not None else due
        return _Plan([], UpcomingMeasure(stage.name, stage.action, upcoming_due), expiry, reason)
    suspended = any(h.kind in ("debt", "trial", "admin") for h in snapshot.holds)
    measures: list[Measure] = []
    while True:
        if now < due:
            return _Plan(measures, UpcomingMeasure(stage.name, stage.action, due), due, None)
        if stage.action == "delete" and not suspended:
            reason = Reason(
                rule="stage.delete_needs_suspension",
                text=f"{stage.name} is due but the account is not suspended (it was resumed by hand); deletion waits",
                inputs={"holds": ", ".join(sorted(h.kind for h in snapshot.holds)) or "none"})
            return _Plan(measures, UpcomingMeasure(stage.name, stage.action, due), None, reason)
        measures.append(Measure(
            stage=stage.name,
            action=stage.action,
            due_at=due,
            template=stage.template,
            hook=stage.hook,
            hold=hold_kind if stage.action == "suspend" else None,
            reason=Reason(
                rule=f"stage.{stage.name}",
                text=(f"{stage.name} ({stage.action}) is due at {due.isoformat()}: {_after_text(stage)} after "
                      f"{ref_what} at {ref.isoformat()}; trigger {hit.trigger} holds since {hit.at.isoformat()}"),
                thresholds={"after": _after_text(stage), "timezone": policy.timezone},
                inputs={"counted_from": ref.isoformat(), "counted_from_event": ref_what, "trigger": hit.trigger,
                        "now": now.isoformat(), **{f"trigger.{k}": v for k, v in hit.reason.inputs.items()}},
            ),
        ))
        if stage.action == "suspend":
            suspended = True
        index += 1
        if index >= len(enabled):
            return _Plan(measures, None, None, None)
        # The measure just emitted is taken now: the next one counts from now.
        ref, ref_what = now, f"stage {stage.name} taken"
        stage = enabled[index]
        due = after_due(stage.after, ref, tz)
