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

Beside the wall time it prints the CPU the tick used, in three parts: the agents' own (each agent's and
their sum), the host batches' shells (on a real fleet this runs on the hosts, not beside the agents)
and PostgreSQL's (the cluster's server processes). ``--repeat N`` runs every agent count N times, in
turn, and ends with the medians.

    python bench/agents_speed.py                       # 64 hosts, 100 ms, agents 1 2 4, parallel 4
    python bench/agents_speed.py --agents 1 2 --parallel 8
    python bench/agents_speed.py --repeat 3            # three runs of each, and the medians
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def server_cpu(cluster: PgCluster) -> float:
    """CPU seconds used so far by the cluster's server processes (the postmaster, its live children and
    the children it has reaped)."""
    master = int((cluster.data / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command: state, ppid, ...
        if int(pid) == master or int(fields[1]) == master:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    wall: float  # from the start of the agents' ticks to the last one's end
    ticks: list[float]  # each agent's own tick
    cpu: list[float]  # each agent's own CPU
    hosts_cpu: float  # the host batches' shells, all agents
    server_cpu: float  # PostgreSQL
    load: float  # the load average (1 min) at the start


def timed(cluster: PgCluster, cfg: Path, db: str, agents: int, at: str, go: Path) -> Run:
    """Start ``agents`` agents, let them all register, then start their tick at once."""
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "_agent.py"), str(cfg), db, f"agent-{i}", at,
                               str(go)], stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
             for i in range(agents)]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"agent did not start: exit {p.wait()}")
    load = os.getloadavg()[0]
    server = server_cpu(cluster)
    started = time.monotonic()
    go.touch()
    own = []
    for p in procs:
        assert p.stdout is not None
        own.append([float(x) for x in (p.stdout.readline().split() or ["nan"] * 3)])
    wall = time.monotonic() - started
    for p in procs:
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"agent exit {p.returncode}")
    return Run(wall, [t for t, _, _ in own], [c for _, c, _ in own], sum(h for _, _, h in own),
               server_cpu(cluster) - server, load)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tick-chunk", type=int, default=16,
                        help="agent.tick_chunk: the due accounts the agents' ticks take in turn")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each agent count, in turn")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="arrears-speed-"))
    cluster = PgCluster(root).start()
    print(f"cores: {os.cpu_count()}, load average (1 min) {os.getloadavg()[0]:.2f}; {args.hosts} hosts, "
          f"{args.per_host} accounts each, {args.latency * 1000:.0f} ms per host batch, parallel {args.parallel} "
          "per agent")
    runs: dict[int, list[Run]] = {n: [] for n in args.agents}
    try:
        print("agents  tick s  speed-up  load  CPU s: agents  hosts  PostgreSQL  each agent's CPU s    "
              "each agent's tick s      hosts per agent")
        for rep in range(args.repeat):
            for n in args.agents:
                cfg, db = prepare(cluster, root / f"r{rep}-n{n}", args)
                run = timed(cluster, cfg, db, n, day(8), root / f"go-{rep}-{n}")
                suspended = int(sql(db, "SELECT count(*) FROM accounts WHERE state = 'suspended'")[0][0])
                if suspended != args.hosts * args.per_host:
                    raise RuntimeError(f"{suspended} accounts suspended, want {args.hosts * args.per_host}")
                per_agent = sorted(int(c) for _, c in sql(
                    db, "SELECT claimed_by, count(DISTINCT host) FROM jobs WHERE kind = 'host' GROUP BY claimed_by"))
                runs[n].append(run)
                base = runs[args.agents[0]][-1].wall
                print(f"{n:6d}  {run.wall:6.2f}  {base / run.wall:7.2f}x  {run.load:4.1f}  {sum(run.cpu):13.2f}  "
                      f"{run.hosts_cpu:5.2f}  {run.server_cpu:10.2f}  {' '.join(f'{x:.2f}' for x in run.cpu):<19}  "
                      f"{' '.join(f'{x:.2f}' for x in run.ticks):<23}  {per_agent}", flush=True)
        if args.repeat > 1:
            print(f"medians of {args.repeat} runs")
            base = statistics.median(r.wall for r in runs[args.agents[0]])
            for n in args.agents:
                wall = statistics.median(r.wall for r in runs[n])
                print(f"{n:6d}  {wall:6.2f}  {base / wall:7.2f}x  {statistics.median(r.load for r in runs[n]):4.1f}  "
                      f"{statistics.median(sum(r.cpu) for r in runs[n]):13.2f}  "
                      f"{statistics.median(r.hosts_cpu for r in runs[n]):5.2f}  "
                      f"{statistics.median(r.server_cpu for r in runs[n]):10.2f}")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
