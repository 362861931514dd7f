"""The admin's manual actions: suspend, resume, delete, restore and mass mail, independent of the CLI.

Every action goes through the outbox like the automatic measures: in one transaction it writes its
audit record, its hold or override, a *manual* job (kind ``manual``, status ``waiting``: the executor
never claims it, it marks the transition as in flight) and one host job per placement of the account.
The executor applies the host jobs through the fleet; :func:`finish_manual` (called by the executor
after each round) records the transition as taken once every host job is done: the account's state
is written then, last, together with its notice and its event for billing.

The functions never commit: the caller commits (or rolls back, for ``--dry-run``: the result then
describes exactly what would have been written). A refused action raises :class:`ActionRefused`
before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agent import transitions
from agent.imports import touch
from agent.store import models as m
from agent.store.repo import BATCH, audit, get_account, load_snapshots, open_holds
from agent.tick import resolve_for
from agent.transitions import RESTORED_REASON

if TYPE_CHECKING:
    from policy.loader import PolicySet

__all__ = [
    "RESTORED_REASON",
    "ActionRefused",
    "ActionResult",
    "MailResult",
    "delete",
    "finish_manual",
    "host_job",
    "in_flight_manual",
    "manual_job",
    "mass_mail",
    "restore",
    "resume",
    "suspend",
]

_TEMPLATE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$")


class ActionRefused(Exception):
    """The action cannot be done as asked; nothing was written."""


@dataclass
class ActionResult:
    """What an action wrote (or, in a dry run, would write)."""

    account: str
    action: str
    actor: str
    reason: str | None
    at: datetime
    state: str  # the account's recorded state when the action was queued
    stage: str | None = None  # the manual transition's name (jobs carry it)
    jobs: list[dict[str, str]] = field(default_factory=list)
    holds_placed: list[str] = field(default_factory=list)
    holds_released: list[str] = field(default_factory=list)
    overrides: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0
    taken_now: bool = False  # nothing to do on hosts: the transition was recorded at once
    notice: str | None = None  # the template sent once the transition took effect
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "action": self.action, "actor": self.actor, "reason": self.reason,
                "at": self.at.isoformat(), "state": self.state, "stage": self.stage, "jobs": self.jobs,
                "holds_placed": self.holds_placed, "holds_released": self.holds_released,
                "overrides": self.overrides, "cancelled": self.cancelled, "taken_now": self.taken_now,
                "notice": self.notice, "notes": self.notes}


# --- the outbox rows -----------------------------------------------------------------------------


def manual_job(session: Session, acc: m.Account, entry: m.AuditEntry, action: str, now: datetime, *,
               stage: str | None = None, payload: dict[str, Any] | None = None) -> m.Job:
    """The row marking a manual transition in flight (never claimed; finished by :func:`finish_manual`)."""
    session.flush()  # the audit entry's id names the transition
    stage = stage or f"admin-{action}-{entry.id}"
    job = m.Job(key=f"{acc.id}:manual:{stage}", account=acc.id, episode=None, stage=stage, kind="manual",
                action=action, payload={"audit": entry.id, **(payload or {})}, status="waiting", attempts=0,
                next_attempt_at=now, created_at=now)
    session.add(job)
    return job


def host_job(session: Session, acc: m.Account, stage: str, action: str, p: m.Placement, now: datetime) -> m.Job:
    """One host job of a manual transition: ``{account}:0:{stage}:{service}:{host}``."""
    job = m.Job(key=f"{acc.id}:0:{stage}:{p.service}:{p.host}", account=acc.id, episode=None, stage=stage,
                kind="host", action=action, service=p.service, host=p.host, payload={}, status="pending",
                attempts=0, next_attempt_at=now, created_at=now)
    session.add(job)
    return job


def _placements(session: Session, account: str) -> list[m.Placement]:
    return list(session.scalars(select(m.Placement).where(m.Placement.account == account)
                                .order_by(m.Placement.service, m.Placement.host)))


def _queue_hosts(session: Session, acc: m.Account, parent: m.Job, action: str, now: datetime,
                 result: ActionResult) -> int:
    n = 0
    for p in _placements(session, acc.id):
        job = host_job(session, acc, parent.stage, action, p, now)
        result.jobs.append({"key": job.key, "action": action, "service": p.service, "host": p.host})
        n += 1
    return n


def in_flight_manual(session: Session, account: str, actions: Sequence[str] | None = None) -> list[m.Job]:
    stmt = select(m.Job).where(m.Job.account == account, m.Job.kind == "manual", m.Job.status == "waiting")
    if actions is not None:
        stmt = stmt.where(m.Job.action.in_(list(actions)))
    return list(session.scalars(stmt.order_by(m.Job.id)))


def _cancel(session: Session, account: str, actions: Sequence[str], now: datetime) -> tuple[int, bool]:
    """Cancel the account's host work of ``actions`` not started yet, the manual transitions and the
    automatic in-flight stages it belonged to. Returns (jobs cancelled, whether any such work had
    already reached a host: claimed or done within a transition still in flight)."""
    started = False
    cancelled = 0
    for parent in in_flight_manual(session, account, actions):
        statuses = list(session.scalars(select(m.Job.status).where(
            m.Job.account == account, m.Job.stage == parent.stage, m.Job.kind == "host")))
        started = started or any(s in ("claimed", "done", "failed") for s in statuses)
        parent.status, parent.finished_at = "cancelled", now
    stages = list(session.scalars(select(m.StageTaken).where(
        m.StageTaken.account == account, m.StageTaken.status == "in_flight", m.StageTaken.action.in_(list(actions)))))
    for st in stages:
        statuses = list(session.scalars(select(m.Job.status).where(
            m.Job.account == account, m.Job.episode == st.episode, m.Job.stage == st.stage, m.Job.kind == "host")))
        started = started or any(s in ("claimed", "done", "failed") for s in statuses)
        st.status = "cancelled"
    res = session.execute(update(m.Job).where(m.Job.account == account, m.Job.kind == "host",
                                              m.Job.status == "pending", m.Job.action.in_(list(actions)))
                          .values(status="cancelled", finished_at=now))
    cancelled += int(getattr(res, "rowcount", 0) or 0)
    return cancelled, started


def _begin(session: Session, account: str, action: str, actor: str, reason: str | None,
           now: datetime) -> tuple[m.Account, ActionResult]:
    acc = get_account(session, account)
    return acc, ActionResult(account=acc.id, action=action, actor=actor, reason=reason, at=now, state=acc.state)


# --- suspend -------------------------------------------------------------------------------------


def suspend(session: Session, account: str, *, actor: str, reason: str, now: datetime,
            notice_template: str | None = None) -> ActionResult:
    """An admin hold (payments do not lift it) and, unless the account is suspended already, a
    suspension on every host; ``notice_template`` is sent once the suspension took effect."""
    if not reason.strip():
        raise ActionRefused("--reason must not be empty")
    acc, result = _begin(session, account, "suspend", actor, reason, now)
    if acc.state == "deleted":
        raise ActionRefused(f"account {acc.id} is deleted; restore it first (arrears restore {acc.id})")
    held = next((h for h in open_holds(session, acc.id) if h.kind == "admin"), None)
    if held is not None:
        raise ActionRefused(f"account {acc.id} is already suspended by an admin ({held.actor} since "
                            f"{held.since.isoformat()}: {held.reason}); nothing changed")
    session.add(m.Hold(account=acc.id, kind="admin", since=now, reason=reason, actor=actor))
    result.holds_placed.append("admin")
    cancelled, resume_started = _cancel(session, acc.id, ("resume",), now)
    result.cancelled = cancelled
    touch(acc, now)
    entry = audit(session, at=now, actor=actor, action="manual.suspend", account=acc.id, reason=reason,
                  details={"state": acc.state})
    if acc.state == "suspended" and not resume_started and not cancelled:
        result.notes.append("the account is suspended already; the admin hold keeps it so until an admin resumes it")
        return result
    result.notice = notice_template if acc.billing_email else None
    return _queue_manual(session, acc, entry, "suspend", now, result, payload={"notice": notice_template})


# --- resume --------------------------------------------------------------------------------------


def resume(session: Session, account: str, policy: PolicySet, *, actor: str, reason: str | None, now: datetime,
           grace_days: int | None = None) -> ActionResult:
    """Lift the admin hold (and the trial hold). While the account is in debt this is refused unless
    ``grace_days`` records a promise to pay (a ``pause`` override), which lifts the debt hold too. The
    hosts are resumed only when no hold remains."""
    from policy import evaluate

    acc, result = _begin(session, account, "resume", actor, reason, now)
    if acc.state == "deleted":
        raise ActionRefused(f"account {acc.id} is deleted; restore it first (arrears restore {acc.id})")
    if grace_days is not None and grace_days <= 0:
        raise ActionRefused("--grace must be a positive number of days")
    holds = open_holds(session, acc.id)
    suspending = in_flight_manual(session, acc.id, ("suspend",))
    if not holds and acc.state != "suspended" and not suspending:
        raise ActionRefused(f"account {acc.id} is not suspended (state {acc.state}, no hold); nothing to resume")
    snap = load_snapshots(session, [acc])[acc.id]
    resolved = resolve_for(policy, acc)
    d = evaluate(snap, resolved, now)
    if d.in_debt and grace_days is None:
        raise ActionRefused(
            f"account {acc.id} is still in debt (balance {d.balance} {acc.currency}, credit limit "
            f"{resolved.credit_limit}); record the payment first, or give --grace DAYS to record a promise to pay")
    text = reason or ("promise to pay" if grace_days is not None else "resumed by an admin")
    result.reason = text
    if grace_days is not None:
        until = now + timedelta(days=grace_days)
        session.add(m.Override(account=acc.id, kind="pause", actor=actor, reason=text, created_at=now,
                               expires_at=until))
        result.overrides.append({"kind": "pause", "expires_at": until.isoformat(), "actor": actor, "reason": text})
    release = {"admin", "trial"} | ({"debt"} if (not d.in_debt or grace_days is not None) else set())
    for h in holds:
        if h.kind in release:
            h.released_at = now
            result.holds_released.append(h.kind)
    remaining = [h.kind for h in holds if h.kind not in release]
    touch(acc, now)
    entry = audit(session, at=now, actor=actor, action="manual.resume", account=acc.id, reason=text,
                  details={"released": result.holds_released, "grace_days": grace_days,
                           "pause_until": result.overrides[0]["expires_at"] if result.overrides else None})
    if remaining:
        result.notes.append(f"holds remain ({', '.join(remaining)}): the account stays suspended")
        return result
    cancelled, suspend_started = _cancel(session, acc.id, ("suspend",), now)
    result.cancelled = cancelled
    on_hosts = acc.state == "suspended" or suspend_started or any(
        p.state.get("suspend") is not None for p in _placements(session, acc.id))
    if not on_hosts:
        result.notes.append("nothing to resume on the hosts")
        return result
    since = min((h.since for h in holds), default=now)
    return _queue_manual(session, acc, entry, "resume", now, result,
                         payload={"suspended_from": since.isoformat()})


# --- delete and restore --------------------------------------------------------------------------


def delete(session: Session, account: str, *, actor: str, reason: str | None, now: datetime,
           notice_template: str | None = None) -> ActionResult:
    """Delete on every host (each host job archives, verifies, then removes); the account is recorded
    deleted once every host's deletion took effect."""
    text = reason or "deleted by an admin"
    acc, result = _begin(session, account, "delete", actor, text, now)
    if acc.state == "deleted":
        raise ActionRefused(f"account {acc.id} is deleted already")
    if in_flight_manual(session, acc.id, ("delete",)):
        raise ActionRefused(f"a deletion of {acc.id} is in flight already; see arrears show {acc.id}")
    cancelled, _ = _cancel(session, acc.id, ("suspend", "resume"), now)
    result.cancelled = cancelled
    touch(acc, now)
    entry = audit(session, at=now, actor=actor, action="manual.delete", account=acc.id, reason=text,
                  details={"state": acc.state})
    result.notice = notice_template if acc.billing_email else None
    return _queue_manual(session, acc, entry, "delete", now, result, payload={"notice": notice_template})


