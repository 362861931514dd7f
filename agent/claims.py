"""Who works on which job: claims with ``SELECT ... FOR UPDATE SKIP LOCKED``, leases, and host leases.

Any number of agents drain one outbox. Each claim runs in one short transaction:

1. The hosts with due host jobs get a row in ``host_leases`` (if they have none yet; committed apart).
2. The agent takes its share of the hosts that are free (no holder, or one whose lease ended, or itself):
   ``SELECT ... FOR UPDATE SKIP LOCKED`` on those rows, so two agents claiming at the same moment take
   different hosts, and at most ``ceil(free hosts / live agents running no batch)`` of them, so every
   agent gets some. A host
   is so worked on by one agent at a time: one batch per host across all agents, in the order of its
   jobs. The leases are given back after the batch.
3. The due host jobs of those hosts, and up to :data:`CLAIM_LIMIT` other due jobs (notices, events),
   are locked with ``FOR UPDATE SKIP LOCKED`` and marked ``claimed`` with the agent's name.

A claim is its agent's while the agent's lease lasts (:mod:`agent.agents`: a heartbeat renews it); then
:meth:`Claims.reclaim` makes the job pending again and frees its hosts. An agent takes over at once the
claims made under its own name (its predecessor of that name is dead: the name is locked) and, as the
sole worker (SQLite's instance lock), every claim. A job claimed by a worker that never registered (a
test calling :func:`agent.executor.execute` itself) is taken over ``agent.lease_seconds`` after it was
claimed, counted in the executor's ``now``.

On SQLite (one agent, the instance lock) ``FOR UPDATE SKIP LOCKED`` is not written; the same statements
run and the host leases are all the sole agent's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from agent.agents import db_clock, live_agents
from agent.config import AgentSettings
from agent.store import models as m
from agent.store.bulk import insert_ignore, table_of

__all__ = ["CLAIM_LIMIT", "Claimed", "Claims"]

CLAIM_LIMIT = 2000  # notices and events one claim takes at most (host jobs: all of the hosts it leased)
_IDS = 500  # ids bound in one statement


@dataclass(slots=True, eq=False)
class Claimed:
    """A claimed job, read as a plain row (no ORM object): the executor changes it in memory (``dirty``)
    and writes a chunk's changes with one statement before it commits."""

    id: int
    key: str
    account: str
    episode: int | None
    stage: str
    kind: str
    service: str | None
    host: str | None
    action: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    last_error: str | None
    result: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None
    dirty: bool = False  # changed since it was read (or last written)


_JOB = table_of(m.Job)
_COLUMNS = tuple(_JOB.c[name] for name in Claimed.__dataclass_fields__ if name != "dirty")


