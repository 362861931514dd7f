"""The database side at scale: imports, plan, run, notices and reports, each next to a floor in the same run.

    python bench/scale.py                              # 100,000 accounts, 1,000,000 ledger lines, 1,000 due
    python bench/scale.py --accounts 1000000 --due 10000
    python bench/scale.py --only import,ledger         # some of: import ledger plan run ratio smtp reports
    python bench/scale.py --accounts 1000000 --due 10000 --only plan,run,ratio --repeat 3
    python bench/scale.py --accounts 1000000 --due 10000 --only plan,ratio --repeat 3 --keep /var/tmp/scale
    python bench/scale.py --only smtp --notices 10000 --before ../main-worktree --repeat 3   # before/after

Every step runs the real CLI in a child process and reports the child's CPU time (user + system, which
the machine's load disturbs least), wall time and peak RSS, read with ``wait4``. Steps that run agent
code also count SQL statements and commits (``bench/_worker.py cli`` wraps the CLI with a counter).
The floors are the same rows inserted with plain ``sqlite3.executemany`` (imports) and the same
prerendered messages sent with plain ``smtplib`` over one connection (notices), to the same SMTP server
(``--sink``: Postfix's ``smtp-sink`` by default, see bench/_sink.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _sink import SINKS, make_sink

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("_worker.py")
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
STEPS = ("import", "ledger", "plan", "run", "ratio", "smtp", "reports")

POLICY = """\
timezone: Europe/Amsterdam
defaults:
  currency: USD
  credit_limit: 0
  stages:
    - {name: outstanding_notice, action: notice,  after: null, template: outstanding}
    - {name: pre_suspension,     action: notice,  after: 5,    template: pre_suspension}
    - {name: suspension,         action: suspend, after: 3,    template: suspended}
notices:
  from_addr: billing@example.net
  company: Example Hosting
  payment_url: https://billing.example.net/pay/{account_id}
"""


@dataclass
class Measured:
    cpu: float
    wall: float
    rss_mb: float
    out: str
    err: str

    def counters(self) -> dict[str, int]:
        """The ``statements N commits N`` line the counting wrapper prints last on stderr."""
        for line in reversed(self.err.splitlines()):
            if line.startswith("bench-counters "):
                return {k: int(v) for k, v in json.loads(line.removeprefix("bench-counters ")).items()}
        return {}


def measure(argv: list[str], *, env: dict[str, str] | None = None) -> Measured:
    """Run ``argv`` to its end; its CPU time and peak RSS from ``wait4``."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        result = Measured(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024,
                          out.read().decode(errors="replace"), err.read().decode(errors="replace"))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{result.err[-3000:]}")
    return result


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Measured:
    return measure([sys.executable, str(WORKER), "cli", "--config", str(config), *args], env=env)


def worker(*args: str) -> Measured:
    return measure([sys.executable, str(WORKER), *map(str, args)])


def row(name: str, m: Measured, per: int | None = None, floor: Measured | None = None, extra: str = "") -> None:
    ratio = f"{m.cpu / floor.cpu:7.1f}x" if floor is not None and floor.cpu > 0 else "        "
    unit = f"{1000 * m.cpu / per:9.3f}" if per else " " * 9
    print(f"{name:<44} {m.cpu:9.2f} {m.wall:9.2f} {m.rss_mb:8.0f} {unit} {ratio}  {extra}", flush=True)


def header(title: str) -> None:
    print(f"\n{title}\n{'step':<44} {'cpu s':>9} {'wall s':>9} {'rss MB':>8} {'ms/item':>9} {'x floor':>8}",
          flush=True)


def new_config(base: Path, name: str, *, spool: bool = True, smtp: tuple[str, int] | None = None) -> Path:
    folder = base / name
    folder.mkdir()
    text = POLICY + ("  spool_dir: outbox\n" if spool else f"  smtp: {{host: {smtp[0]}, port: {smtp[1]}}}\n"
                     if smtp else "")
    (folder / "policy.yaml").write_text(text)
    return folder


def write_accounts(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"acct-{i:07d}", "username": f"user{i:07d}",
                                "billing_email": f"billing{i}@example.org", "plan": "basic", "currency": "USD",
                                "has_billing_profile": True}) + "\n")


def write_ledger(path: Path, n: int, accounts: int) -> None:
    at = (NOW - timedelta(days=20)).isoformat()
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"account": f"acct-{i % accounts:07d}", "at": at, "amount": "-5.00" if i % 2 else "5.00",
                                "kind": "charge" if i % 2 else "payment", "ref": f"r-{i}"}) + "\n")


