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
import gc
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


class RawClient:
    """A lean HTTP/1.1 keep-alive client on one socket: requests prebuilt as bytes, the answer read by its
    Content-Length. It costs the 2 shared cores far less than httpx (whose CPU per request is about the
    server's), so the latency measured is the server's more than the client's."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def ask(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        data = self.buffer
        while (end := data.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed the connection")
            data += chunk
        head = data[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
        total = end + 4 + length
        while len(data) < total:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("the server closed the connection")
            data += chunk
        self.buffer = data[total:]
        return int(data[9:12]), data[end + 4:total]


def spend_requests(token: str, accounts: int, n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [(f"GET /v1/accounts/acct-{rng.randrange(accounts):07d}/can-spend?amount=190.00 HTTP/1.1\r\n"
             f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").encode() for _ in range(n)]


def can_spend(client: RawClient, requests: list[bytes], rate: float = 0) -> tuple[list[float], float]:
    """The latency of each request (ms) and the client's own CPU seconds; the collector off meanwhile.
    Back to back, or with ``rate`` one request every 1/rate seconds (each timed from when it is sent)."""
    times = []
    clock = time.perf_counter
    gc.disable()
    cpu = time.thread_time()
    start = clock()
    try:
        for i, request in enumerate(requests):
            if rate and (wait := start + i / rate - clock()) > 0:
                time.sleep(wait)
            started = clock()
            status, body = client.ask(request)
            times.append((clock() - started) * 1000)
            if status != 200 or b'"allowed":true' not in body:  # balance -10 (or more, after earlier payments)
                raise SystemExit(f"can-spend: {status} {body!r}")
    finally:
        cpu = time.thread_time() - cpu
        gc.enable()
    return times, cpu


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


FLOOR = Path("floor")  # as ``code``: bench/_http_floor.py instead of arrears


def start_server(folder: Path, code: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    """``arrears serve`` on ``folder``'s database, running this checkout's code or ``code``'s (another
    checkout of arrears, put first on the module path: the "before" of a comparison), or the floor."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if code is not None and code != FLOOR:
        env["PYTHONPATH"] = str(code)
    log = (folder / "serve.log").open("w")
    argv = ([sys.executable, str(ROOT / "bench" / "_http_floor.py"), str(port)] if code == FLOOR else
            [str(Path(sys.executable).with_name("arrears")), "--config", str(folder), "serve",
             "--listen", f"127.0.0.1:{port}", "--at", AT, "--log-level", "warning"])
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT if code in (None, FLOOR) else code,
                            stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if code == FLOOR:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc, port
            if httpx.get(f"{url}/v1/openapi.json", timeout=1).status_code == 200:
                return proc, port
        except (httpx.TransportError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"arrears serve did not start:\n{(folder / 'serve.log').read_text()}")
        time.sleep(0.1)


def measure(label: str, folder: Path, code: Path | None, token: str, args: argparse.Namespace, run: int) -> None:
    proc, port = start_server(folder, code)
    try:
        load = os.getloadavg()[0]
        client = RawClient(port)
        try:
            can_spend(client, spend_requests(token, args.accounts, args.warmup, 1000 + run))  # imports, caches
            requests = spend_requests(token, args.accounts, args.requests, run)
            cpu = cpu_seconds(proc.pid)
            times, client_cpu = can_spend(client, requests, args.rate)
            cpu = cpu_seconds(proc.pid) - cpu
        finally:
            client.close()
        n = len(times)
        print(f"{label:<7} load {load:5.2f}  p50 {statistics.median(times):5.2f} ms, "
              f"p90 {percentile(times, 90):5.2f} ms, p99 {percentile(times, 99):5.2f} ms, "
              f"p99.9 {percentile(times, 99.9):6.2f} ms, max {max(times):6.2f} ms, {n / (sum(times) / 1000):4.0f} "
              f"requests/s; CPU per request: server {cpu / n * 1000:.2f} ms, client {client_cpu / n * 1000:.2f} ms",
              flush=True)
        if args.payments and code != FLOOR:
            url = f"http://127.0.0.1:{port}"
            for clients in (1, 4):
                cpu = cpu_seconds(proc.pid)
                tag = f"{os.getpid()}-{label}-{run}-{clients}"
                rate = payments(url, token, args.accounts, args.payments, clients, tag)
                cpu = cpu_seconds(proc.pid) - cpu
                print(f"{label:<7} payments ingested, {args.payments:,} from {clients} connection(s): {rate:.0f}/s "
                      f"wall; server CPU {cpu / args.payments * 1000:.2f} ms per payment "
                      f"({args.payments / cpu:.0f}/cpu-s)", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20000, help="can-spend requests measured")
    parser.add_argument("--warmup", type=int, default=1000, help="can-spend requests before those measured")
    parser.add_argument("--rate", type=float, default=0,
                        help="can-spend requests per second, paced (default: back to back, as fast as answered)")
    parser.add_argument("--payments", type=int, default=2000, help="payments posted (0: none)")
    parser.add_argument("--import", dest="importer", action="store_true",
                        help="fill the database through the CLI's imports (slow) instead of sqlite3.executemany")
    parser.add_argument("--keep", type=Path, default=None, help="folder of the configuration and database to keep")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout of arrears (e.g. a worktree of main) measured beside this one, "
                             "the two alternating on the same database")
    parser.add_argument("--floor", action="store_true",
                        help="measure beside them a constant answer on uvicorn alone (bench/_http_floor.py): the "
                             "machine's share of the latency at that moment")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="arrears-http-bench-"))
    folder = base / f"cfg-{args.accounts}"
    try:
        if not (folder / "arrears.db").exists():
            fill(folder, args.accounts, importer=args.importer)
        token = json.loads(arrears(folder, "tokens", "add", f"bench-{os.getpid()}", "--scope", "billing",
                                   "--json"))["token"]
        print(f"cores: {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}, "
              f"python {sys.version.split()[0]}, {args.accounts:,} accounts; can-spend over one keep-alive "
              f"connection, {args.requests:,} requests for random accounts after {args.warmup:,} of warm-up, "
              f"{f'{args.rate:g} a second' if args.rate else 'back to back'}")
        for run in range(args.repeat):
            if args.before is not None:
                measure("before", folder, args.before.resolve(), token, args, run)
            measure("after" if args.before is not None else "this", folder, None, token, args, run)
            if args.floor:
                measure("floor", folder, FLOOR, token, args, run)
        print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
