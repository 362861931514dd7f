"""The HTTP API at scale: can-spend latency over one keep-alive connection, and payments ingested per second.

    python bench/http_api.py                          # 1,000,000 accounts, each with a charge of 10.00
    python bench/http_api.py --accounts 100000 --requests 2000
    python bench/http_api.py --keep /tmp/http-bench    # keep (and on the next run reuse) the database

The database is created by the CLI and filled with ``sqlite3.executemany`` (``--import``: through the CLI's
imports, which bench/scale.py measures), then a real
``arrears serve`` (uvicorn on loopback, its clock stood still) answers an httpx client: ``can-spend`` for
random accounts (p50, p90, p99, max), then ``POST /v1/payments`` one after another over the same
connection and from a few connections at once (payments per second; each one is a committed transaction).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
AT = "2026-03-10T12:00:00+00:00"
POLICY = """\
timezone: UTC
defaults:
  currency: USD
  credit_limit: 200
  financial_threshold: 200
  pay_with_negative: true
  triggers: {subzero_period: -1}
  stages:
    - {name: credit_hold, action: suspend}
"""


def arrears(folder: Path, *args: str) -> str:
    exe = Path(sys.executable).with_name("arrears")
    out = subprocess.run([str(exe), "--config", str(folder), *args], capture_output=True, text=True, check=False,
                         cwd=ROOT, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"arrears {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return out.stdout


def fill(folder: Path, accounts: int, *, importer: bool) -> None:
    """``accounts`` accounts, each with one charge of 10.00. With ``importer`` through ``accounts import`` and
    ``ledger import`` (about 4 minutes a million on an idle 2-core machine); else the same rows written with
    ``sqlite3.executemany`` into the database the CLI created (the columns the importer sets)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.yaml").write_text(POLICY)
    started = time.perf_counter()
    if importer:
        afile, lfile = folder / "accounts.jsonl", folder / "ledger.jsonl"
        with afile.open("w") as a, lfile.open("w") as ledger:
            for i in range(accounts):
                a.write(json.dumps({"id": f"acct-{i:07d}", "username": f"user{i:07d}",
                                    "billing_email": f"billing{i}@example.org", "currency": "USD"}) + "\n")
                ledger.write(json.dumps({"account": f"acct-{i:07d}", "at": "2026-03-01T08:00:00+00:00",
                                         "amount": "-10.00", "kind": "charge", "ref": f"inv-{i}"}) + "\n")
        for what, path in (("accounts", afile), ("ledger", lfile)):
            arrears(folder, what, "import", str(path))
            path.unlink()
    else:
        arrears(folder, "tokens", "list")  # creates and migrates the database
        con = sqlite3.connect(folder / "arrears.db")
        now = "2026-03-01 08:00:00.000000"
        con.executemany("INSERT INTO accounts (id, username, billing_email, currency, has_billing_profile, state, "
                        "next_check_at, changed_at, resources, created_at, updated_at) "
                        "VALUES (?, ?, ?, 'USD', 1, 'active', NULL, ?, '{}', ?, ?)",
                        ((f"acct-{i:07d}", f"user{i:07d}", f"billing{i}@example.org", now, now, now)
                         for i in range(accounts)))
        con.executemany("INSERT INTO ledger (account, at, amount, kind, ref, imported_at) "
                        "VALUES (?, ?, '-10.00', 'charge', ?, ?)",
                        ((f"acct-{i:07d}", now, f"inv-{i}", now) for i in range(accounts)))
        con.commit()
        con.close()
    print(f"fill: {accounts:,} accounts and ledger lines {'imported' if importer else 'written'} in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (the machine's load disturbs it least)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def can_spend(client: httpx.Client, accounts: int, n: int) -> list[float]:
    rng = random.Random(7)
    times = []
    for _ in range(n):
        account = f"acct-{rng.randrange(accounts):07d}"
        started = time.perf_counter()
        r = client.get(f"/v1/accounts/{account}/can-spend", params={"amount": "190.00"})
        times.append((time.perf_counter() - started) * 1000)
        if r.status_code != 200 or not r.json()["allowed"]:  # balance -10 (or more, after earlier runs' payments)
            raise SystemExit(f"can-spend {account}: {r.status_code} {r.text}")
    return times


def payments(url: str, token: str, accounts: int, n: int, clients: int, tag: str) -> float:
    """``n`` payments from ``clients`` connections at once; payments per second (wall)."""
    errors: list[str] = []

    def send(k: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            for i in range(k, n, clients):
                body = {"account": f"acct-{(i * 7919) % accounts:07d}", "amount": "1.00", "method": "card",
                        "ref": f"bench-{tag}-{i}", "at": AT}
                r = c.post("/v1/payments", json=body)
                if r.status_code != 201:
                    errors.append(f"{r.status_code} {r.text}")
                    return

    threads = [threading.Thread(target=send, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"payments: {errors[0]}")
    return n / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5000, help="can-spend requests measured")
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--import", dest="importer", action="store_true",
                        help="fill the database through the CLI's imports (slow) instead of sqlite3.executemany")
    parser.add_argument("--keep", type=Path, default=None, help="folder of the configuration and database to keep")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="arrears-http-bench-"))
    folder = base / f"cfg-{args.accounts}"
    try:
        if not (folder / "arrears.db").exists():
            fill(folder, args.accounts, importer=args.importer)
        token = json.loads(arrears(folder, "tokens", "add", f"bench-{os.getpid()}", "--scope", "billing",
                                   "--json"))["token"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (folder / "serve.log").open("w")
        proc = subprocess.Popen([str(Path(sys.executable).with_name("arrears")), "--config", str(folder), "serve",
                                 "--listen", f"127.0.0.1:{port}", "--at", AT, "--log-level", "warning"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/v1/openapi.json", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"arrears serve did not start:\n{(folder / 'serve.log').read_text()}")
                time.sleep(0.1)
            print(f"cores: {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}, "
                  f"python {sys.version.split()[0]}, {args.accounts:,} accounts")
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
                can_spend(client, args.accounts, 200)  # warm-up: imports, caches, the connection
                cpu = cpu_seconds(proc.pid)
                times = can_spend(client, args.accounts, args.requests)
                cpu = cpu_seconds(proc.pid) - cpu
            print(f"can-spend over one keep-alive connection, {args.requests:,} requests for random accounts: "
                  f"p50 {statistics.median(times):.2f} ms, p90 {percentile(times, 90):.2f} ms, "
                  f"p99 {percentile(times, 99):.2f} ms, max {max(times):.2f} ms, "
                  f"{len(times) / (sum(times) / 1000):.0f} requests/s; server CPU {cpu / len(times) * 1000:.2f} ms "
                  "per request")
            for clients in (1, 4):
                cpu = cpu_seconds(proc.pid)
                rate = payments(url, token, args.accounts, args.payments, clients, f"{os.getpid()}-{clients}")
                cpu = cpu_seconds(proc.pid) - cpu
                print(f"payments ingested, {args.payments:,} from {clients} connection(s): {rate:.0f}/s wall; "
                      f"server CPU {cpu / args.payments * 1000:.2f} ms per payment ({args.payments / cpu:.0f}/cpu-s)")
            print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
