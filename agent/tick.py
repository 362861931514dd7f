"""The tick: evaluate the accounts that are due and write each transition with its jobs (the outbox).

Only accounts whose ``next_check_at`` has come are read (through the index). For each, in one
transaction: the episode starts or ends, released holds are released, every measure due now is
recorded as *in flight* together with the jobs it needs (a notice, one host job per service
placement, an event), resume jobs are written when the last hold goes, and the next check time is
set. Nothing here talks to a host or a mail server: the executor drains the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agent.config import AgentSettings
from agent.store import models as m
from agent.store.repo import BATCH, audit, due_accounts, load_snapshots
from policy import PolicyError, evaluate
from policy.model import AccountSnapshot, Decision, Reason, ResolvedPolicy

if TYPE_CHECKING:
    from policy.loader import PolicySet

__all__ = [
    "ACTOR",
    "STAFF_TEMPLATE",
    "Evaluated",
    "PlannedMeasure",
    "TickSummary",
    "evaluate_due",
    "plan",
    "reason_dict",
    "resolve_for",
    "staff_notice_job",
    "tick",
]

log = logging.getLogger("arrears.tick")
ACTOR = "policy"


def reason_dict(reason: Reason | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    return {"rule": reason.rule, "text": reason.text, "thresholds": dict(reason.thresholds),
            "inputs": dict(reason.inputs)}


def resolve_for(policy: PolicySet, acc: m.Account) -> ResolvedPolicy:
    return policy.resolve(acc.id, acc.plan, acc.reseller, acc.policy)


@dataclass
class Evaluated:
    account: m.Account
    snapshot: AccountSnapshot
    policy: ResolvedPolicy | None
    decision: Decision | None
    error: str | None = None


def evaluate_due(session: Session, policy: PolicySet, now: datetime, *,
                 limit: int | None = None) -> Iterator[Evaluated]:
    """Evaluate every account due at ``now``, a batch at a time. Reads only the due accounts."""
    accounts = due_accounts(session, now, limit=limit)
    for i in range(0, len(accounts), BATCH):
        batch = accounts[i:i + BATCH]
        snaps = load_snapshots(session, batch)
        for acc in batch:
            snap = snaps[acc.id]
            try:
                resolved = resolve_for(policy, acc)
                decision = evaluate(snap, resolved, now)
            except (PolicyError, ValueError) as exc:
                yield Evaluated(acc, snap, None, None, f"{acc.id}: {exc}")
                continue
            yield Evaluated(acc, snap, resolved, decision)


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


def plan(session: Session, policy: PolicySet, now: datetime) -> tuple[list[PlannedMeasure], list[str]]:
    """What a tick at ``now`` would do (measures and resumes), changing nothing; plus per-account errors."""
    items: list[PlannedMeasure] = []
    errors: list[str] = []
    for ev in evaluate_due(session, policy, now):
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


@dataclass
class TickSummary:
    now: datetime
    accounts: int = 0
    episodes_started: int = 0
    episodes_ended: int = 0
    measures: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[str] = field(default_factory=list)
    jobs: int = 0
    stale: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "accounts": self.accounts, "episodes_started": self.episodes_started,
                "episodes_ended": self.episodes_ended, "measures": self.measures, "resumes": self.resumes,
                "jobs": self.jobs, "stale": self.stale, "errors": self.errors}


def tick(session: Session, policy: PolicySet, now: datetime, settings: AgentSettings | None = None) -> TickSummary:
    """Evaluate the due accounts and record their transitions and jobs, one transaction per account.

    ``session`` must not be inside a transaction block: this commits after each account (and rolls
    back only that account when recording it fails).
    """
    settings = settings or AgentSettings()
    summary = TickSummary(now=now)
    evaluated = list(evaluate_due(session, policy, now))
    session.commit()
    for ev in evaluated:
        summary.accounts += 1
        if ev.decision is None:
            summary.errors.append(ev.error or ev.account.id)
            # an account whose policy layer is broken is looked at again later, not every tick
            session.execute(update(m.Account).where(m.Account.id == ev.account.id)
                            .values(next_check_at=now + timedelta(seconds=settings.recheck_seconds)))
            session.commit()
            continue
        try:
            _record(session, ev.account, ev.decision, now, settings, summary)
            session.commit()
        except _Stale:
            session.rollback()
            summary.stale += 1
        except Exception as exc:
            session.rollback()
            log.exception("recording the decision for %s failed", ev.account.id)
            summary.errors.append(f"{ev.account.id}: {exc}")
    return summary


def _job(session: Session, *, key: str, account: str, episode: int | None, stage: str, kind: str, action: str,
         now: datetime, service: str | None = None, host: str | None = None,
         payload: dict[str, Any] | None = None) -> bool:
    if session.scalar(select(m.Job.id).where(m.Job.key == key)) is not None:
        return False
    session.add(m.Job(key=key, account=account, episode=episode, stage=stage, kind=kind, action=action,
                      service=service, host=host, payload=payload or {}, status="pending", attempts=0,
                      next_attempt_at=now, created_at=now))
    return True


def host_jobs(session: Session, acc: m.Account, episode: int | None, stage: str, action: str, now: datetime) -> int:
    """One job per placement of the account: ``{account}:{episode}:{stage}:{service}:{host}``."""
    n = 0
    placements = session.scalars(select(m.Placement).where(m.Placement.account == acc.id)
                                 .order_by(m.Placement.service, m.Placement.host))
    for p in placements:
        key = f"{acc.id}:{episode if episode is not None else 0}:{stage}:{p.service}:{p.host}"
        n += _job(session, key=key, account=acc.id, episode=episode, stage=stage, kind="host", action=action,
                  service=p.service, host=p.host, now=now)
    return n


def notice_job(session: Session, acc: m.Account, episode: int | None, stage: str, template: str | None,
               now: datetime) -> int:
    key = f"{acc.id}:{episode if episode is not None else 0}:{stage}"
    return int(_job(session, key=key, account=acc.id, episode=episode, stage=stage, kind="notice", action="notice",
                    now=now, payload={"template": template or stage}))


STAFF_TEMPLATE = "notice_failed"


def staff_notice_job(session: Session, notice: m.Job, now: datetime) -> int:
    """The message that tells staff (``notices.staff_email``) that ``notice`` failed for good: one per
    failed notice, key ``{notice key}:staff``."""
    return int(_job(session, key=f"{notice.key}:staff", account=notice.account, episode=notice.episode,
                    stage=notice.stage, kind="notice", action="notice", now=now,
                    payload={"template": STAFF_TEMPLATE, "staff": True, "notice": notice.key}))


def event_job(session: Session, account: str, episode: int | None, stage: str, type_: str, now: datetime, *,
              reason: str | None = None, suspended_from: datetime | None = None) -> int:
    """An event for billing (``debt_started``, ``notice_sent``, ``suspended``, ``resumed``, ``deleted``)."""
    from agent.events import build_event

    event = build_event(type_, account=account, at=now, episode=episode, stage=stage, reason=reason,  # type: ignore[arg-type]
                        suspended_from=suspended_from)
    key = f"{account}:{episode if episode is not None else 0}:{stage}:event:{type_}"
    return int(_job(session, key=key, account=account, episode=episode, stage=stage, kind="event", action=type_,
                    now=now, payload={"event": event}))


class _Stale(Exception):
    """The account's inputs changed after it was evaluated: its decision is not recorded."""


