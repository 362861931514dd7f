"""Claims and leases (agent/claims.py) on SQLite and on a real PostgreSQL: agents share the hosts and the
jobs, a host is one agent's at a time, and a dead agent's claims are taken over when its lease ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from agent.agents import AgentRegistration, db_clock, list_agents
from agent.claims import Claims
from agent.config import AgentSettings
from agent.outbox import host_rows, insert_jobs, notice_row
from agent.store import models as m
from agent.store.db import Store, open_store

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
SETTINGS = AgentSettings(lease_seconds=30)
HOSTS = [f"web-{i}" for i in range(8)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'a.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = open_store(url)
    with db.session() as s:
        for n in range(16):
            s.add(m.Account(id=f"a{n}", state="debtor"))
        s.flush()
        rows = [r for n in range(16) for r in host_rows(f"a{n}", None, "suspension", "suspend",
                                                        [("web", HOSTS[n % 8])], NOW)]
        insert_jobs(s, rows + [notice_row(f"a{n}", None, "outstanding_notice", None, NOW) for n in range(4)])
    yield db
    db.close()


def _agent(db: Store, name: str, lease: float = 30) -> AgentRegistration:
    """An agent's row, as its heartbeat keeps it (the thread is not needed here)."""
    reg = AgentRegistration(db, name, "daemon", lease)
    with db.session() as s:
        clock = db_clock(s)
        s.add(m.AgentRow(name=name, role="daemon", machine="test", pid=1, started_at=clock, seen_at=clock,
                         lease_until=clock + timedelta(seconds=lease), ticks=0))
    return reg


def _claim(db: Store, claims: Claims) -> list[m.Job]:
    with db.sessions() as s:
        return claims.claim(s, NOW)


def test_agents_share_the_hosts_and_each_host_is_one_agents(store: Store) -> None:
    _agent(store, "one"), _agent(store, "two")
    one, two = Claims("one", SETTINGS, registered=True), Claims("two", SETTINGS, registered=True)
    first, second = _claim(store, one), _claim(store, two)
    hosts_one = {j.host for j in first if j.kind == "host"}
    hosts_two = {j.host for j in second if j.kind == "host"}
    assert len(hosts_one) == len(hosts_two) == 4 and not hosts_one & hosts_two  # half the hosts each
    assert hosts_one | hosts_two == set(HOSTS)
    assert {j.id for j in first}.isdisjoint(j.id for j in second)
    assert len(first) + len(second) == 20  # every due job claimed once: 16 host jobs and 4 notices
    with store.session() as s:
        leases = dict(s.execute(select(m.HostLease.host, m.HostLease.agent)).all())
        assert {h for h, a in leases.items() if a == "one"} == hosts_one
        assert [(r["name"], r["claims"], len(r["hosts"])) for r in list_agents(s)] == [
            ("one", len(first), 4), ("two", len(second), 4)]
    # while "one" runs its batches, "two" gets none of its hosts, even for new work there
    with store.session() as s:
        insert_jobs(s, host_rows("a0", None, "resume", "resume", [("web", HOSTS[0])], NOW))
    assert HOSTS[0] not in {j.host for j in _claim(store, two)}
    with store.sessions() as s:
        one.release(s)  # its batches are over: the hosts are free
    assert [j.host for j in _claim(store, two)] == [HOSTS[0]]


def test_a_dead_agents_claims_are_taken_over_when_its_lease_ends(store: Store) -> None:
    _agent(store, "dead"), _agent(store, "alive")
    dead, alive = Claims("dead", SETTINGS, registered=True), Claims("alive", SETTINGS, registered=True)
    taken = _claim(store, dead)  # ... and its process is killed here
    assert taken
    with store.sessions() as s:
        assert alive.reclaim(s, NOW) == 0  # its lease lasts: it may still be working
    mine = _claim(store, alive)
    assert {j.host for j in mine if j.kind == "host"}.isdisjoint(j.host for j in taken)
    with store.sessions() as s:
        alive.release(s)
    with store.session() as s:  # its heartbeat stopped: the lease ends
        s.execute(update(m.AgentRow).where(m.AgentRow.name == "dead")
                  .values(lease_until=db_clock(s) - timedelta(seconds=1)))
        assert [r["state"] for r in list_agents(s) if r["name"] == "dead"] == ["lease ended"]
    with store.sessions() as s:
        # the dead agent's claims, and its own left by its last pass (an agent holds none between passes)
        assert alive.reclaim(s, NOW) == len(taken) + len(mine)
    again = _claim(store, alive)
    assert {j.id for j in taken} <= {j.id for j in again}
    with store.session() as s:
        assert s.scalar(select(m.HostLease.host).where(m.HostLease.agent == "dead")) is None


def test_an_agent_restarted_under_its_name_takes_its_own_claims_over_at_once(store: Store) -> None:
    _agent(store, "billing-1")
    taken = _claim(store, Claims("billing-1", SETTINGS, registered=True))  # killed; restarted under its name
    with store.sessions() as s:
        assert Claims("billing-1", SETTINGS, registered=True).reclaim(s, NOW) == len(taken)


@pytest.mark.realtime
def test_a_registered_agent_beats_and_stops(store: Store) -> None:
    reg = AgentRegistration(store, "beating", "daemon", 0.8).start()  # a heartbeat every 0.2 s
    try:
        with store.session() as s:
            (row,) = list_agents(s)
            assert (row["name"], row["state"], row["ticks"]) == ("beating", "working", 0)
        reg.ticked({"taken": 3})
        deadline = time.monotonic() + 30
        while reg.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the heartbeat thread's count, not waiting a fixed time
        assert reg.beats >= 2
    finally:
        reg.stop()
    with store.session() as s:
        (row,) = list_agents(s)
        assert (row["state"], row["ticks"], row["last_tick"]) == ("stopped", 1, {"taken": 3})
