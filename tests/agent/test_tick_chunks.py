"""The tick in chunks: due accounts evaluated and recorded a chunk at a time with a few bulk statements,
each account's transition atomic, on SQLite and on PostgreSQL; and a tick killed while it records a chunk
loses nothing and does nothing twice when it runs again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text

from agent.config import AgentSettings
from agent.imports import touch
from agent.store import models as m
from agent.store.db import Store, open_store
from agent.tick import tick
from policy.loader import PolicySet
from tests.scenarios.harness import POLICY, Arrears, day

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
SETTINGS = AgentSettings(tick_chunk=4)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'arrears.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def debtors(store: Store, n: int, *, paying: int = 0) -> list[str]:
    """``n`` accounts charged 10 the day before ``NOW`` and due now, then ``paying`` accounts checked next month."""
    ids = [f"acct-{i:03d}" for i in range(n)]
    rows: list[dict[str, Any]] = [
        {"id": aid, "billing_email": f"{aid}@example.org", "currency": "USD", "has_billing_profile": True,
         "state": "active", "resources": {}, "next_check_at": NOW - timedelta(hours=1),
         "changed_at": NOW - timedelta(days=1)}
        for aid in ids]
    rows += [{"id": f"paid-{i:03d}", "billing_email": None, "currency": "USD", "has_billing_profile": True,
              "state": "active", "resources": {}, "next_check_at": NOW + timedelta(days=30), "changed_at": None}
             for i in range(paying)]
    with store.engine.begin() as conn:
        conn.execute(insert(m.Account), rows)
        conn.execute(insert(m.LedgerEntry), [{"account": aid, "at": NOW - timedelta(days=1), "amount": Decimal(-10),
                                               "kind": "charge", "ref": f"c-{aid}"} for aid in ids])
    return ids


def rows(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


@contextmanager
def counting(store: Store) -> Iterator[list[str]]:
    """The statements sent to the database inside the block."""
    statements: list[str] = []

    def log(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", log)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", log)


def test_due_accounts_are_recorded_a_chunk_at_a_time_with_a_few_statements(db: Store, policy: PolicySet) -> None:
    ids = debtors(db, 10, paying=5)
    with counting(db) as statements, db.sessions() as s:
        t = tick(s, policy, NOW, SETTINGS)
    assert (t.accounts, t.episodes_started, t.jobs, t.stale, t.errors) == (10, 10, 20, 0, [])
    assert sorted(x["account"] for x in t.measures) == ids
    # three chunks of at most 4 accounts, each read and written with the same few statements
    writes = [st for st in statements if st.lstrip().upper().startswith(("INSERT", "UPDATE"))]
    assert len(statements) <= 3 * 19, statements
    assert len(writes) <= 3 * 5, writes
    episodes = rows(db, "select account, id, trigger, ended_at from episodes order by account")
    assert [e[0] for e in episodes] == ids and all(e[3] is None for e in episodes)
    episode = {a: ep for a, ep, _, _ in episodes}
    assert rows(db, "select account, stage, status from stages_taken order by account") == [
        (a, "outstanding_notice", "in_flight") for a in ids]
    assert sorted(r[0] for r in rows(db, "select key from jobs")) == sorted(
        [f"{a}:{episode[a]}:outstanding_notice" for a in ids] + [f"{a}:{episode[a]}:episode:event:debt_started"
                                                                for a in ids])
    assert sorted(rows(db, "select account, action from audit")) == [(a, "episode.start") for a in ids]
    soon = NOW + timedelta(seconds=SETTINGS.recheck_seconds)
    with db.session() as s:
        accounts = {a.id: a for a in s.scalars(select(m.Account))}
    assert {(accounts[a].state, accounts[a].next_check_at) for a in ids} == {("debtor", soon)}
    assert {accounts[f"paid-{i:03d}"].state for i in range(5)} == {"active"}
    with db.sessions() as s:  # nothing is due any more at this moment
        assert tick(s, policy, NOW, SETTINGS).accounts == 0


def test_a_payment_ends_the_episode_releases_the_hold_and_resumes_every_host(db: Store, policy: PolicySet) -> None:
    [paid, owing] = debtors(db, 2)
    suspended_at = NOW + timedelta(days=8)
    with db.session() as s:
        episodes: dict[str, int] = {}
        for aid in (paid, owing):
            row = m.Episode(account=aid, started_at=NOW - timedelta(days=1), trigger="over_limit")
            s.add(row)
            s.flush()
            episodes[aid] = row.id
            for stage, action, at in (("outstanding_notice", "notice", NOW), ("pre_suspension", "notice",
                                                                                NOW + timedelta(days=5)),
                                      ("suspension", "suspend", suspended_at)):
                s.add(m.StageTaken(episode=row.id, account=aid, stage=stage, action=action, status="taken",
                                   queued_at=at, at=at, hold="debt" if action == "suspend" else None))
            s.add(m.Hold(account=aid, kind="debt", since=suspended_at, reason="suspension", actor="policy"))
            for service, host in (("web", "web1"), ("mail", "mail1")):
                s.add(m.Placement(account=aid, service=service, host=host, resource={}, state={}))
            acc = s.get(m.Account, aid)
            assert acc is not None
            acc.state, acc.next_check_at = "suspended", suspended_at + timedelta(days=1)
        # a suspension job that never ran (its host was unreachable) is superseded by the resume
        s.add(m.Job(key=f"{paid}:{episodes[paid]}:suspension:mail:mail2", account=paid, episode=episodes[paid],
                    stage="suspension", kind="host", action="suspend", service="mail", host="mail2", payload={},
                    status="pending", attempts=1, next_attempt_at=suspended_at, created_at=suspended_at))
        s.add(m.LedgerEntry(account=paid, at=suspended_at + timedelta(hours=2), amount=Decimal(10), kind="payment",
                            method="card", ref="p-1"))
    later = suspended_at + timedelta(days=1)
    with db.sessions() as s:
        t = tick(s, policy, later, SETTINGS)
    assert (t.accounts, t.episodes_ended, t.resumes, t.errors) == (2, 1, [paid], [])
    ep = episodes[paid]
    assert rows(db, "select ended_at is not null from episodes where id = :ep", ep=ep) == [(True,)]
    assert rows(db, "select kind, released_at is not null from holds where account = :a", a=paid) == [("debt", True)]
    assert rows(db, "select stage, action, status from stages_taken where account = :a and action = 'resume'",
                a=paid) == [("resume", "resume", "in_flight")]
    assert sorted(rows(db, "select key, action, status from jobs where account = :a", a=paid)) == [
        (f"{paid}:{ep}:resume:mail:mail1", "resume", "pending"),
        (f"{paid}:{ep}:resume:web:web1", "resume", "pending"),
        (f"{paid}:{ep}:suspension:mail:mail2", "suspend", "cancelled")]
    assert sorted(r[0] for r in rows(db, "select action from audit where account = :a", a=paid)) == [
        "episode.end", "hold.release"]
    # the state is written by the executor once every host resumed; the other account is left as it was
    assert rows(db, "select state from accounts where id = :a", a=paid) == [("suspended",)]
    assert rows(db, "select count(*) from jobs where account = :a", a=owing) == [(0,)]
    assert rows(db, "select count(*) from holds where account = :a and released_at is null", a=owing) == [(1,)]


_REFUSE = {
    "sqlite": ["CREATE TRIGGER refuse_stage BEFORE INSERT ON stages_taken WHEN NEW.account = 'acct-005' "
               "BEGIN SELECT RAISE(ABORT, 'stage refused'); END"],
    "postgresql": ["CREATE FUNCTION refuse_stage() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'stage refused' USING ERRCODE = 'check_violation'; END $$",
                   "CREATE TRIGGER refuse_stage BEFORE INSERT ON stages_taken FOR EACH ROW "
                   "WHEN (NEW.account = 'acct-005') EXECUTE FUNCTION refuse_stage()"],
}


def test_a_constraint_failure_rolls_back_that_account_alone(db: Store, policy: PolicySet) -> None:
    ids = debtors(db, 7)
    dialect = db.engine.dialect.name
    with db.engine.begin() as conn:
        for sql in _REFUSE[dialect]:
            conn.execute(text(sql))
    with db.sessions() as s:
        t = tick(s, policy, NOW, SETTINGS)
    assert t.accounts == 7 and len(t.errors) == 1 and t.errors[0].startswith("acct-005: ")
    assert "stage refused" in t.errors[0]
    ok = [a for a in ids if a != "acct-005"]
    assert [r[0] for r in rows(db, "select account from episodes order by account")] == ok
    assert sorted({r[0] for r in rows(db, "select account from jobs")}) == ok
    assert sorted({r[0] for r in rows(db, "select account from audit")}) == ok
    assert [r[0] for r in rows(db, "select account from stages_taken order by account")] == ok
    # nothing of the refused account was written: it is still due, and recorded once the cause is gone
    assert rows(db, "select state from accounts where id = 'acct-005'") == [("active",)]
    with db.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_stage" + (" ON stages_taken" if dialect == "postgresql" else "")))
    with db.sessions() as s:
        again = tick(s, policy, NOW, SETTINGS)
    assert (again.accounts, again.episodes_started, again.errors) == (1, 1, [])
    assert Counter(r[0] for r in rows(db, "select account from episodes")) == Counter(ids)


def test_an_account_paid_while_its_chunk_was_evaluated_is_left_for_the_next_tick(
        db: Store, policy: PolicySet, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.tick

    ids = debtors(db, 6)
    original = agent.tick.evaluate_chunks
    # PostgreSQL: the tick holds its chunk's accounts (FOR UPDATE) until the chunk is recorded, so billing's
    # write, from another connection, waits for that commit; SQLite lets it in, and the tick finds it stale
    locked = db.engine.dialect.name == "postgresql"
    billing: list[threading.Thread] = []

    def pay() -> None:
        with db.session() as other:  # billing records a payment meanwhile
            acc = other.get(m.Account, "acct-005")
            assert acc is not None
            other.add(m.LedgerEntry(account="acct-005", at=NOW, amount=Decimal(10), kind="payment",
                                    method="card", ref="racing"))
            touch(acc, NOW)

    def racing(session, policy, now, **kw):  # type: ignore[no-untyped-def]
        for chunk in original(session, policy, now, **kw):
            if any(ev.account.id == "acct-005" for ev in chunk):
                if locked:
                    billing.append(threading.Thread(target=pay))
                    billing[-1].start()
                else:
                    pay()
            yield chunk

    monkeypatch.setattr(agent.tick, "evaluate_chunks", racing)
    with db.sessions() as s:
        t = tick(s, policy, NOW, SETTINGS)
    for thread in billing:
        thread.join(timeout=60)
        assert not thread.is_alive()
    recorded = ids if locked else ids[:5]  # locked: the decision came first, the payment after it
    assert (t.accounts, t.stale, t.episodes_started, t.errors) == (6, 0 if locked else 1, len(recorded), [])
    assert [r[0] for r in rows(db, "select account from episodes order by account")] == recorded
    monkeypatch.undo()
    with db.sessions() as s:
        again = tick(s, policy, NOW, SETTINGS)
    assert (again.accounts, again.episodes_started, again.measures) == (1, 0, [])  # paid: no debt any more
    assert rows(db, "select state from accounts where id = 'acct-005'") == [("active",)]


# --- killed while recording a chunk ------------------------------------------------------------

# `arrears run` that dies (SIGKILL) when it is about to queue the jobs of its second chunk: that chunk's
# episodes, stages and audit rows are written but not committed, the first chunk is committed, and the
# executor has not started
KILLED_RUN = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

queued = 0

def before(conn, cursor, statement, parameters, context, executemany):
    global queued
    if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
        queued += 1
        if queued == 2:
            os.kill(os.getpid(), signal.SIGKILL)

event.listen(Engine, "before_cursor_execute", before)
from agent.cli import main
sys.argv = ["arrears", *sys.argv[1:]]
main()
"""