def bench_imports(base: Path, accounts: int, ledger_lines: int, steps: set[str]) -> None:
    header(f"imports: {accounts:,} accounts, {ledger_lines:,} ledger lines (JSON lines)")
    afile, lfile = base / "accounts.jsonl", base / "ledger.jsonl"
    write_accounts(afile, accounts)
    cfg = new_config(base, "imports")
    if "import" in steps:
        floor_db = base / "floor-accounts.db"
        cli(new_config(base, "floor-schema-a"), "--db", f"sqlite:///{floor_db}", "status")
        floor = worker("floor-accounts", floor_db, afile)
        row("floor: sqlite3.executemany accounts", floor, accounts)
        m = cli(cfg, "accounts", "import", str(afile))
        row("accounts import", m, accounts, floor, _statements(m, accounts))
    if "ledger" in steps:
        write_ledger(lfile, ledger_lines, accounts)
        if "import" not in steps:
            cli(cfg, "accounts", "import", str(afile))
        floor_db = base / "floor-ledger.db"
        cli(new_config(base, "floor-schema-l"), "--db", f"sqlite:///{floor_db}", "status")
        floor = worker("floor-ledger", floor_db, lfile)
        row("floor: sqlite3.executemany ledger", floor, ledger_lines)
        m = cli(cfg, "ledger", "import", str(lfile))
        row("ledger import", m, ledger_lines, floor, _statements(m, ledger_lines))


def _statements(m: Measured, per: int) -> str:
    c = m.counters()
    if not c:
        return ""
    text = (f"{c.get('statements', 0):,} statements ({c.get('statements', 0) / per:.2f}/item), "
            f"{c.get('commits', 0)} commits")
    if "executor_statements" in c:
        text += (f"; executor alone: {c['executor_statements']:,} statements "
                 f"({c['executor_statements'] / per:.2f}/item), {c['executor_commits']} commits, "
                 f"{c['executor_cpu_ms'] / 1000:.2f} s CPU")
    if "driver_commits" in c:
        text += f"; {c['driver_commits']:,} per-message commits on the driver"
    return text


