"""Time `arrears plan` over many accounts with a few due (default 100,000 with 1% due).

    python bench/plan_scale.py [--accounts 100000] [--due-percent 1] [--db sqlite:///path.db]

Prints the time to fill the database, to plan through the CLI's code path, and the number of account
rows and statements read.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--due-percent", type=float, default=1.0)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
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
        with store.engine.begin() as conn:
            conn.execute(insert(m.Account), accounts)
            conn.execute(insert(m.LedgerEntry), ledger)
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
    print(f"accounts: {args.accounts}, due: {due}")
    print(f"fill:  {t1 - t0:.2f} s")
    print(f"plan:  {t3 - t2:.2f} s  ({len(items)} measures, {len(errors)} errors)")
    print(f"read:  {loaded} account rows, {statements} statements")


if __name__ == "__main__":
    main()