def restore(session: Session, account: str, *, actor: str, reason: str | None, now: datetime) -> ActionResult:
    """Restore a deleted account from the archives its deletion recorded; it comes back suspended under
    an admin hold (``restored from archive``) so that an admin can check it, then resume it."""
    text = reason or RESTORED_REASON
    acc, result = _begin(session, account, "restore", actor, text, now)
    if acc.state != "deleted":
        raise ActionRefused(f"account {acc.id} is not deleted (state {acc.state}); nothing to restore")
    flying = in_flight_manual(session, acc.id)
    if flying:
        raise ActionRefused(f"{acc.id} has a manual {flying[0].action} in flight ({flying[0].stage}); "
                            f"see arrears show {acc.id}")
    placements = _placements(session, acc.id)
    missing = [f"{p.service} on {p.host}" for p in placements if p.state.get("delete") is None]
    if missing:
        raise ActionRefused(f"no archive is recorded for {', '.join(missing)} of {acc.id}; cannot restore")
    if not any(h.kind == "admin" for h in open_holds(session, acc.id)):
        session.add(m.Hold(account=acc.id, kind="admin", since=now, reason=RESTORED_REASON, actor=actor))
        result.holds_placed.append("admin")
    entry = audit(session, at=now, actor=actor, action="manual.restore", account=acc.id, reason=text,
                  details={"archives": {f"{p.service}:{p.host}": dict(p.state.get("delete") or {})
                                        for p in placements}})
    return _queue_manual(session, acc, entry, "restore", now, result)


