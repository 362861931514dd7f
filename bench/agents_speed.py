"""One tick over HOSTS hosts with LATENCY seconds per host batch, done by 1, 2 and 4 agents on one
PostgreSQL database (a throwaway cluster: tests/servers/postgres.py).

The hosts are nginx hosts on this machine (``transport: local``), ACCOUNTS_PER_HOST sites each; every
account is due for suspension, so the tick runs one batch per host. The latency is the host's own
reload command (``sleep LATENCY``), which runs once per batch that changed a site, as nginx's reload
would. Each agent runs at most PARALLEL host batches at once (``defaults.parallel``). The time is the
wall time from starting the agents (``arrears run`` processes) to the last one's exit; ``startup`` is
one agent's time for a tick with nothing to do (process start, imports, the database), paid by every
configuration once.

    python bench/agents_speed.py                       # 64 hosts, 100 ms, agents 1 2 4, parallel 4
    python bench/agents_speed.py --agents 1 2 --parallel 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _many import ROOT, build, cli, day, sql, start_agent, stderr_of

sys.path.insert(0, str(ROOT))

from tests.servers.postgres import PgCluster


def prepare(cluster: PgCluster, work: Path, args: argparse.Namespace) -> tuple[Path, str]:
    cfg, _ = build(work, hosts=args.hosts, accounts=args.hosts * args.per_host, parallel=args.parallel,
                   reload=["sleep", str(args.latency)], lease_seconds=60, smtp_port=None)
    db = cluster.url(cluster.create_database())
    cli(cfg, db, "accounts", "import", str(work / "accounts.jsonl"))
    cli(cfg, db, "ledger", "import", str(work / "ledger.jsonl"))
    # days 0 and 5 (the notices) beforehand: the tick measured is day 8, the suspension on every host
    cli(cfg, db, "run", "--at", day(0))
    cli(cfg, db, "run", "--at", day(5))
    return cfg, db


def timed(cfg: Path, db: str, agents: int, at: str) -> float:
    started = time.monotonic()
    procs = [start_agent(cfg, db, f"agent-{i}", at) for i in range(agents)]
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"agent exit {p.returncode}: {stderr_of(p)[-500:]}")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="arrears-speed-"))
    cluster = PgCluster(root).start()
    print(f"cores: {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}; {args.hosts} hosts, "
          f"{args.per_host} accounts each, {args.latency * 1000:.0f} ms per host batch, parallel {args.parallel} "
          "per agent")
    times: dict[int, float] = {}
    try:
        idle_cfg, idle_db = prepare(cluster, root / "idle", argparse.Namespace(**{**vars(args), "hosts": 1}))
        startup = timed(idle_cfg, idle_db, 1, day(5, 11))
        print(f"startup (one agent, nothing to do): {startup:.2f} s")
        print("agents  tick s  speed-up  speed-up past startup  hosts per agent")
        for n in args.agents:
            cfg, db = prepare(cluster, root / f"n{n}", args)
            t = timed(cfg, db, n, day(8))
            suspended = int(sql(db, "SELECT count(*) FROM accounts WHERE state = 'suspended'")[0][0])
            if suspended != args.hosts * args.per_host:
                raise RuntimeError(f"{suspended} accounts suspended, want {args.hosts * args.per_host}")
            per_agent = sorted(int(c) for _, c in sql(
                db, "SELECT claimed_by, count(DISTINCT host) FROM jobs WHERE kind = 'host' GROUP BY claimed_by"))
            times[n] = t
            base = times.get(args.agents[0], t)
            print(f"{n:6d}  {t:6.2f}  {base / t:7.2f}x  {max(base - startup, 1e-9) / max(t - startup, 1e-9):20.2f}x  "
                  f"{per_agent}", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
