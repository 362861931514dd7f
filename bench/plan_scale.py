"""Time `arrears plan` over many accounts with a few due (default 100,000 with 1% due).

    python bench/plan_scale.py [--accounts 100000] [--due-percent 1] [--db URL | --postgres]

Prints the time to fill the database, to plan through the CLI's code path, and the number of account
rows and statements read. The database is a new SQLite file, or ``--db URL`` (an empty database), or with
``--postgres`` a database on a throwaway PostgreSQL cluster that the script starts and removes itself
(tests/servers/postgres.py; run as root, with Debian's ``postgresql`` package installed), with fsync on.
On PostgreSQL the tables are analysed after the fill, as autovacuum would do, so the planner knows them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text

from agent.store import models as m
from agent.store.db import open_store
from agent.tick import plan
from policy import load_policy

POLICY = """\
timezone: Europe/Amsterdam
defaults:
  credit_limit: 0
  stages:
    - {name: outstanding_notice, action: notice,  after: null, template: outstanding}
    - {name: pre_suspension,     action: notice,  after: 5,    template: pre_suspension}
    - {name: suspension,         action: suspend, after: 3,    template: suspended}
"""


ROOT = Path(__file__).resolve().parent.parent
CHUNK = 100_000  # rows per INSERT ... VALUES batch of the fill (memory stays bounded at a million)


@contextlib.contextmanager
def database(tmp: Path, db: str | None, postgres: bool) -> Iterator[str]:
    if not postgres:
        yield db or f"sqlite:///{tmp / 'bench.db'}"
        return
    sys.path.insert(0, str(ROOT))  # the test servers live in the repository's tests package
    from tests.servers.postgres import throwaway_cluster

    with throwaway_cluster(durable=True) as cluster:
        yield cluster.url(cluster.create_database())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--due-percent", type=float, default=1.0)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", default=None, help="an empty database's URL")
    where.add_argument("--postgres", action="store_true", help="a database on a throwaway PostgreSQL cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(Path(tmp), args.db, args.postgres) as url:
        store = open_store(url)
        now = datetime(2026, 3, 10, 12, tzinfo=UTC)
        step = max(1, round(100 / args.due_percent))
        t0 = time.perf_counter()
        accounts: list[dict[str, Any]] = []
        ledger: list[dict[str, Any]] = []
        due = 0
        for i in range(args.accounts):
            is_due = i % step == 0
            due += is_due
            aid = f"acct-{i:07d}"
            accounts.append({"id": aid, "currency": "USD", "has_billing_profile": True, "state": "active",
                             "resources": {}, "next_check_at": now - timedelta(hours=1) if is_due
                             else now + timedelta(days=30)})
            ledger.append({"account": aid, "at": now - timedelta(days=2), "amount": Decimal(-5 if is_due else 5),
                           "kind": "charge" if is_due else "payment", "ref": f"r-{i}"})
            if len(accounts) == CHUNK or i == args.accounts - 1:
                with store.engine.begin() as conn:
                    conn.execute(insert(m.Account), accounts)
                    conn.execute(insert(m.LedgerEntry), ledger)
                accounts, ledger = [], []
        if store.engine.dialect.name == "postgresql":
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        t1 = time.perf_counter()
        statements = 0
        loaded = 0

        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        def on_load(*_: Any) -> None:
            nonlocal loaded
            loaded += 1

        event.listen(store.engine, "before_cursor_execute", count)
        event.listen(m.Account, "load", on_load)
        policy = load_policy(POLICY, "policy.yaml")
        t2 = time.perf_counter()
        with store.sessions() as s:
            items, errors = plan(s, policy, now)
        t3 = time.perf_counter()
        store.close()
    print(f"database: {store.engine.dialect.name}, accounts: {args.accounts}, due: {due}")
    print(f"fill:  {t1 - t0:.2f} s")
    print(f"plan:  {t3 - t2:.2f} s  ({len(items)} measures, {len(errors)} errors)")
    print(f"read:  {loaded} account rows, {statements} statements")


if __name__ == "__main__":
    main()