def _queue_manual(session: Session, acc: m.Account, entry: m.AuditEntry, action: str, now: datetime,
                  result: ActionResult, payload: dict[str, Any] | None = None) -> ActionResult:
    """The admin action's waiting job and its host jobs; with no host to wait for it completes at once."""
    parent = manual_job(session, acc, entry, action, now, payload=payload)
    result.stage = parent.stage
    if _queue_hosts(session, acc, parent, action, now, result) == 0:
        _complete(session, parent, acc, now)
        result.taken_now = True
    entry.details = {**(entry.details or {}), "stage": parent.stage, "jobs": len(result.jobs)}
    return result


# --- finishing transitions -----------------------------------------------------------------------


def finish_manual(session: Session, now: datetime, taken: list[dict[str, Any]] | None = None) -> int:
    """Record every manual transition whose host jobs are all done as taken (state written last);
    a transition whose work was cancelled is closed. Commits per transition; returns the jobs queued."""
    queued = 0
    for parent in list(session.scalars(select(m.Job).where(m.Job.kind == "manual", m.Job.status == "waiting")
                                       .order_by(m.Job.id))):
        statuses = list(session.scalars(select(m.Job.status).where(
            m.Job.account == parent.account, m.Job.stage == parent.stage, m.Job.kind == "host")))
        if any(s != "done" for s in statuses):
            if statuses and all(s in ("done", "cancelled") for s in statuses):
                parent.status, parent.finished_at = "cancelled", now
                session.commit()
            continue
        acc = session.get(m.Account, parent.account)
        assert acc is not None
        queued += _complete(session, parent, acc, now)
        if taken is not None:
            taken.append({"account": acc.id, "stage": parent.stage, "action": parent.action, "at": now.isoformat()})
        session.commit()
    return queued


