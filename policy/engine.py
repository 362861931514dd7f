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

__all__ = [
    "DEBT_RESUSPEND",
    "TRIAL_RESUSPEND",
    "Evaluation",
    "balance_at",
    "check_snapshot",
    "evaluate",
    "evaluate_full",
    "is_resuspension",
]


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
    if len(holding) == 1:
        return holding[0]
    return min(holding, key=lambda t: (t.since, TRIGGER_ORDER.index(t.name)))


def evaluate_full(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime) -> Evaluation:
    require_aware(now, "now")
    check_snapshot(snapshot)
    ledger = Ledger(snapshot.ledger)
    balance = ledger.balance(now)
    triggers = evaluate_triggers(snapshot, policy, now, ledger)
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
        start_episode = hit  # the episode starts when the trigger began to hold, for the trigger's reason
        if override_start is not None:
            reason = hit.reason
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
    debt_again = _debt_resuspension(snapshot, policy, now, hold_kind, taken, triggers)
    resuspended = [record.at for record in taken if is_resuspension(record.stage, DEBT_RESUSPEND)]
    resuspended_at = now if debt_again is not None else max(resuspended, default=None)
    plan = _schedule(snapshot, policy, now, start, taken, hold_kind, hit, resuspended_at, debt_again is not None)
    if debt_again is not None:
        plan.measures.insert(0, debt_again)
    elif plan.held_back is not None and plan.held_back.rule.startswith("override.") and plan.next_check is not None:
        # a promise to pay still running: what comes first when it expires unpaid is the re-suspension
        pending = _debt_resuspension(snapshot, policy, plan.next_check, hold_kind, taken, triggers)
        if pending is not None:
            plan.next = UpcomingMeasure(pending.stage, pending.action, plan.next_check)
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
DEBT_RESUSPEND = "debt_resuspend"


def is_resuspension(stage: str, prefix: str) -> bool:
    """Whether ``stage`` names a re-suspension of kind ``prefix``: ``prefix`` itself or ``prefix-N``."""
    if stage == prefix:
        return True
    head, _, number = stage.rpartition("-")
    return head == prefix and number.isdigit()


def _taken_suspension(policy: ResolvedPolicy, taken: tuple[StageTaken, ...]) -> tuple[Stage, StageTaken] | None:
    """The policy's suspension stage taken last in this episode, with its record."""
    stages = {s.name: s for s in policy.stages if s.enabled and s.action == "suspend"}
    found = [(stages[record.stage], record) for record in taken if record.stage in stages]
    return max(found, key=lambda pair: pair[1].at) if found else None


def _debt_resuspension(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, hold_kind: HoldKind,
                       taken: tuple[StageTaken, ...], triggers: list[TriggerState]) -> Measure | None:
    """A debtor whose debt hold was lifted by an admin's promise to pay (``resume --grace``) is suspended
    again once no pause or exemption holds measures back and a debt trigger still holds."""
    if hold_kind != "debt" or not taken or any(h.kind == "debt" for h in snapshot.holds):
        return None  # (nothing taken yet: no suspension to take again)
    if any(is_resuspension(name, DEBT_RESUSPEND) for name in snapshot.in_flight):
        return None  # already on its way
    if active_overrides(snapshot, "exempt", now) or active_overrides(snapshot, "pause", now):
        return None
    debt = [t for t in triggers if t.holds and t.name != "trial"]
    suspension = _taken_suspension(policy, taken)
    if not debt or suspension is None:
        return None
    stage, record = suspension
    trigger = _earliest(debt)
    assert trigger.since is not None
    # the promise broken is a pause given after the account was last suspended
    last = max([record.at, *(r.at for r in taken if is_resuspension(r.stage, DEBT_RESUSPEND))])
    expired = [o for o in snapshot.overrides if o.kind == "pause" and last <= o.created_at <= now
               and o.expires_at is not None and o.expires_at <= now]
    pause = max(expired, key=lambda o: (o.expires_at, o.created_at)) if expired else None
    inputs = {"suspension_stage": stage.name, "suspended_at": record.at.isoformat(), "trigger": trigger.name,
              "trigger_since": trigger.since.isoformat(), "debt_hold": "none",
              **{f"trigger.{k}": v for k, v in trigger.reason.inputs.items()}}
    if pause is not None:
        assert pause.expires_at is not None
        inputs.update({"pause_until": pause.expires_at.isoformat(), "pause_actor": pause.actor,
                       "pause_reason": pause.reason, "pause_created_at": pause.created_at.isoformat()})
        why = (f"the promise to pay (pause until {pause.expires_at.isoformat()} by {pause.actor}: {pause.reason}) "
               f"expired unpaid")
    else:
        why = "the debt hold was lifted by hand but the debt remains"
    # Each re-suspension is its own stage record, so stores keyed on (episode, stage) keep them apart.
    count = sum(1 for r in taken if is_resuspension(r.stage, DEBT_RESUSPEND))
    return Measure(
        stage=DEBT_RESUSPEND if count == 0 else f"{DEBT_RESUSPEND}-{count + 1}",
        action="suspend",
        due_at=pause.expires_at if pause is not None and pause.expires_at is not None else now,
        template=stage.template,
        hold="debt",
        reason=Reason(
            rule="debt.resuspend",
            text=(f"{why}: the account is suspended again ({trigger.name} holds since "
                  f"{trigger.since.isoformat()}; stage {stage.name} was taken in this episode at "
                  f"{record.at.isoformat()}); later stages count from this re-suspension"),
            thresholds={"credit_limit": str(policy.credit_limit)},
            inputs=inputs,
        ),
    )


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


