"""What a transition implies: the one place that decides it, for the tick, the executor and the admin actions.

A transition is queued (the tick's measures and resumes, an admin's action) and then *taken*, once every
host job it needed is done. Taking it implies, in this order: the hold it places (a suspension), the
notice it sends (a suspension's or deletion's own template; the admin's), the event that tells billing
(``notice_sent``, ``suspended``, ``resumed``, ``deleted``, ``restored``), an audit row, and the account's
state, written last. The account's state follows these rules only: it becomes ``suspended`` or
``deleted`` when such a transition is taken; after a resume, with no hold left, it is ``debtor`` while a
debt episode is open and ``active`` otherwise; an episode that starts makes an ``active`` account a
``debtor`` and one that ends makes a ``debtor`` ``active`` again; a ``deleted`` account stays deleted.

The functions here read nothing and write nothing: they return the rows to write (holds, jobs, audit)
and the account's new state, and callers write a whole chunk's rows with one statement per table
(:class:`Effects`, :func:`write`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.orm import Session

from agent.outbox import event_row, hook_row, host_rows, insert_jobs, notice_row
from agent.store import models as m
from agent.store.bulk import write_rows

__all__ = [
    "ACTOR",
    "RESTORED_REASON",
    "Account",
    "AccountRow",
    "Effects",
    "Transition",
    "accounts_now",
    "after_episode_end",
    "after_episode_start",
    "audit_row",
    "episode_ended",
    "episode_started",
    "hold_released",
    "measure_queued",
    "needs_resume",
    "resume_queued",
    "settled",
    "stage_row",
    "take",
    "write",
]

ACTOR = "policy"  # the actor of what the policy decided (the admin's actions name their own)

HOLDS: Table = m.Hold.__table__  # type: ignore[assignment]
AUDIT: Table = m.AuditEntry.__table__  # type: ignore[assignment]
STAGES: Table = m.StageTaken.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Transition:
    """A transition that took effect on every host (or needed none).

    ``episode``: the debt episode a policy stage belongs to (its jobs' keys name it); an admin's
    transition (``manual``) has none of its own. ``template``: the notice it sends once taken (a
    suspension's or a deletion's). ``hold``: the hold a suspension places. ``suspended_from``: when the
    suspension a resume ends began, when the caller knows it better than the account's history."""

    account: str
    stage: str
    action: str  # notice | suspend | delete | resume | hook | restore | reconcile
    episode: int | None = None
    reason: str | None = None
    template: str | None = None
    hold: str | None = None
    manual: bool = False
    suspended_from: datetime | None = None


@dataclass
class Account:
    """What taking a transition depends on, as it is now; :func:`take` keeps it up to date, so the
    transitions of one chunk can be taken one after the other before anything is written."""

    id: str
    state: str
    holds: set[str]  # the kinds of its open holds
    episode: int | None  # its open debt episode
    suspended_at: datetime | None = None  # when its last suspension was taken
    billing_email: str | None = None


@dataclass
class Effects:
    """The rows that taking some transitions implies, to be written together by :func:`write`."""

    holds: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # transitions queued, in flight
    resumes: list[dict[str, Any]] = field(default_factory=list)  # resume host jobs (see :func:`resume_queued`)


def settled(state: str, *, holds: bool, episode: bool) -> str:
    """The account's state once a resume took effect: unchanged while a hold remains (or once deleted),
    else ``debtor`` while a debt episode is open and ``active`` otherwise."""
    if state == "deleted" or holds:
        return state
    return "debtor" if episode else "active"


def after_episode_start(state: str) -> str:
    """A debt episode started: an ``active`` account becomes a ``debtor``."""
    return "debtor" if state == "active" else state


def after_episode_end(state: str) -> str:
    """The debt episode ended: a ``debtor`` becomes ``active`` (a suspended account waits for its resume)."""
    return "active" if state == "debtor" else state


RESTORED_REASON = "restored from archive"
_MANUAL_REASONS = {"suspend": "suspended by an admin", "resume": "resumed by an admin",
                   "delete": "deleted by an admin", "restore": RESTORED_REASON}


# --- queueing: what the tick's decision implies ---------------------------------------------------


def audit_row(now: datetime, action: str, account: str, reason: str | None, details: dict[str, Any], *,
              actor: str = ACTOR) -> dict[str, Any]:
    return {"at": now, "actor": actor, "action": action, "account": account, "reason": reason, "details": details}


def stage_row(episode: int, account: str, stage: str, action: str, now: datetime, *, template: str | None,
              hold: str | None, reason: dict[str, Any]) -> dict[str, Any]:
    """A transition queued: in flight until every job it needs is done (then :func:`take`)."""
    return {"episode": episode, "account": account, "stage": stage, "action": action, "status": "in_flight",
            "queued_at": now, "at": None, "template": template, "hold": hold, "reason": reason}


def episode_started(account: str, episode: int, trigger: str, started_at: datetime, reason: str, now: datetime,
                    effects: Effects) -> None:
    """A debt episode started: its audit row and the ``debt_started`` event for billing (the account's
    state: :func:`after_episode_start`)."""
    effects.audit.append(audit_row(now, "episode.start", account, reason,
                                   {"episode": episode, "trigger": trigger, "started_at": started_at.isoformat()}))
    effects.jobs.append(event_row(account, episode, "episode", "debt_started", now, reason=reason))


def episode_ended(account: str, episode: int, reason: str, now: datetime, effects: Effects) -> None:
    """The debt episode ended: its audit row (its work not started is dropped by the caller; the account's
    state: :func:`after_episode_end`)."""
    effects.audit.append(audit_row(now, "episode.end", account, reason, {"episode": episode}))


def hold_released(account: str, kind: str, now: datetime, effects: Effects) -> None:
    effects.audit.append(audit_row(now, "hold.release", account, f"{kind} hold released", {"hold": kind}))


def measure_queued(account: str, episode: int, stage: str, action: str, now: datetime, effects: Effects, *,
                   template: str | None, hold: str | None, hook: str | None, reason: dict[str, Any],
                   placements: Sequence[tuple[str, str]]) -> None:
    """A measure is due: its stage, in flight, and the jobs it needs (a notice; one host job per placement
    for a suspension or deletion; a hook's event). A suspension's or deletion's own notice waits until
    the hosts applied it (:func:`take`)."""
    effects.stages.append(stage_row(episode, account, stage, action, now, template=template,
                                    hold=hold if action == "suspend" else None, reason=reason))
    if action == "notice":
        effects.jobs.append(notice_row(account, episode, stage, template, now))
    elif action in ("suspend", "delete"):
        effects.jobs.extend(host_rows(account, episode, stage, action, placements, now))
    elif action == "hook":
        effects.jobs.append(hook_row(account, episode, stage, hook, now))


def needs_resume(state: str, *, resume: bool, partly_suspended: bool) -> bool:
    """Whether the hosts must be resumed: the last hold went while the account is suspended, or a
    suspension that some hosts applied never completed (the episode ended first)."""
    return (resume and state == "suspended") or (partly_suspended and state != "suspended")


def resume_queued(account: str, episode: int, stage: str, released: Sequence[str], now: datetime,
                  effects: Effects, *, placements: Sequence[tuple[str, str]]) -> None:
    """A resume: its stage, in flight, and one host job per placement (in ``effects.resumes``: written
    after the suspension's host work not started yet is dropped)."""
    effects.stages.append(stage_row(episode, account, stage, "resume", now, template=None, hold=None,
                                    reason={"rule": "exit.resume", "text": "the last hold was released",
                                            "released": list(released)}))
    effects.resumes.extend(host_rows(account, episode, stage, "resume", placements, now))


# --- taking: what a transition that took effect implies --------------------------------------------


def take(t: Transition, acc: Account, now: datetime, effects: Effects) -> str:
    """Take ``t`` at ``now``: add the rows it implies to ``effects``, bring ``acc`` up to date and return
    the account's state after it (to be written last, with ``next_check_at = now``: the next stage counts
    from now)."""
    # jobs are keyed by the stage's episode; an admin's own transition has none (its notice names the
    # open episode, so that the notice tells of the debt)
    key_episode = None if t.manual else t.episode
    text = _MANUAL_REASONS.get(t.action) if t.manual else t.reason
    if t.action == "suspend":
        kind = t.hold or ("admin" if t.manual else "debt")
        if not t.manual and kind not in acc.holds:  # an admin's hold was placed when the admin asked
            effects.holds.append({"account": acc.id, "kind": kind, "since": now, "reason": t.stage, "actor": ACTOR,
                                  "released_at": None})
        acc.holds.add(kind)
        _notice(t, acc, now, effects)
        effects.jobs.append(event_row(acc.id, key_episode, t.stage, "suspended", now, reason=text,
                                      suspended_from=now))
        acc.state = "suspended"
        acc.suspended_at = now
    elif t.action == "delete":
        _notice(t, acc, now, effects)
        effects.jobs.append(event_row(acc.id, key_episode, t.stage, "deleted", now, reason=text))
        acc.state = "deleted"
    elif t.action == "notice":
        effects.jobs.append(event_row(acc.id, key_episode, t.stage, "notice_sent", now, reason=text))
    elif t.action == "resume" and (t.manual or acc.state != "deleted"):
        since = t.suspended_from or (None if t.manual else acc.suspended_at) or now
        effects.jobs.append(event_row(acc.id, key_episode, t.stage, "resumed", now, reason=text, suspended_from=since))
        acc.state = settled(acc.state, holds=bool(acc.holds), episode=acc.episode is not None)
    elif t.action == "restore":
        effects.jobs.append(event_row(acc.id, key_episode, t.stage, "restored", now, reason=text))
    if t.manual:
        effects.audit.append(audit_row(now, f"manual.{t.action}.taken", acc.id, f"{t.stage} took effect",
                                       {"stage": t.stage}, actor="agent"))
    else:
        effects.audit.append(audit_row(now, f"stage.{t.action}", acc.id, t.reason,
                                       {"episode": t.episode, "stage": t.stage}))
    return acc.state


def _notice(t: Transition, acc: Account, now: datetime, effects: Effects) -> None:
    if not t.template:
        return
    if t.manual:
        if not acc.billing_email:
            return
        effects.jobs.append(notice_row(acc.id, acc.episode, t.stage, t.template, now))
    else:
        effects.jobs.append(notice_row(acc.id, t.episode, t.stage, t.template, now))


def write(session: Session, effects: Effects) -> int:
    """Write ``effects`` (but its ``resumes``) with one statement per table (:func:`agent.store.bulk.write_rows`:
    the driver's ``executemany`` on SQLite); returns how many jobs were new (a job queued before, under the
    same key, is not queued again)."""
    write_rows(session, HOLDS, effects.holds)
    write_rows(session, STAGES, effects.stages)
    write_rows(session, AUDIT, effects.audit)
    return insert_jobs(session, effects.jobs) if effects.jobs else 0


class AccountRow(Protocol):
    """What :func:`accounts_now` reads of an account: an ORM row, or a Core row of these columns."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def billing_email(self) -> str | None: ...


def accounts_now(session: Session, accounts: Sequence[AccountRow], *, suspensions: bool) -> dict[str, Account]:
    """:class:`Account` facts of ``accounts`` (rows loaded already), with one query per table:
    open holds, open episodes and (``suspensions``) when each was last suspended."""
    from sqlalchemy import select

    ids = sorted({a.id for a in accounts})
    holds: dict[str, set[str]] = {i: set() for i in ids}
    episodes: dict[str, int] = {}
    suspended: dict[str, datetime | None] = {}
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for aid, kind in session.execute(select(m.Hold.account, m.Hold.kind).where(
                m.Hold.account.in_(part), m.Hold.released_at.is_(None))):
            holds[aid].add(kind)
        for aid, ep in session.execute(select(m.Episode.account, m.Episode.id).where(
                m.Episode.account.in_(part), m.Episode.ended_at.is_(None)).order_by(m.Episode.id)):
            episodes[aid] = ep  # the newest open one wins
        if suspensions:
            for aid, at in session.execute(select(m.StageTaken.account, m.StageTaken.at).where(
                    m.StageTaken.account.in_(part), m.StageTaken.action == "suspend",
                    m.StageTaken.status == "taken").order_by(m.StageTaken.at)):
                suspended[aid] = at  # the latest wins
    return {a.id: Account(a.id, a.state, holds[a.id], episodes.get(a.id), suspended.get(a.id), a.billing_email)
            for a in accounts}