class Claims:
    """How the executor of the agent ``worker`` claims, takes over and gives back work.

    ``registered``: ``worker`` has a row in ``agents`` (its lease is its heartbeat); ``sole``: the caller
    holds the database's instance lock (SQLite), so nobody else works on it."""

    def __init__(self, worker: str, settings: AgentSettings, *, sole: bool = False,
                 registered: bool = False) -> None:
        self.worker = worker
        self.settings = settings
        self.sole = sole
        self.registered = registered
        self.hosts: list[str] = []  # the hosts leased by the last claim

    @property
    def exclusive(self) -> bool:
        """A job this worker holds is held by nobody else: a notice claimed under it was claimed by a
        worker that died while sending it (the one message of the in-flight window)."""
        return self.sole or self.registered

    def reclaim(self, session: Session, now: datetime) -> int:
        """Make pending again every job whose claim ended, and free the hosts of agents whose lease
        ended (and this worker's own); returns the jobs taken over."""
        clock = db_clock(session)
        claimed = m.Job.status == "claimed"
        if self.sole:
            ended = claimed
        else:
            registered = select(m.AgentRow.name)
            ended = claimed & or_(
                m.Job.claimed_by == self.worker,
                m.Job.claimed_by.not_in(live_agents(clock)) & m.Job.claimed_by.in_(registered),
                m.Job.claimed_by.not_in(registered)
                & (m.Job.claimed_at < now - timedelta(seconds=self.settings.lease_seconds)))
        res = session.execute(update(m.Job).where(ended).values(status="pending", next_attempt_at=now,
                                                                 claimed_by=None))
        freed = m.HostLease.agent != ""
        if not self.sole:
            freed = freed & or_(m.HostLease.agent == self.worker, m.HostLease.agent.not_in(live_agents(clock)))
        session.execute(update(m.HostLease).where(freed).values(agent=""))
        session.commit()
        return int(getattr(res, "rowcount", 0) or 0)

    def claim(self, session: Session, now: datetime) -> list[Claimed]:
        """Claim this worker's share of the due work at ``now`` (one transaction); returns the jobs."""
        due = (m.Job.status == "pending") & (m.Job.next_attempt_at <= now)
        hosts = sorted(h for h in session.scalars(select(m.Job.host).where(due, m.Job.kind == "host").distinct())
                       if h)
        if hosts:
            clock = db_clock(session)
            insert_ignore(session, table_of(m.HostLease), [{"host": h, "agent": "", "since": clock} for h in hosts],
                          key=("host",))
            session.commit()  # the rows exist for everyone before anyone locks them
        clock = db_clock(session)
        if self.registered:
            session.execute(update(m.AgentRow).where(m.AgentRow.name == self.worker)
                            .values(seen_at=clock, lease_until=clock + timedelta(seconds=self.settings.lease_seconds)))
        leased: list[str] = []
        if hosts:
            free = or_(m.HostLease.agent == "", m.HostLease.agent == self.worker,
                       m.HostLease.agent.not_in(live_agents(clock)))
            # the free hosts are shared among the live agents that run no batch now (this one included)
            busy = select(m.HostLease.agent).where(m.HostLease.agent != "", m.HostLease.agent != self.worker)
            idle = int(session.scalar(select(func.count()).select_from(
                live_agents(clock).where(m.AgentRow.name.not_in(busy)).subquery())) or 0)
            open_hosts = sum(int(session.scalar(select(func.count()).select_from(m.HostLease).where(
                m.HostLease.host.in_(hosts[i:i + _IDS]), free)) or 0) for i in range(0, len(hosts), _IDS))
            share = math.ceil(open_hosts / max(1, idle if self.registered else idle + 1))
            for i in range(0, len(hosts), _IDS):
                if len(leased) >= share:
                    break
                leased += session.scalars(
                    select(m.HostLease.host).where(m.HostLease.host.in_(hosts[i:i + _IDS]), free)
                    .order_by(m.HostLease.host).limit(share - len(leased)).with_for_update(skip_locked=True))
            for i in range(0, len(leased), _IDS):
                session.execute(update(m.HostLease).where(m.HostLease.host.in_(leased[i:i + _IDS]))
                                .values(agent=self.worker, since=clock))
        ids: list[int] = []
        for i in range(0, len(leased), _IDS):
            ids += session.scalars(select(m.Job.id).where(due, m.Job.kind == "host", m.Job.host.in_(leased[i:i + _IDS]))
                                   .order_by(m.Job.id).with_for_update(skip_locked=True))
        hostless = or_(m.Job.kind != "host", m.Job.host.is_(None), m.Job.host == "")
        ids += session.scalars(select(m.Job.id).where(due, hostless).order_by(m.Job.id)
                               .limit(CLAIM_LIMIT).with_for_update(skip_locked=True))
        for i in range(0, len(ids), _IDS):
            session.execute(update(m.Job).where(m.Job.id.in_(ids[i:i + _IDS]))
                            .values(status="claimed", claimed_by=self.worker, claimed_at=now))
        session.commit()
        self.hosts = leased
        jobs: list[Claimed] = []
        for i in range(0, len(ids), _IDS):
            jobs += (Claimed(*row) for row in session.execute(select(*_COLUMNS).where(_JOB.c.id.in_(ids[i:i + _IDS]))))
        jobs.sort(key=lambda j: j.id)
        return jobs

    def release(self, session: Session, hosts: Sequence[str] | None = None) -> None:
        """Give back the hosts of the last claim (their batches are over)."""
        hosts = list(self.hosts if hosts is None else hosts)
        for i in range(0, len(hosts), _IDS):
            session.execute(update(m.HostLease).where(m.HostLease.host.in_(hosts[i:i + _IDS]),
                                                      m.HostLease.agent == self.worker).values(agent=""))
        session.commit()
        self.hosts = []