def _median(runs: list[Measured]) -> Measured:
    """The run of median CPU time (each repetition's own numbers, not a mix)."""
    return sorted(runs, key=lambda m: m.cpu)[len(runs) // 2]


def bench_tick(base: Path, accounts: int, due: int, steps: set[str], repeat: int = 1,
               keep: bool = False) -> dict[str, Measured]:
    """``plan`` and ``run`` over ``accounts`` with ``due`` of them due; with ``repeat`` > 1 each is run that
    many times (``run`` each time on a copy of the filled database) and the median CPU time is shown.
    ``keep``: the filled database is kept beside the folder (and used again when it is there already)."""
    header(f"plan and run: {accounts:,} accounts, {due:,} due (spool notices)"
           + (f", median of {repeat}" if repeat > 1 else "") + f"{'':14}load average {os.getloadavg()[0]:.1f}")
    cfg, kept = base / f"tick-{accounts}-{due}", base / f"tick-{accounts}-{due}.db"
    db = cfg / "arrears.db"
    shutil.rmtree(cfg, ignore_errors=True)  # (--keep: the last run's folder)
    new_config(base, cfg.name)
    if kept.exists():  # --keep: the database filled by an earlier run, copied (then migrated if it is older)
        shutil.copyfile(kept, db)
        cli(cfg, "status")
    else:
        cli(cfg, "status")  # creates and migrates the database
        worker("fill", db, accounts, due, NOW.isoformat())
        if keep:
            shutil.copyfile(db, kept)
    at = ("--at", NOW.isoformat())
    found: dict[str, Measured] = {}
    startup = _median([cli(cfg, "plan", "--at", (NOW - timedelta(days=3650)).isoformat()) for _ in range(repeat)])
    row("start-up: plan with nothing due", startup, None, None, _statements(startup, 1))
    if "plan" in steps or "ratio" in steps:
        found["plan"] = m = _median([cli(cfg, "plan", *at, "--json") for _ in range(repeat)])
        row("plan", m, due, None, _statements(m, due))
    if "run" in steps or "ratio" in steps:
        filled = cfg / "filled.db"
        if repeat > 1:
            shutil.copyfile(db, filled)
        runs = []
        for i in range(repeat):
            if i:  # the filled database again, without the last run's write-ahead log or its notices
                shutil.rmtree(cfg / "outbox", ignore_errors=True)
                for leftover in (cfg / "arrears.db-wal", cfg / "arrears.db-shm"):
                    leftover.unlink(missing_ok=True)
                shutil.copyfile(filled, db)
            runs.append(cli(cfg, "run", *at, "--json"))
            runs[-1].out = str(len(list((cfg / "outbox").glob("*.eml"))))
        found["run"] = m = _median(runs)
        row("run (tick + executor, spool)", m, due, None, _statements(m, due) + f"; {m.out} notices spooled")
    return found


def bench_ratio(big: dict[str, Measured], small: dict[str, Measured], accounts: int, small_accounts: int) -> None:
    """The issue's scale ratio: CPU at ``accounts`` over CPU at ``small_accounts``, the same number due."""
    print(f"ratio {accounts:,}/{small_accounts:,} accounts at equal due count (CPU): "
          + ", ".join(f"{step} {big[step].cpu / small[step].cpu:.2f}" for step in ("plan", "run")), flush=True)


def bench_smtp(base: Path, notices: int, sink_name: str, *, before: Path | None = None, repeat: int = 1) -> None:
    """The floor and the agent against the same SMTP server, one after the other (``before``: then the agent
    with that checkout's code too, interleaved, ``repeat`` times each). Rates: ``N/s wall`` is the notices
    over the whole ``run`` command's wall time (start-up, the tick that queues the notices, composing,
    sending, recording); ``sending N/s`` over the executor's sending phase alone (while a batch was being
    sent: connections, the SMTP exchanges and the per-message commits; measured in the child, see
    bench/_worker.py)."""
    sink = make_sink(sink_name, base)
    header(f"notices: {notices:,} to a local SMTP server ({sink.name} on loopback)")
    sink.start()
    floor_msgs = base / "prerendered"
    worker("prerender", floor_msgs, notices)
    codes: list[tuple[str, dict[str, str]]] = [("", {})]
    if before is not None:
        codes = [("before  ", {"ARREARS_BENCH_CODE": str(before)}), ("after   ", {})]
    try:
        for rep in range(repeat):
            sink.reset()
            load = os.getloadavg()[0]
            floor = worker("smtp-floor", sink.host, sink.port, floor_msgs)
            floor_ids = sink.message_ids(notices, timeout=60) if notices else []
            row("floor: smtplib, prerendered, one connection", floor, notices, None,
                f"{notices / floor.wall:,.0f}/s wall; {sink.connections} connections; {len(floor_ids)} received; "
                f"load {load:.1f}")
            for label, env in codes:
                sink.reset()
                cfg = new_config(base, f"smtp-{rep}-{label.strip() or 'this'}", spool=False,
                                 smtp=(sink.host, sink.port))
                cli(cfg, "status", env=env)
                worker("fill", cfg / "arrears.db", notices, notices, NOW.isoformat())
                load = os.getloadavg()[0]
                m = cli(cfg, "run", "--at", NOW.isoformat(), "--json", env=env)
                ids = sink.message_ids(notices, timeout=60) if notices else []
                dup = len(ids) - len(set(ids))
                c = m.counters()
                sending = (f"sending {notices / (c['send_wall_ms'] / 1000):,.0f}/s ({c['send_wall_ms'] / 1000:.2f} s); "
                           if c.get("send_wall_ms") else "")
                row(f"{label}run: notices over SMTP", m, notices, floor,
                    f"{notices / m.wall:,.0f}/s wall, {notices / m.cpu:,.0f}/cpu-s; {sending}{sink.connections} "
                    f"connections; {len(ids)} received, {dup} duplicate Message-IDs; load {load:.1f}; "
                    f"{_statements(m, notices)}")
    finally:
        sink.close()


def bench_reports(base: Path, accounts: int, due: int) -> None:
    header(f"reports: {accounts:,} accounts, {due:,} in debt")
    cfg = new_config(base, f"reports-{accounts}")
    cli(cfg, "status")
    worker("fill", cfg / "arrears.db", accounts, due, NOW.isoformat())
    at = ("--at", NOW.isoformat())
    for name, args in (("forecast --days 60", ("forecast", "--days", "60", *at, "--json")),
                       ("debtors", ("debtors", *at, "--json")),
                       ("debtors --format csv", ("debtors", "--format", "csv", *at))):
        m = cli(cfg, *args)
        row(name, m, accounts, None, _statements(m, accounts))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--ledger", type=int, default=1_000_000, help="ledger lines to import")
    parser.add_argument("--due", type=int, default=1_000, help="accounts due in plan/run")
    parser.add_argument("--notices", type=int, default=10_000, help="notices sent over SMTP")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of: {' '.join(STEPS)}")
    parser.add_argument("--ratio-accounts", type=int, default=10_000,
                        help="ratio: the small database's accounts (as many due as in the large one)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="plan/run/ratio: repetitions (the median is shown); smtp: repetitions, each shown")
    parser.add_argument("--sink", default="smtp-sink", choices=SINKS,
                        help="smtp: the local SMTP server (Postfix's smtp-sink, or aiosmtpd in this process)")
    parser.add_argument("--before", type=Path, default=None,
                        help="smtp: also run the agent with this checkout's code (e.g. a worktree of main), "
                             "interleaved with this one's, against the same server")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="plan/run/ratio: work in DIR and keep it; the databases filled there by an earlier "
                             "run with the same --accounts and --due are used again instead of filling new ones")
    args = parser.parse_args()
    steps = set(args.only.split(","))
    if "ratio" in steps and args.due > args.ratio_accounts:
        parser.error("ratio: --due must be at most --ratio-accounts (the same number due in both databases)")
    unknown = steps - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    print(f"cores: {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    keep = args.keep is not None
    with contextlib.nullcontext(args.keep) if keep else tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        if steps & {"import", "ledger"}:
            bench_imports(base, args.accounts, args.ledger, steps)
        if steps & {"plan", "run", "ratio"}:
            big = bench_tick(base, args.accounts, args.due, steps, args.repeat, keep)
            if "ratio" in steps:
                small = bench_tick(base, args.ratio_accounts, args.due, steps, args.repeat, keep)
                bench_ratio(big, small, args.accounts, args.ratio_accounts)
        if "smtp" in steps:
            bench_smtp(base, args.notices, args.sink, before=args.before, repeat=args.repeat)
        if "reports" in steps:
            bench_reports(base, args.accounts, args.due)
    print(f"\nload average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