def _complete(session: Session, parent: m.Job, acc: m.Account, now: datetime) -> int:
    """The transition took effect on every host: write what it implies (:mod:`agent.transitions`), the
    account's state last."""
    parent.status, parent.finished_at = "done", now
    since = parent.payload.get("suspended_from")
    t = transitions.Transition(account=acc.id, stage=parent.stage, action=parent.action, manual=True,
                               template=parent.payload.get("notice"),
                               suspended_from=datetime.fromisoformat(since) if since else None)
    effects = transitions.Effects()
    state = transitions.take(t, transitions.accounts_now(session, [acc], suspensions=False)[acc.id], now, effects)
    queued = 0
    if parent.action == "restore":
        for p in _placements(session, acc.id):
            placed = dict(p.state or {})
            placed["restored"] = placed.pop("delete", {})
            p.state = placed
        # the files are back: now suspend every host (the account comes back suspended), state last
        follow = m.Job(key=f"{acc.id}:manual:{parent.stage}-suspend", account=acc.id, episode=None,
                       stage=f"{parent.stage}-suspend", kind="manual", action="suspend",
                       payload={"audit": parent.payload.get("audit"), "notice": None, "after": "restore"},
                       status="waiting", attempts=0, next_attempt_at=now, created_at=now)
        session.add(follow)
        n = 0
        for p in _placements(session, acc.id):
            host_job(session, acc, follow.stage, "suspend", p, now)
            n += 1
        queued += n
        if n == 0:
            follow.status, follow.finished_at = "done", now
            state = "suspended"
    acc.state = state
    acc.next_check_at = now
    return queued + transitions.write(session, effects)


