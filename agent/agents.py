"""The agents working on one database: each one's row in ``agents``, its heartbeat and its lease.

An agent is a ``run``, a ``daemon`` or a ``demo`` under a name (``--name``, else ``ARREARS_AGENT``, else
the machine's name for a daemon and ``MACHINE-ROLE-PID`` for the others). While it works a thread of its
own beats every few seconds: ``seen_at`` becomes the database's clock and ``lease_until`` that plus
``agent.lease_seconds``. Every job it claims (``jobs.claimed_by``) and every host whose batch it runs
(``host_leases``) is its own while its lease lasts; once the lease ended (the agent was killed, its
machine lost, or cut off from the database) another agent takes them over (:mod:`agent.claims`).

Leases are measured by the database's clock (``clock_timestamp()`` on PostgreSQL), never by an agent's
own, so agents on machines whose clocks disagree still agree on whose lease ended. The ``now`` a tick
evaluates accounts at (``--at``, or the wall clock) plays no part in them.

A name is held by one process at a time (the instance lock of :mod:`agent.lock`), so an agent that
starts under the name of one that died knows that one is gone: it takes its claims over at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from agent.store import models as m
from agent.store.bulk import table_of, write_rows
from agent.store.db import Store

__all__ = ["AgentRegistration", "agent_name", "db_clock", "heartbeat_every", "list_agents", "live_agents"]

log = logging.getLogger("arrears.agents")

STOPPED_KEPT = timedelta(days=7)  # a stopped or dead agent's row is removed this long after it was last seen


def db_clock(session: Session) -> datetime:
    """The database's clock (aware UTC): ``clock_timestamp()`` on PostgreSQL, this machine's elsewhere
    (SQLite lives on this machine)."""
    if session.get_bind().dialect.name == "postgresql":
        at = session.scalar(select(func.clock_timestamp()))
        assert isinstance(at, datetime)
        return at.astimezone(UTC)
    return datetime.now(UTC)


def agent_name(role: str, given: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The agent's name: ``given``, else ``ARREARS_AGENT``, else the machine's name (a daemon) or
    ``MACHINE-ROLE-PID`` (a run, a demo: one name per process)."""
    env = os.environ if environ is None else environ
    name = (given or env.get("ARREARS_AGENT") or "").strip()
    if not name:
        machine = socket.gethostname()
        name = machine if role == "daemon" else f"{machine}-{role}-{os.getpid()}"
    if len(name) > 100 or not name.isprintable() or any(c.isspace() for c in name):
        raise ValueError(f"agent name {name!r}: at most 100 printable characters without spaces")
    return name


def heartbeat_every(lease_seconds: float) -> float:
    """Seconds between two heartbeats: a quarter of the lease, between 0.2 and 30 seconds."""
    return max(0.2, min(30.0, lease_seconds / 4))


def live_agents(clock: datetime) -> Any:
    """A subquery of the names of the agents whose lease lasts at ``clock`` (the database's clock)."""
    return select(m.AgentRow.name).where(m.AgentRow.lease_until > clock, m.AgentRow.stopped_at.is_(None))


class AgentRegistration:
    """This process's row in ``agents``: written by :meth:`start`, kept fresh by a heartbeat thread,
    marked stopped by :meth:`stop` (its lease ends then, so what it still holds is free at once)."""

    def __init__(self, store: Store, name: str, role: str, lease_seconds: float) -> None:
        self.store = store
        self.name = name
        self.role = role
        self.lease = timedelta(seconds=lease_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0
        self.lease_until: datetime | None = None

    def start(self) -> AgentRegistration:
        with self.store.session() as s:
            clock = db_clock(s)
            s.execute(delete(m.AgentRow).where(m.AgentRow.seen_at < clock - STOPPED_KEPT,
                                               m.AgentRow.name != self.name))
            row = {"name": self.name, "role": self.role, "machine": socket.gethostname()[:255], "pid": os.getpid(),
                   "started_at": clock, "seen_at": clock, "lease_until": clock + self.lease, "stopped_at": None,
                   "ticks": 0, "last_tick_at": None, "last_tick": None}
            write_rows(s, table_of(m.AgentRow), [row], key=("name",),
                       update=[c for c in row if c not in ("name", "ticks", "last_tick_at", "last_tick")])
            self.lease_until = clock + self.lease
        self._thread = threading.Thread(target=self._beat_loop, name="arrears-heartbeat", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> None:
        """Renew the lease now."""
        with self.store.session() as s:
            clock = db_clock(s)
            s.execute(update(m.AgentRow).where(m.AgentRow.name == self.name)
                      .values(seen_at=clock, lease_until=clock + self.lease))
        self.lease_until = clock + self.lease
        self.beats += 1

    def _beat_loop(self) -> None:
        every = heartbeat_every(self.lease.total_seconds())
        while not self._stop.wait(every):
            try:
                self.beat()
            except Exception as exc:  # the database is away (restart, fail-over): beat again later
                log.warning("heartbeat of agent %s failed: %s", self.name, exc)

    def ticked(self, summary: Mapping[str, Any]) -> None:
        """Record that a tick ended, with its counts."""
        with self.store.session() as s:
            clock = db_clock(s)
            s.execute(update(m.AgentRow).where(m.AgentRow.name == self.name)
                      .values(ticks=m.AgentRow.ticks + 1, last_tick_at=clock, last_tick=dict(summary),
                              seen_at=clock, lease_until=clock + self.lease))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            with self.store.session() as s:
                clock = db_clock(s)
                s.execute(update(m.AgentRow).where(m.AgentRow.name == self.name)
                          .values(stopped_at=clock, seen_at=clock, lease_until=clock))
                s.execute(update(m.HostLease).where(m.HostLease.agent == self.name).values(agent=""))
        except Exception as exc:  # its lease ends by itself
            log.warning("agent %s could not record that it stopped: %s", self.name, exc)

    def __enter__(self) -> AgentRegistration:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def list_agents(session: Session) -> list[dict[str, Any]]:
    """Every agent of the database with its state (``working``, ``stopped``, ``lease ended``), its last
    heartbeat and tick, the jobs it holds claimed and the hosts whose batch it runs."""
    clock = db_clock(session)
    claims = dict(session.execute(select(m.Job.claimed_by, func.count()).where(m.Job.status == "claimed")
                                  .group_by(m.Job.claimed_by)).all())
    hosts: dict[str, list[str]] = {}
    for host, agent in session.execute(select(m.HostLease.host, m.HostLease.agent).where(m.HostLease.agent != "")
                                       .order_by(m.HostLease.host)):
        hosts.setdefault(agent, []).append(host)
    out = []
    for a in session.scalars(select(m.AgentRow).order_by(m.AgentRow.name)):
        state = "stopped" if a.stopped_at is not None else "working" if a.lease_until > clock else "lease ended"
        out.append({"name": a.name, "role": a.role, "machine": a.machine, "pid": a.pid, "state": state,
                    "started_at": a.started_at.isoformat(), "seen_at": a.seen_at.isoformat(),
                    "seen_seconds_ago": round((clock - a.seen_at).total_seconds(), 1),
                    "lease_until": a.lease_until.isoformat(), "ticks": a.ticks,
                    "last_tick_at": a.last_tick_at.isoformat() if a.last_tick_at else None,
                    "last_tick": a.last_tick, "claims": int(claims.get(a.name, 0)),
                    "hosts": hosts.get(a.name, [])})
    return out