def _record(session: Session, acc: m.Account, d: Decision, now: datetime, settings: AgentSettings,
            summary: TickSummary) -> None:
    seen = acc.changed_at
    acc = session.merge(acc, load=True)
    session.refresh(acc)
    if acc.changed_at != seen:
        raise _Stale(f"{acc.id}: changed while it was evaluated; it is looked at again on the next tick")
    episode = session.scalars(select(m.Episode).where(m.Episode.account == acc.id, m.Episode.ended_at.is_(None))
                              .order_by(m.Episode.id.desc()).limit(1)).first()
    jobs = 0
    if d.start_episode is not None and episode is None:
        hit = d.start_episode
        episode = m.Episode(account=acc.id, started_at=hit.at, trigger=hit.trigger,
                            reason=reason_dict(hit.reason))
        session.add(episode)
        session.flush()
        if acc.state == "active":
            acc.state = "debtor"
        audit(session, at=now, actor=ACTOR, action="episode.start", account=acc.id, reason=hit.reason.text,
              details={"episode": episode.id, "trigger": hit.trigger, "started_at": hit.at.isoformat()})
        jobs += event_job(session, acc.id, episode.id, "episode", "debt_started", now, reason=hit.reason.text)
        summary.episodes_started += 1
    ended: m.Episode | None = None
    partly_suspended = False
    if d.end_episode is not None and episode is not None:
        ended = episode
        # a suspension some hosts already applied but that never completed must be undone on those hosts
        partly_suspended = session.scalar(
            select(m.Job.id).where(m.Job.episode == episode.id, m.Job.action == "suspend",
                                   m.Job.status.in_(("claimed", "done", "failed"))).limit(1)) is not None
        episode.ended_at = now
        episode.end_reason = reason_dict(d.end_episode)
        # work not started for this episode is dropped: its measures no longer apply
        session.execute(update(m.StageTaken).where(m.StageTaken.episode == episode.id,
                                                   m.StageTaken.status == "in_flight",
                                                   m.StageTaken.action != "resume").values(status="cancelled"))
        session.execute(update(m.Job).where(m.Job.episode == episode.id, m.Job.status == "pending",
                                            m.Job.action.in_(("notice", "suspend", "delete", "hook")))
                        .values(status="cancelled", finished_at=now))
        audit(session, at=now, actor=ACTOR, action="episode.end", account=acc.id, reason=d.end_episode.text,
              details={"episode": episode.id})
        summary.episodes_ended += 1
        episode = None
    if d.release_holds:
        for h in session.scalars(select(m.Hold).where(m.Hold.account == acc.id, m.Hold.released_at.is_(None),
                                                      m.Hold.kind.in_(d.release_holds))):
            h.released_at = now
            audit(session, at=now, actor=ACTOR, action="hold.release", account=acc.id, reason=f"{h.kind} hold released",
                  details={"hold": h.kind})
    for ms in d.measures:
        if episode is None:
            summary.errors.append(f"{acc.id}: measure {ms.stage} without an episode; skipped")
            continue
        exists = session.scalar(select(m.StageTaken.id).where(m.StageTaken.episode == episode.id,
                                                              m.StageTaken.stage == ms.stage))
        if exists is not None:
            continue
        session.add(m.StageTaken(episode=episode.id, account=acc.id, stage=ms.stage, action=ms.action,
                                 status="in_flight", queued_at=now, template=ms.template,
                                 hold=ms.hold if ms.action == "suspend" else None,
                                 reason={**(reason_dict(ms.reason) or {}), "due_at": ms.due_at.isoformat()}))
        if ms.action == "notice":
            jobs += notice_job(session, acc, episode.id, ms.stage, ms.template, now)
        elif ms.action in ("suspend", "delete"):
            jobs += host_jobs(session, acc, episode.id, ms.stage, ms.action, now)
        elif ms.action == "hook":
            jobs += int(_job(session, key=f"{acc.id}:{episode.id}:{ms.stage}:event", account=acc.id,
                             episode=episode.id, stage=ms.stage, kind="event", action="hook", now=now,
                             payload={"hook": ms.hook, "stage": ms.stage}))
        summary.measures.append({"account": acc.id, "stage": ms.stage, "action": ms.action,
                                 "due_at": ms.due_at.isoformat(), "reason": ms.reason.text})
    if (d.resume and acc.state == "suspended") or (partly_suspended and acc.state != "suspended"):
        ref = ended or episode or session.scalars(select(m.Episode).where(m.Episode.account == acc.id)
                                                  .order_by(m.Episode.id.desc()).limit(1)).first()
        if ref is not None:
            n = 1 + len(list(session.scalars(select(m.StageTaken.id).where(m.StageTaken.episode == ref.id,
                                                                           m.StageTaken.action == "resume"))))
            stage = "resume" if n == 1 else f"resume-{n}"
            # the suspension's host work not started yet is dropped: resuming supersedes it
            session.execute(update(m.Job).where(m.Job.account == acc.id, m.Job.status == "pending",
                                                m.Job.action == "suspend").values(status="cancelled", finished_at=now))
            session.add(m.StageTaken(episode=ref.id, account=acc.id, stage=stage, action="resume", status="in_flight",
                                     queued_at=now, reason={"rule": "exit.resume",
                                                            "text": "the last hold was released",
                                                            "released": list(d.release_holds)}))
            jobs += host_jobs(session, acc, ref.id, stage, "resume", now)
            summary.resumes.append(acc.id)
    elif d.end_episode is not None and acc.state == "debtor":
        acc.state = "active"
    in_flight = session.scalar(select(m.StageTaken.id).where(m.StageTaken.account == acc.id,
                                                            m.StageTaken.status == "in_flight").limit(1))
    next_check = d.next_check
    if in_flight is not None:
        soon = now + timedelta(seconds=settings.recheck_seconds)
        next_check = soon if next_check is None else min(next_check, soon)
    acc.next_check_at = next_check
    summary.jobs += jobs