# --- mass mail -----------------------------------------------------------------------------------


@dataclass
class MailResult:
    template: str
    date: str
    stage: str | None
    queued: list[dict[str, str]] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # queued earlier the same day
    no_address: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"template": self.template, "date": self.date, "stage": self.stage, "queued": self.queued,
                "already": self.already, "no_address": self.no_address}


def mass_mail(session: Session, policy: PolicySet, *, template: str, now: datetime, actor: str,
              stage: str | None = None) -> MailResult:
    """Queue ``template`` to the billing address of every debtor (optionally only those whose last
    stage taken is ``stage``), one notice per (account, template, day): a re-run the same day adds
    nothing."""
    from policy import evaluate

    if not _TEMPLATE.match(template):
        raise ActionRefused(f"template name {template!r} is not valid")
    day = now.astimezone(ZoneInfo(policy.timezone)).date().isoformat()
    result = MailResult(template=template, date=day, stage=stage)
    accs = list(session.scalars(select(m.Account).where(m.Account.state != "deleted").order_by(m.Account.id)))
    for i in range(0, len(accs), BATCH):
        batch = accs[i:i + BATCH]
        snaps = load_snapshots(session, batch)
        for acc in batch:
            snap = snaps[acc.id]
            if snap.episode is None and not snap.ledger and not snap.invoices:
                continue
            d = evaluate(snap, resolve_for(policy, acc), now)
            if not d.in_debt:
                continue
            taken = snap.episode.stages_taken if snap.episode is not None else ()
            if stage is not None and (not taken or taken[-1].stage != stage):
                continue
            if not acc.billing_email:
                result.no_address.append(acc.id)
                continue
            key = f"{acc.id}:mail:{template}:{day}"
            if session.scalar(select(m.Job.id).where(m.Job.key == key)) is not None:
                result.already.append(acc.id)
                continue
            session.add(m.Job(key=key, account=acc.id, episode=snap.episode.id if snap.episode else None,
                              stage=f"mail-{template}-{day}", kind="notice", action="notice",
                              payload={"template": template, "mass_mail": True}, status="pending", attempts=0,
                              next_attempt_at=now, created_at=now))
            result.queued.append({"account": acc.id, "to": acc.billing_email})
    audit(session, at=now, actor=actor, action="manual.mail", reason=f"mass mail {template}",
          details={"template": template, "date": day, "stage": stage, "queued": len(result.queued),
                   "already": len(result.already), "no_address": result.no_address})
    return result
