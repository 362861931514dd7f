"""Seeded kill trial: several agents on one PostgreSQL database, SIGKILLed at random moments and restarted.

Each trial builds a fresh database (on a throwaway cluster: tests/servers/postgres.py) with ACCOUNTS
accounts, one site each, on HOSTS nginx hosts on this machine (``transport: local``), and a real SMTP
server on loopback (aiosmtpd) that keeps every message. It replays four ticks (day 0: the outstanding
notice; day 5: the warning; day 8: suspension on the hosts and its notice; day 9: a third of the
accounts paid and are resumed). At each tick AGENTS ``arrears run`` processes start at once; while they
work, KILLS times at random moments one of them gets SIGKILL and a new one starts, under the same name
or (every other time) a new name, so that a dead agent's claims are taken over by the others when its
lease ends. After the tick, when some work is still claimed by a dead agent, one more agent runs once
its lease ended.

At the end of each trial it counts, and prints:

- measures taken more or less than once (stages taken, and their ``stage.*`` audit lines, per account
  and stage; episodes per account), against what the timeline must take;
- notices received twice beyond the in-flight window (each SIGKILL may cause one: the message it cut off
  between the server's 250 and the agent's record of it), and notices never received;
- ``arrears reconcile``: placements whose real state differs from the recorded one;
- jobs left claimed after their lease.

    python bench/agents_trial.py                     # 20 trials, seed 12
    python bench/agents_trial.py --trials 3 --seed 7 --accounts 60 --hosts 6
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from _many import ROOT, build, cli, day, sql, start_agent, stderr_of

sys.path.insert(0, str(ROOT))

from tests.servers.postgres import PgCluster
from tests.servers.smtp import SmtpServer

DAYS = (0, 5, 8, 9)


@dataclass
class Outcome:
    kills: int = 0
    restarts_refused: int = 0
    measures_wrong: list[str] = field(default_factory=list)
    duplicates: int = 0
    missing: int = 0
    reconcile_differences: int = 0
    reconcile_errors: int = 0
    left_claimed: int = 0
    sweeps: int = 0
    agent_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def beyond_window(self) -> int:
        return max(0, self.duplicates - self.kills)

    @property
    def clean(self) -> bool:
        return not (self.measures_wrong or self.beyond_window or self.missing or self.reconcile_differences
                    or self.reconcile_errors or self.left_claimed or self.agent_errors)


def run_tick(cfg: Path, db: str, at: str, rng: random.Random, agents: int, kills: int, window: float,
             lease: float, out: Outcome, serial: list[int]) -> None:
    """``agents`` agents work at ``at``; ``kills`` of them are SIGKILLed at random moments and replaced."""
    names = [f"agent-{i}" for i in range(agents)]
    procs = {n: start_agent(cfg, db, n, at) for n in names}
    started = time.monotonic()
    moments = sorted(rng.uniform(0.3, window) for _ in range(kills))
    while procs:
        now = time.monotonic() - started
        if moments and now >= moments[0]:
            moments.pop(0)
            victim = rng.choice(sorted(procs))
            p = procs.pop(victim)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                out.kills += 1
                serial[0] += 1
                name = victim if serial[0] % 2 else f"{victim.split('~')[0]}~{serial[0]}"
                procs[name] = start_agent(cfg, db, name, at)
            continue
        for name, p in list(procs.items()):
            code = p.poll()
            if code is None:
                continue
            err = stderr_of(p)
            procs.pop(name)
            if code == 2 and "already working on this database" in err:
                # its predecessor of that name is not gone yet (its session still closing): start again
                out.restarts_refused += 1
                time.sleep(0.2)
                procs[name] = start_agent(cfg, db, name, at)
            elif code != 0:
                out.agent_errors.append(f"{name} at {at}: exit {code}: {err.strip().splitlines()[-1:]}")
        time.sleep(0.02)
    # work still claimed by an agent that was killed under a name nobody took again: after its lease
    # the others take it over; one more agent does it now
    while int(sql(db, "SELECT count(*) FROM jobs WHERE status = 'claimed'")[0][0]):
        time.sleep(lease + 0.5)
        out.sweeps += 1
        swept = cli(cfg, db, "run", "--at", at, "--name", f"sweeper-{serial[0]}-{out.sweeps}", check=False)
        if swept.returncode != 0:
            out.agent_errors.append(f"sweeper at {at}: exit {swept.returncode}: {swept.stderr.strip()[-300:]}")
            break


def expected(accounts: list[str], payers: int) -> Counter[tuple[str, str]]:
    want: Counter[tuple[str, str]] = Counter()
    for n, acc in enumerate(accounts):
        for stage in ("outstanding_notice", "pre_suspension", "suspension"):
            want[(acc, stage)] = 1
        if n < payers:
            want[(acc, "resume")] = 1
    return want


def trial(cluster: PgCluster, smtp: SmtpServer, seed: int, args: argparse.Namespace) -> Outcome:
    rng = random.Random(seed)
    out = Outcome()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="arrears-trial-"))
    try:
        payers = args.accounts // 3
        cfg, accounts = build(work, hosts=args.hosts, accounts=args.accounts, parallel=4, reload=["true"],
                              lease_seconds=args.lease, smtp_port=smtp.port, payers=payers)
        db = cluster.url(cluster.create_database())
        cli(cfg, db, "accounts", "import", str(work / "accounts.jsonl"))
        cli(cfg, db, "ledger", "import", str(work / "ledger.jsonl"))
        smtp.reset()
        serial = [0]
        for d in DAYS:
            run_tick(cfg, db, day(d), rng, args.agents, args.kills, args.window, args.lease, out, serial)
        # measures: each exactly once
        want = expected(accounts, payers)
        taken = Counter({(a, s): c for a, s, c in sql(
            db, "SELECT account, stage, count(*) FROM stages_taken WHERE status = 'taken' GROUP BY account, stage")})
        audited = Counter({(a, s): c for a, s, c in sql(
            db, "SELECT account, details->>'stage', count(*) FROM audit WHERE action LIKE 'stage.%' "
                "GROUP BY account, details->>'stage'")})
        for what, got in (("stages taken", taken), ("audit", audited)):
            for key in sorted(set(want) | set(got)):
                if got[key] != want[key]:
                    out.measures_wrong.append(f"{what} {key}: {got[key]} (want {want[key]})")
        episodes = sql(db, "SELECT account, count(*) FROM episodes GROUP BY account HAVING count(*) <> 1")
        out.measures_wrong += [f"episodes of {a}: {c}" for a, c in episodes]
        # notices: by Message-ID, each once (one duplicate per SIGKILL at most: the message in flight)
        ids = Counter(m.message["Message-ID"] for m in smtp.messages)
        out.duplicates = sum(c - 1 for c in ids.values())
        out.missing = max(0, 3 * len(accounts) - len(ids))  # the notice, the warning, the suspension's notice
        # hosts against the records
        rec = cli(cfg, db, "reconcile", "--json", "--at", day(DAYS[-1]), check=False)
        info = json.loads(rec.stdout) if rec.stdout.strip().startswith("{") else {}
        out.reconcile_differences = len(info.get("differences", [])) if info else -1
        out.reconcile_errors = len(info.get("errors", [])) if info else 1
        out.left_claimed = int(sql(db, "SELECT count(*) FROM jobs WHERE status = 'claimed'")[0][0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.seconds = time.monotonic() - began
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--hosts", type=int, default=30)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per tick")
    parser.add_argument("--window", type=float, default=4.0, help="seconds after a tick's start kills fall in")
    parser.add_argument("--lease", type=int, default=3, help="agent.lease_seconds")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="arrears-trial-pg-"))
    cluster = PgCluster(root).start()
    smtp = SmtpServer(root).start()
    bad = 0
    totals: Counter[str] = Counter()
    print(f"{args.trials} trials, seed {args.seed}: {args.agents} agents, {args.accounts} accounts on {args.hosts} "
          f"hosts, {args.kills} SIGKILLs per tick over {len(DAYS)} ticks, lease {args.lease} s")
    print("trial  seed   kills  refused  sweeps  measures!=1  dup  beyond-window  missing  reconcile  "
          "claimed-after-lease  errors  seconds")
    try:
        for t in range(args.trials):
            seed = args.seed * 1000 + t
            o = trial(cluster, smtp, seed, args)
            bad += not o.clean
            totals.update(kills=o.kills, duplicates=o.duplicates, beyond=o.beyond_window, missing=o.missing,
                          wrong=len(o.measures_wrong), reconcile=o.reconcile_differences + o.reconcile_errors,
                          claimed=o.left_claimed, errors=len(o.agent_errors))
            print(f"{t:5d}  {seed:5d}  {o.kills:5d}  {o.restarts_refused:7d}  {o.sweeps:6d}  "
                  f"{len(o.measures_wrong):11d}  {o.duplicates:3d}  {o.beyond_window:13d}  {o.missing:7d}  "
                  f"{o.reconcile_differences:9d}  "
                  f"{o.left_claimed:19d}  {len(o.agent_errors):6d}  {o.seconds:7.1f}", flush=True)
            for line in (o.measures_wrong[:5] + o.agent_errors[:5]):
                print(f"       {line}")
    finally:
        smtp.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"total: {totals['kills']} SIGKILLs; measures not taken exactly once: {totals['wrong']}; notices twice: "
          f"{totals['duplicates']} ({totals['beyond']} beyond the in-flight window); notices missing: "
          f"{totals['missing']}; reconcile differences: {totals['reconcile']}; jobs left claimed after their "
          f"lease: {totals['claimed']}; agent errors: {totals['errors']}")
    print(f"{args.trials - bad} of {args.trials} trials clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