def _resuspension_floor(enabled: list[Stage], index: int, taken: tuple[StageTaken, ...],
                        resuspended_at: datetime | None, tz: ZoneInfo) -> datetime | None:
    """After a re-suspension, stage ``index`` (one after the suspension stage) is not due before the
    delays from the suspension stage up to it have run again from the re-suspension: an account is
    never deleted unless it has been suspended for the configured time since it was last suspended."""
    if resuspended_at is None:
        return None
    names = {record.stage for record in taken}
    suspensions = [i for i, s in enumerate(enabled[:index]) if s.action == "suspend" and s.name in names]
    if not suspensions:
        return None
    floor = resuspended_at
    for stage in enabled[suspensions[-1] + 1:index + 1]:
        floor = after_due(stage.after, floor, tz)
    return floor


def _undelivered_warnings(enabled: list[Stage], index: int, taken: tuple[StageTaken, ...]) -> list[str]:
    """The deletion warnings (the notice stages between the suspension and the delete stage ``index``)
    when none of them was delivered in this episode; empty when one was, or when the policy has none."""
    suspensions = [i for i, s in enumerate(enabled[:index]) if s.action == "suspend"]
    first = suspensions[-1] + 1 if suspensions else 0
    warnings = [s.name for s in enabled[first:index] if s.action == "notice"]
    if any(record.stage in warnings and not record.undelivered for record in taken):
        return []
    return warnings


def _schedule(snapshot: AccountSnapshot, policy: ResolvedPolicy, now: datetime, start: datetime,
              taken: tuple[StageTaken, ...], hold_kind: HoldKind, hit: TriggerHit,
              resuspended_at: datetime | None = None, resuspending: bool = False) -> _Plan:
    tz = ZoneInfo(policy.timezone)
    enabled = [s for s in policy.stages if s.enabled]
    index = 0
    ref, ref_what = start, "the episode start"
    last: StageTaken | None = None
    for record in taken:
        for i, stage in enumerate(enabled):
            if stage.name == record.stage and i + 1 > index:
                index = i + 1
                last = record
                ref, ref_what = record.at, f"stage {stage.name} taken"
                if record.undelivered:
                    ref_what += " (its notice failed for good)"
    if last is not None and last.undelivered and not policy.proceed_after_failed_notice:
        upcoming = enabled[index] if index < len(enabled) else None
        return _Plan([], UpcomingMeasure(upcoming.name, upcoming.action, after_due(upcoming.after, ref, tz))
                     if upcoming is not None else None, None, Reason(
            rule="stage.notice_undelivered",
            text=(f"the notice of stage {last.stage} failed for good at {last.at.isoformat()} and "
                  f"notices.proceed_after_failed_notice is false: the next stages wait until an admin acts"),
            inputs={"undelivered_stage": last.stage, "failed_at": last.at.isoformat()}))
    if index >= len(enabled):
        return _Plan([], None, None, None)
    stage = enabled[index]
    flying = [n for n in snapshot.in_flight if n == stage.name or is_resuspension(n, DEBT_RESUSPEND)]
    if flying:
        return _Plan([], None, None, Reason(
            rule="stage.in_flight",
            text=f"stage {flying[0]} is being applied; the next counts from when it takes effect",
            inputs={"in_flight": ", ".join(snapshot.in_flight)}))

    def due_at(i: int, ref: datetime) -> tuple[datetime, datetime | None]:
        """The stage's due time, and the re-suspension floor when that is what sets it."""
        due = after_due(enabled[i].after, ref, tz)
        floor = _resuspension_floor(enabled, i, taken, resuspended_at, tz)
        return (floor, floor) if floor is not None and floor > due else (due, None)

    due, floor = due_at(index, ref)
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
    suspended = resuspending or any(h.kind in ("debt", "trial", "admin") for h in snapshot.holds)
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
        if stage.action == "delete":
            warnings = _undelivered_warnings(enabled, index, taken)
            if warnings:
                reason = Reason(
                    rule="stage.delete_needs_delivered_warning",
                    text=(f"{stage.name} is due but no deletion warning ({', '.join(warnings)}) was delivered; "
                          f"deletion waits (an admin may still delete the account explicitly)"),
                    inputs={"warnings": ", ".join(warnings)})
                return _Plan(measures, UpcomingMeasure(stage.name, stage.action, due), None, reason)
        after, ref_at = _after_text(stage), ref.isoformat()
        counted = (f"{after} after {ref_what} at {ref_at}" if floor is None else
                   f"the delays from the suspension on, counted again from the re-suspension at "
                   f"{resuspended_at.isoformat() if resuspended_at else ''}")
        measures.append(Measure(
            stage=stage.name,
            action=stage.action,
            due_at=due,
            template=stage.template,
            hook=stage.hook,
            hold=hold_kind if stage.action == "suspend" else None,
            reason=Reason(
                rule=f"stage.{stage.name}",
                text=(f"{stage.name} ({stage.action}) is due at {due.isoformat()}: {counted}; "
                      f"trigger {hit.trigger} holds since {hit.at.isoformat()}"),
                thresholds={"after": after, "timezone": policy.timezone},
                inputs={"counted_from": ref_at, "counted_from_event": ref_what, "trigger": hit.trigger,
                        "now": now.isoformat(),
                        **({"resuspended_at": resuspended_at.isoformat()} if floor and resuspended_at else {}),
                        **{f"trigger.{k}": v for k, v in hit.reason.inputs.items()}},
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
        due, floor = due_at(index, ref)
