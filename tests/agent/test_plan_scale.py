"""`arrears plan` over 100,000 accounts with 1% due reads only the due accounts' rows.

Shown with the statements SQLAlchemy sends (every query on ``accounts`` is bounded by the indexed
``next_check_at`` or by the due ids), SQLite's query plan (an index search, not a scan) and a count of
the account rows read. Wall-clock time is measured by ``bench/plan_scale.py``, not asserted here.

On SQLite only: the query plan asserted is SQLite's, and filling 100,000 accounts takes several times as
long on PostgreSQL; ``bench/plan_scale.py --postgres`` shows PostgreSQL's plan at a million accounts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

import agent.planning
from agent.planning import plan
from agent.store import models as m
from agent.store.db import Store
from agent.store.snapshots import DueAccount
from policy.loader import PolicySet

TOTAL = 100_000
DUE = TOTAL // 100
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def populate(engine: Engine, total: int, due: int, now: datetime) -> list[str]:
    """``total`` accounts, every ``total // due``-th due now and in debt; the others checked next month."""
    step = total // due
    later = now + timedelta(days=30)
    due_ids: list[str] = []
    accounts: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    for i in range(total):
        aid = f"acct-{i:06d}"
        is_due = i % step == 0
        accounts.append({"id": aid, "currency": "USD", "has_billing_profile": True, "state": "active",
                         "resources": {}, "next_check_at": now - timedelta(hours=1) if is_due else later})
        ledger.append({"account": aid, "at": now - timedelta(days=2), "amount": Decimal(-5 if is_due else 5),
                       "kind": "charge" if is_due else "payment", "ref": f"r-{i}"})
        if is_due:
            due_ids.append(aid)
    with engine.begin() as conn:
        conn.execute(insert(m.Account), accounts)
        conn.execute(insert(m.LedgerEntry), ledger)
    return due_ids


def test_plan_reads_only_the_due_rows(sqlite_store: Store, policy: PolicySet,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = sqlite_store
    due_ids = populate(store.engine, TOTAL, DUE, NOW)
    statements: list[str] = []
    loaded: list[str] = []
    sent: list[tuple[str, Any]] = []  # with their parameters, to ask SQLite for their plans

    def log(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        statements.append(statement)
        sent.append((statement, parameters))

    read_chunks = agent.planning.due_chunks

    def reading(*args: Any, **kwargs: Any) -> Iterator[list[DueAccount]]:
        for chunk in read_chunks(*args, **kwargs):
            loaded.extend(acc.id for acc in chunk)
            yield chunk

    monkeypatch.setattr(agent.planning, "due_chunks", reading)
    event.listen(store.engine, "before_cursor_execute", log)
    try:
        with store.reading() as conn:
            items, errors = plan(conn, policy, NOW)
    finally:
        event.remove(store.engine, "before_cursor_execute", log)

    assert errors == []
    assert sorted({i.account for i in items}) == due_ids
    assert {i.stage for i in items} == {"outstanding_notice"}
    assert sorted(loaded) == due_ids  # exactly the due accounts' rows, each once
    on_accounts = [st for st in statements if re.search(r"\bFROM accounts\b", st)]
    assert on_accounts, statements
    for st in on_accounts:
        assert "accounts.next_check_at <=" in st, st
    # the rest of the snapshot is read with one query per table per batch of due ids
    assert len(statements) <= 2 + 6 * (DUE // 500 + 1)
    # in chunks smaller than the due count, each chunk's query is one range of the index on
    # (next_check_at, id), in its order (no scan, no sort), after the last account of the chunk before
    sent.clear()
    event.listen(store.engine, "before_cursor_execute", log)
    try:
        with store.sessions() as s:
            chunks = list(read_chunks(s, NOW, size=300))
    finally:
        event.remove(store.engine, "before_cursor_execute", log)
    assert [a.id for chunk in chunks for a in chunk] == due_ids
    chunk_queries = [(st, params) for st, params in sent if re.search(r"\bFROM accounts\b", st)]
    assert len(chunk_queries) == len(chunks) == DUE // 300 + 1
    assert all("(accounts.next_check_at, accounts.id) >" in st for st, _ in chunk_queries[1:])
    with store.engine.connect() as conn:
        for st, params in chunk_queries:
            detail = " ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + st, params))
            assert "SEARCH accounts USING INDEX ix_accounts_next_check_at_id" in detail, detail
            assert "SCAN" not in detail and "TEMP B-TREE" not in detail, detail
