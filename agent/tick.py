"""The tick: evaluate the accounts that are due and write each transition with its jobs (the outbox).

Only accounts whose ``next_check_at`` has come are read (through the index), a chunk at a time
(``agent.tick_chunk`` accounts, 500 by default): the chunk's snapshots are loaded with one query per
table, evaluated, and recorded in one transaction with a handful of bulk statements, whatever the size
of the chunk. For each account: the episode starts or ends, released holds are released, every measure
due now is recorded as *in flight* together with the jobs it needs (a notice, one host job per service
placement, an event), resume jobs are written when the last hold goes, and the next check time is set.

Each account's transition is atomic: when writing the chunk at once fails (a constraint, say), the chunk
is written again account by account, each in a savepoint of its own, so the account that fails is rolled
back alone and the rest of the chunk commits. An account whose inputs changed (``changed_at``) after it
was evaluated is not recorded: it is looked at again on the next tick. Nothing here talks to a host or a
mail server: the executor drains the outbox.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from agent import transitions
from agent.config import AgentSettings
from agent.outbox import insert_jobs, placements_of
from agent.planning import Evaluated, Layered, PlannedMeasure, evaluate_chunks, plan, resolve_for
from agent.store import models as m
from agent.store.bulk import begin_write, execute_many
from agent.transitions import ACTOR
from policy.model import Decision, Reason

if TYPE_CHECKING:
    from policy.loader import PolicySet

__all__ = [
    "ACTOR",
    "Evaluated",
    "Layered",
    "PlannedMeasure",
    "TickSummary",
    "evaluate_chunks",
    "plan",
    "reason_dict",
    "resolve_for",
    "tick",
]

log = logging.getLogger("arrears.tick")

ACCOUNTS: Table = m.Account.__table__  # type: ignore[assignment]
EPISODES: Table = m.Episode.__table__  # type: ignore[assignment]
STAGES: Table = m.StageTaken.__table__  # type: ignore[assignment]
HOLDS: Table = m.Hold.__table__  # type: ignore[assignment]
JOBS: Table = m.Job.__table__  # type: ignore[assignment]


def reason_dict(reason: Reason | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    return {"rule": reason.rule, "text": reason.text, "thresholds": dict(reason.thresholds),
            "inputs": dict(reason.inputs)}


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

    def add(self, part: TickSummary) -> None:
        """Count what ``part`` (some accounts' recording, committed) did."""
        self.accounts += part.accounts
        self.episodes_started += part.episodes_started
        self.episodes_ended += part.episodes_ended
        self.measures.extend(part.measures)
        self.resumes.extend(part.resumes)
        self.jobs += part.jobs
        self.stale += part.stale
        self.errors.extend(part.errors)


def tick(session: Session, policy: PolicySet, now: datetime, settings: AgentSettings | None = None) -> TickSummary:
    """Evaluate the due accounts and record their transitions and jobs, one transaction per chunk of
    ``settings.tick_chunk`` accounts (and one savepoint per account when writing a chunk at once fails).

    ``session`` must not be inside a transaction block: this commits after each chunk. A failure of the
    database itself (``OperationalError``: locked, disk full) is raised at once, after rolling back the
    chunk in hand: it is not an account's fault, and every other account would fail the same way.
    """
    settings = settings or AgentSettings()
    summary = TickSummary(now=now)
    for chunk in evaluate_chunks(session, policy, now, size=settings.tick_chunk, lock=True):
        summary.accounts += len(chunk)
        try:
            _record_chunk(session, chunk, now, settings, summary)
        except OperationalError:
            session.rollback()
            raise
        session.commit()
        # the chunk was written with Core statements: the rows loaded to evaluate it are stale now
        session.expire_all()
    session.commit()
    return summary


class _Due(NamedTuple):
    """An account to record: its decision and its state as read under the write lock."""

    account: str
    decision: Decision
    state: str


def _record_chunk(session: Session, chunk: Sequence[Evaluated], now: datetime, settings: AgentSettings,
                  summary: TickSummary) -> None:
    begin_write(session)
    broken = [ev for ev in chunk if ev.decision is None]
    if broken:
        summary.errors.extend(ev.error or ev.account.id for ev in broken)
        # an account whose policy layer is broken is looked at again later, not every tick
        session.execute(update(ACCOUNTS).where(ACCOUNTS.c.id.in_([ev.account.id for ev in broken]))
                        .values(next_check_at=now + timedelta(seconds=settings.recheck_seconds)))
    evaluated = [ev for ev in chunk if ev.decision is not None]
    if not evaluated:
        return
    # read under the write lock (PostgreSQL: the rows locked), so no input changes before the commit
    fresh = {row.id: row for row in session.execute(
        select(ACCOUNTS.c.id, ACCOUNTS.c.changed_at, ACCOUNTS.c.state)
        .where(ACCOUNTS.c.id.in_([ev.account.id for ev in evaluated])).with_for_update())}
    due: list[_Due] = []
    for ev in evaluated:
        row = fresh.get(ev.account.id)
        if row is None or row.changed_at != ev.changed_at:
            summary.stale += 1  # changed while it was evaluated: looked at again on the next tick
            continue
        assert ev.decision is not None
        due.append(_Due(ev.account.id, ev.decision, row.state))
    if not due:
        return
    try:
        with session.begin_nested():
            part = _write(session, due, now, settings)
    except OperationalError:
        raise  # the database itself failed (locked, disk full, I/O): the tick stops (see tick)
    except Exception as exc:
        if len(due) == 1:
            log.exception("recording the decision for %s failed", due[0].account)
            summary.errors.append(f"{due[0].account}: {exc}")
            return
        log.info("recording %d accounts at once failed (%s); recording them one by one", len(due), exc)
        for one in due:
            try:
                with session.begin_nested():
                    part = _write(session, [one], now, settings)
            except OperationalError:
                raise
            except Exception as exc_one:
                log.exception("recording the decision for %s failed", one.account)
                summary.errors.append(f"{one.account}: {exc_one}")
                continue
            summary.add(part)
        return
    summary.add(part)


def _write(session: Session, due: Sequence[_Due], now: datetime, settings: AgentSettings) -> TickSummary:
    """Record the decisions of ``due`` (inside the caller's savepoint): the rows recording needs are read
    for all of them at once, then each table is written with one statement."""
    part = TickSummary(now=now)
    ids = [d.account for d in due]
    open_episode: dict[str, int] = {}  # the account's newest open episode
    last_episode: dict[str, int] = {}  # the account's newest episode, open or not
    for ep_id, account, ended_at in session.execute(
            select(EPISODES.c.id, EPISODES.c.account, EPISODES.c.ended_at)
            .where(EPISODES.c.account.in_(ids)).order_by(EPISODES.c.id)):
        last_episode[account] = ep_id
        if ended_at is None:
            open_episode[account] = ep_id
    staged: set[tuple[int, str]] = set()  # (episode, stage) recorded already, whatever its status
    resumes: Counter[int] = Counter()  # resume transitions per episode
    flying: dict[str, list[tuple[int, str]]] = defaultdict(list)  # the account's in-flight (episode, action)
    episodes = set(open_episode.values()) | set(last_episode.values())
    for account, ep_id, stage, action, status in session.execute(
            select(STAGES.c.account, STAGES.c.episode, STAGES.c.stage, STAGES.c.action, STAGES.c.status)
            .where(STAGES.c.account.in_(ids), or_(STAGES.c.episode.in_(episodes), STAGES.c.status == "in_flight"))):
        staged.add((ep_id, stage))
        if action == "resume":
            resumes[ep_id] += 1
        if status == "in_flight":
            flying[account].append((ep_id, action))
    ending = [open_episode[d.account] for d in due if d.decision.end_episode is not None and d.account in open_episode]
    # a suspension some hosts already applied but that never completed must be undone on those hosts
    partly = set(session.scalars(
        select(JOBS.c.episode).where(JOBS.c.episode.in_(ending), JOBS.c.action == "suspend",
                                     JOBS.c.status.in_(("claimed", "done", "failed"))).distinct())) if ending else set()
    releasing = [d.account for d in due if d.decision.release_holds]
    holds: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if releasing:
        for hold_id, account, kind in session.execute(
                select(HOLDS.c.id, HOLDS.c.account, HOLDS.c.kind)
                .where(HOLDS.c.account.in_(releasing), HOLDS.c.released_at.is_(None)).order_by(HOLDS.c.id)):
            holds[account].append((hold_id, kind))
    on_hosts = [d.account for d in due
                if d.decision.resume or open_episode.get(d.account) in partly
                or any(ms.action in ("suspend", "delete") for ms in d.decision.measures)]
    placements = placements_of(session, on_hosts) if on_hosts else {}
    # the new episodes first: their ids name the stages, jobs and audit rows
    starting = [d for d in due if d.decision.start_episode is not None and d.account not in open_episode]
    started: dict[str, int] = {}
    if starting:
        rows = [{"account": d.account, "started_at": hit.at, "trigger": hit.trigger, "reason": reason_dict(hit.reason),
                 "ended_at": None, "end_reason": None}
                for d in starting if (hit := d.decision.start_episode) is not None]
        started = {account: ep_id for ep_id, account in session.execute(
            insert(EPISODES).returning(EPISODES.c.id, EPISODES.c.account), rows)}

    ended_rows: list[dict[str, Any]] = []
    hold_ids: list[int] = []
    effects = transitions.Effects()
    resuming: list[str] = []
    account_rows: list[dict[str, Any]] = []
    soon = now + timedelta(seconds=settings.recheck_seconds)
    for acc, d, state in due:
        episode = open_episode.get(acc)
        if d.start_episode is not None and episode is None:
            hit = d.start_episode
            episode = started[acc]
            state = transitions.after_episode_start(state)
            transitions.episode_started(acc, episode, hit.trigger, hit.at, hit.reason.text, now, effects)
            part.episodes_started += 1
        ended: int | None = None
        partly_suspended = False
        if d.end_episode is not None and episode is not None:
            ended = episode
            partly_suspended = episode in partly
            ended_rows.append({"b_id": episode, "b_reason": reason_dict(d.end_episode)})
            transitions.episode_ended(acc, episode, d.end_episode.text, now, effects)
            part.episodes_ended += 1
            episode = None
        for hold_id, kind in holds.get(acc, ()):
            if kind in d.release_holds:
                hold_ids.append(hold_id)
                transitions.hold_released(acc, kind, now, effects)
        queued = False
        for ms in d.measures:
            if episode is None:
                part.errors.append(f"{acc}: measure {ms.stage} without an episode; skipped")
                continue
            if (episode, ms.stage) in staged:
                continue
            staged.add((episode, ms.stage))
            queued = True
            transitions.measure_queued(acc, episode, ms.stage, ms.action, now, effects, template=ms.template,
                                       hold=ms.hold, hook=ms.hook, placements=placements.get(acc, ()),
                                       reason={**(reason_dict(ms.reason) or {}), "due_at": ms.due_at.isoformat()})
            part.measures.append({"account": acc, "stage": ms.stage, "action": ms.action,
                                  "due_at": ms.due_at.isoformat(), "reason": ms.reason.text})
        if transitions.needs_resume(state, resume=d.resume, partly_suspended=partly_suspended):
            ref = ended if ended is not None else episode if episode is not None else last_episode.get(acc)
            if ref is not None:
                n = 1 + resumes[ref]
                resuming.append(acc)
                queued = True
                transitions.resume_queued(acc, ref, "resume" if n == 1 else f"resume-{n}", d.release_holds, now,
                                          effects, placements=placements.get(acc, ()))
                part.resumes.append(acc)
        elif d.end_episode is not None:
            state = transitions.after_episode_end(state)
        # work not started for an ended episode is dropped below (its resume excepted)
        in_flight = queued or any(ep != ended or action == "resume" for ep, action in flying.get(acc, ()))
        next_check = d.next_check
        if in_flight:
            next_check = soon if next_check is None else min(next_check, soon)
        account_rows.append({"b_id": acc, "b_state": state, "b_next": next_check})

    if ended_rows:
        ended_ids = [r["b_id"] for r in ended_rows]
        session.execute(update(EPISODES).where(EPISODES.c.id == bindparam("b_id"))
                        .values(ended_at=now, end_reason=bindparam("b_reason")), ended_rows)
        # work not started for an ended episode is dropped: its measures no longer apply
        session.execute(update(STAGES).where(STAGES.c.episode.in_(ended_ids), STAGES.c.status == "in_flight",
                                             STAGES.c.action != "resume").values(status="cancelled"))
        session.execute(update(JOBS).where(JOBS.c.episode.in_(ended_ids), JOBS.c.status == "pending",
                                           JOBS.c.action.in_(("notice", "suspend", "delete", "hook")))
                        .values(status="cancelled", finished_at=now))
    if hold_ids:
        session.execute(update(HOLDS).where(HOLDS.c.id.in_(hold_ids)).values(released_at=now))
    part.jobs += transitions.write(session, effects)
    if resuming:
        # the suspension's host work not started yet is dropped: resuming supersedes it
        session.execute(update(JOBS).where(JOBS.c.account.in_(resuming), JOBS.c.status == "pending",
                                           JOBS.c.action == "suspend").values(status="cancelled", finished_at=now))
        part.jobs += insert_jobs(session, effects.resumes)
    execute_many(session, update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("b_id"))
                 .values(state=bindparam("b_state"), next_check_at=bindparam("b_next")), account_rows)
    return part
