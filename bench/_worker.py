"""Child processes of bench/scale.py, one job each, so that each is measured alone (CPU, peak RSS).

    _worker.py cli ARGS...                 the arrears CLI, counting SQL statements and commits
    _worker.py fill DB ACCOUNTS DUE NOW     accounts and ledger rows inserted directly, DUE of them in debt
    _worker.py floor-accounts DB FILE       the floor: the file's accounts with plain sqlite3.executemany
    _worker.py floor-ledger DB FILE         the floor: the file's ledger lines with plain sqlite3.executemany
    _worker.py prerender DIR N              N notice messages written as .eml files
    _worker.py smtp-floor HOST PORT DIR     the floor: DIR's messages sent with smtplib over one connection
"""

from __future__ import annotations

import atexit
import json
import os
import smtplib
import sqlite3
import sys
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ARREARS_BENCH_CODE: the agent's code of another checkout (scale.py --before), imported instead of this one's
sys.path.insert(0, os.environ.get("ARREARS_BENCH_CODE") or str(ROOT))

_ISO = "%Y-%m-%d %H:%M:%S.%f"


def counting_cli(args: list[str]) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts = {"statements": 0, "commits": 0}

    def on_execute(*_: object) -> None:
        counts["statements"] += 1

    def on_commit(*_: object) -> None:
        counts["commits"] += 1

    event.listen(Engine, "before_cursor_execute", on_execute)
    event.listen(Engine, "commit", on_commit)
    if "run" in args:  # the executor's own share, counted apart from the tick's
        import time

        import agent.executor

        inner = agent.executor.execute

        def execute(*a: Any, **kw: Any) -> Any:
            before, cpu = dict(counts), time.process_time()
            try:
                return inner(*a, **kw)
            finally:
                counts["executor_statements"] = counts.get("executor_statements", 0) + \
                    counts["statements"] - before["statements"]
                counts["executor_commits"] = counts.get("executor_commits", 0) + counts["commits"] - before["commits"]
                counts["executor_cpu_ms"] = counts.get("executor_cpu_ms", 0) + \
                    round(1000 * (time.process_time() - cpu))

        agent.executor.execute = execute  # type: ignore[assignment]
        _time_sending(counts)
        marks = getattr(agent.executor, "_SentMarks", None)
        if marks is not None:  # the per-message UPDATE + commit, on the driver: the commit counter misses it
            mark = marks.sent

            def sent(self: Any, key: str) -> None:
                counts["driver_commits"] = counts.get("driver_commits", 0) + 1
                mark(self, key)

            marks.sent = sent
    atexit.register(lambda: print("bench-counters " + json.dumps(counts), file=sys.stderr))
    from agent.cli import main

    sys.argv = ["arrears", *args]
    main()


def _time_sending(counts: dict[str, int]) -> None:
    """``send_wall_ms``: the wall time during which at least one SMTP batch was being sent (the sending
    phase: connections, message bytes, the SMTP exchanges and the per-message commits; not the claims,
    composing and recording between batches), however many batches run at once."""
    import threading
    import time

    from agent.notices import delivery

    inner = delivery.SmtpNotifier.send
    lock = threading.Lock()
    state = {"busy": 0, "since": 0.0, "total": 0.0}

    def send(self: Any, *a: Any, **kw: Any) -> Any:
        with lock:
            if not state["busy"]:
                state["since"] = time.perf_counter()
            state["busy"] += 1
        try:
            return inner(self, *a, **kw)
        finally:
            with lock:
                state["busy"] -= 1
                if not state["busy"]:
                    state["total"] += time.perf_counter() - state["since"]
                    counts["send_wall_ms"] = round(1000 * state["total"])

    delivery.SmtpNotifier.send = send  # type: ignore[method-assign]


def fill(db: str, accounts: int, due: int, now_iso: str) -> None:
    from sqlalchemy import create_engine, insert

    from agent.store import models as m

    now = datetime.fromisoformat(now_iso)
    step = max(1, accounts // max(due, 1)) if due else accounts + 1
    engine = create_engine(f"sqlite:///{db}")
    chunk = 50_000
    with engine.begin() as conn:
        for start in range(0, accounts, chunk):
            rows, ledger = [], []
            for i in range(start, min(accounts, start + chunk)):
                in_debt = due > 0 and i % step == 0 and i // step < due
                aid = f"acct-{i:07d}"
                rows.append({"id": aid, "username": f"user{i:07d}", "billing_email": f"billing{i}@example.org",
                             "currency": "USD", "has_billing_profile": True, "state": "active", "resources": {},
                             "next_check_at": now - timedelta(hours=1) if in_debt else now + timedelta(days=30)})
                ledger.append({"account": aid, "at": now - timedelta(days=2), "amount": -5 if in_debt else 5,
                               "kind": "charge" if in_debt else "payment", "ref": f"r-{i}"})
            conn.execute(insert(m.Account), rows)
            conn.execute(insert(m.LedgerEntry), ledger)


def _lines(path: str) -> list[dict[str, object]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def floor_accounts(db: str, path: str) -> None:
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO accounts (id, username, billing_email, plan, currency, has_billing_profile, state, resources) "
        "VALUES (?, ?, ?, ?, ?, ?, 'active', '{}')",
        [(r["id"], r["username"], r["billing_email"], r["plan"], r["currency"], r["has_billing_profile"])
         for r in _lines(path)])
    con.commit()


def floor_ledger(db: str, path: str) -> None:
    con = sqlite3.connect(db)
    records = _lines(path)
    con.executemany("INSERT OR IGNORE INTO accounts (id, currency, has_billing_profile, state, resources) "
                    "VALUES (?, 'USD', 1, 'active', '{}')", sorted({(str(r["account"]),) for r in records}))
    con.executemany(
        "INSERT INTO ledger (account, at, amount, kind, ref) VALUES (?, ?, ?, ?, ?)",
        [(r["account"], datetime.fromisoformat(str(r["at"])).strftime(_ISO), r["amount"], r["kind"], r["ref"])
         for r in records])
    con.commit()


def prerender(folder: str, n: int) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = "billing@example.net"
        msg["To"] = f"billing{i}@example.org"
        msg["Subject"] = f"Your account acct-{i:07d} has an outstanding balance"
        msg["Message-ID"] = make_msgid(idstring=f"acct-{i:07d}.1.outstanding_notice", domain="example.net")
        msg.set_content(f"Dear customer,\n\nyour account acct-{i:07d} has an outstanding balance of $5.00.\n"
                        "Please pay at https://billing.example.net/pay/.\n\nExample Hosting\n")
        (out / f"{i:07d}.eml").write_bytes(bytes(msg))


def smtp_floor(host: str, port: int, folder: str) -> None:
    with smtplib.SMTP(host, port) as smtp:
        for path in sorted(Path(folder).glob("*.eml")):
            data = path.read_bytes()
            to = next(line for line in data.split(b"\n") if line.startswith(b"To: "))[4:].strip().decode()
            smtp.sendmail("billing@example.net", [to], data)


def main() -> None:
    job, *args = sys.argv[1:]
    if job == "cli":
        counting_cli(args)
    elif job == "fill":
        fill(args[0], int(args[1]), int(args[2]), args[3])
    elif job == "floor-accounts":
        floor_accounts(*args)
    elif job == "floor-ledger":
        floor_ledger(*args)
    elif job == "prerender":
        prerender(args[0], int(args[1]))
    elif job == "smtp-floor":
        smtp_floor(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown job {job!r}")


if __name__ == "__main__":
    main()
