"""One tick over HOSTS hosts with LATENCY seconds per host batch, done by 1, 2 and 4 agents on one
PostgreSQL database (a throwaway cluster: tests/servers/postgres.py).

The hosts are nginx hosts on this machine (``transport: local``), ACCOUNTS_PER_HOST sites each; every
account is due for suspension, so the tick runs one batch per host. The latency is the host's own
reload command (``sleep LATENCY``), which runs once per batch that changed a site, as nginx's reload
would. Each agent runs at most PARALLEL host batches at once (``defaults.parallel``). The agents' ticks
take the due accounts in chunks of TICK_CHUNK (``agent.tick_chunk``), so each one records some and
starts on their hosts while the others record more. The agents
(bench/_agent.py) start and register first; the time is the wall time from starting their tick at once
to the last one's end (one tick and one executor pass each, as ``arrears run``).

    python bench/agents_speed.py                       # 64 hosts, 100 ms, agents 1 2 4, parallel 4
    python bench/agents_speed.py --agents 1 2 --parallel 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _many import ROOT, build, cli, day, env, sql

sys.path.insert(0, str(ROOT))

from tests.servers.postgres import PgCluster


def prepare(cluster: PgCluster, work: Path, args: argparse.Namespace) -> tuple[Path, str]:
    cfg, _ = build(work, hosts=args.hosts, accounts=args.hosts * args.per_host, parallel=args.parallel,
                   reload=["sleep", str(args.latency)], lease_seconds=60, smtp_port=None,
                   tick_chunk=args.tick_chunk)
    db = cluster.url(cluster.create_database())
    cli(cfg, db, "accounts", "import", str(work / "accounts.jsonl"))
    cli(cfg, db, "ledger", "import", str(work / "ledger.jsonl"))
    # days 0 and 5 (the notices) beforehand: the tick measured is day 8, the suspension on every host
    cli(cfg, db, "run", "--at", day(0))
    cli(cfg, db, "run", "--at", day(5))
    return cfg, db


def timed(cfg: Path, db: str, agents: int, at: str, go: Path) -> tuple[float, list[float]]:
    """Start ``agents`` agents, let them all register, then start their tick at once: the wall time
    until the last one finished, and each one's own tick time."""
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "_agent.py"), str(cfg), db, f"agent-{i}", at,
                               str(go)], stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
             for i in range(agents)]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"agent did not start: exit {p.wait()}")
    started = time.monotonic()
    go.touch()
    own = []
    for p in procs:
        assert p.stdout is not None
        own.append(float(p.stdout.readline() or "nan"))
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"agent exit {p.returncode}")
    return time.monotonic() - started, own


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tick-chunk", type=int, default=16,
                        help="agent.tick_chunk: the due accounts the agents' ticks take in turn")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="arrears-speed-"))
    cluster = PgCluster(root).start()
    print(f"cores: {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}; {args.hosts} hosts, "
          f"{args.per_host} accounts each, {args.latency * 1000:.0f} ms per host batch, parallel {args.parallel} "
          "per agent")
    times: dict[int, float] = {}
    try:
        print("agents  tick s  speed-up  each agent's tick s  hosts per agent")
        for n in args.agents:
            cfg, db = prepare(cluster, root / f"n{n}", args)
            t, own = timed(cfg, db, n, day(8), root / f"go-{n}")
            suspended = int(sql(db, "SELECT count(*) FROM accounts WHERE state = 'suspended'")[0][0])
            if suspended != args.hosts * args.per_host:
                raise RuntimeError(f"{suspended} accounts suspended, want {args.hosts * args.per_host}")
            per_agent = sorted(int(c) for _, c in sql(
                db, "SELECT claimed_by, count(DISTINCT host) FROM jobs WHERE kind = 'host' GROUP BY claimed_by"))
            times[n] = t
            base = times.get(args.agents[0], t)
            print(f"{n:6d}  {t:6.2f}  {base / t:7.2f}x  {' '.join(f'{x:.2f}' for x in own):>19}  {per_agent}",
                  flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