def test_sigkill_while_a_chunk_is_recorded_then_a_run_loses_nothing_and_does_nothing_twice(tmp_path: Path) -> None:
    ids = [f"debtor-{i:02d}" for i in range(10)]
    a = Arrears.create(tmp_path / "cfg", policy=POLICY.replace("{resume}", "true") + "agent: {tick_chunk: 4}\n",
                       accounts=[{"id": aid, "username": aid.replace("-", ""), "billing_email": f"{aid}@example.org",
                                  "currency": "USD"} for aid in ids])
    a.ok("ledger", "import", str(a.write("ledger.jsonl", [
        {"account": aid, "at": day(0, 8), "amount": "-50.00", "kind": "charge", "ref": f"c-{aid}"} for aid in ids])))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")}
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, "--config", str(a.folder), "run", "--at", day(0)],
                            env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()

    con = sqlite3.connect(a.folder / "arrears.db")
    try:
        recorded = [r[0] for r in con.execute("select account from episodes order by account")]
        jobs = con.execute("select count(*), count(distinct account) from jobs").fetchone()
        stages = con.execute("select count(*) from stages_taken").fetchone()
    finally:
        con.close()
    assert recorded == ids[:4]  # the first chunk committed; the second one was rolled back whole
    assert jobs == (8, 4) and stages == (4,)
    assert a.spool() == []  # the executor never ran

    again = a.run(0)
    assert again["accounts"] == 6 and again["errors"] == [] and again["executor"]["errors"] == []
    assert a.run(0)["episodes_started"] == 0  # a third run finds nothing left to do

    con = sqlite3.connect(a.folder / "arrears.db")
    try:
        episodes = Counter(r[0] for r in con.execute("select account from episodes"))
        stages_taken = Counter(con.execute("select account, stage, status from stages_taken"))
        keys = Counter(r[0] for r in con.execute("select key from jobs"))
        kinds = Counter(con.execute("select account, kind, action from jobs where status = 'done'"))
    finally:
        con.close()
    assert episodes == Counter(ids)
    assert stages_taken == Counter({(aid, "outstanding_notice", "taken"): 1 for aid in ids})
    assert set(keys.values()) == {1}
    assert kinds == Counter({(aid, kind, action): 1 for aid in ids
                             for kind, action in (("notice", "notice"), ("event", "debt_started"),
                                                  ("event", "notice_sent"))})
    spooled = a.spool()
    assert sorted(name.split(":")[0] for name in spooled) == ids  # one notice per account, each once
    message_ids = [message_from_bytes((a.folder / "outbox" / name).read_bytes())["Message-ID"] for name in spooled]
    assert len(set(message_ids)) == len(ids)
