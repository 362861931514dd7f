"""What bench/agents_trial.py and bench/agents_speed.py share: a fleet of nginx hosts on this machine
(``transport: local``) with a few sites each, the accounts and ledger that put them in debt, a throwaway
PostgreSQL cluster (tests/servers/postgres.py: ``initdb`` under a temporary folder, never the system
service), and agents started as ``arrears run`` child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START = datetime(2026, 3, 2, 10, tzinfo=UTC)  # day 0, a Monday


def day(n: float, hour: int = 10) -> str:
    return (START.replace(hour=hour) + timedelta(days=n)).isoformat()


def policy(*, lease_seconds: int, smtp_port: int | None, tick_chunk: int = 500) -> dict[str, Any]:
    """Notice at once, a warning after 5 days, suspension 3 days later; payment resumes."""
    notices: dict[str, Any] = {"from_addr": "billing@example.net", "company": "Example Hosting",
                               "payment_url": "https://billing.example.net/pay/{account_id}"}
    if smtp_port is None:
        notices["spool_dir"] = "outbox"
    else:
        notices["smtp"] = {"host": "127.0.0.1", "port": smtp_port}
    return {
        "timezone": "UTC",
        "defaults": {
            "currency": "USD", "credit_limit": 0,
            "triggers": {"over_limit": True, "subzero_period": -1, "max_delay": None, "unpaid_total_over": None,
                         "invoice_expiration": None, "stop_grace": None, "trial": True},
            "stages": [
                {"name": "outstanding_notice", "action": "notice", "after": None, "template": "outstanding"},
                {"name": "pre_suspension", "action": "notice", "after": 5, "template": "pre_suspension"},
                {"name": "suspension", "action": "suspend", "after": 3, "template": "suspended"},
            ],
            "resume_on_payment": True, "pay_with_negative": False,
        },
        "notices": notices,
        "agent": {"lease_seconds": lease_seconds, "backoff_seconds": 1, "tick_chunk": tick_chunk},
    }


def host_root(folder: Path, host: str) -> Path:
    return folder / "hosts" / host


def inventory(folder: Path, hosts: Sequence[str], *, parallel: int, reload: Sequence[str]) -> dict[str, Any]:
    """``hosts`` as nginx hosts under ``folder``, each with its own arrears state folder (its batch lock and
    pending handlers, as on a host of its own); ``reload`` runs once per host batch that changed a site."""
    out: dict[str, Any] = {}
    for h in hosts:
        r = host_root(folder, h)
        out[h] = {"transport": "local", "state_dir": f"{r}/var/lib/arrears", "services": {"web": {
            "backend": "nginx", "hook_dir": f"{r}/etc/nginx/arrears.d", "vhost_dir": f"{r}/etc/nginx/sites-available",
            "enabled_dir": f"{r}/etc/nginx/sites-enabled", "state_dir": f"{r}/var/lib/arrears",
            "archive_dir": f"{r}/var/backups/arrears", "suspended_url": "https://billing.example.net/suspended",
            "config_test": ["true"], "reload": list(reload)}}}
    return {"defaults": {"parallel": parallel}, "hosts": out}


def build(folder: Path, *, hosts: int, accounts: int, parallel: int, reload: Sequence[str], lease_seconds: int,
          smtp_port: int | None, payers: int = 0, tick_chunk: int = 500) -> tuple[Path, list[str]]:
    """Write the configuration, the hosts' files, accounts.jsonl and ledger.jsonl under ``folder``; returns
    the configuration folder and the account ids. ``payers``: the first accounts pay back on day 9."""
    names = [f"web-{i:02d}" for i in range(hosts)]
    cfg = folder / "cfg"
    cfg.mkdir(parents=True)
    (cfg / "policy.yaml").write_text(yaml.safe_dump(policy(lease_seconds=lease_seconds, smtp_port=smtp_port,
                                                                      tick_chunk=tick_chunk)))
    (cfg / "inventory.yaml").write_text(yaml.safe_dump(inventory(folder, names, parallel=parallel, reload=reload)))
    ids: list[str] = []
    lines, ledger = [], []
    for n in range(accounts):
        acc, host = f"acc-{n:04d}", names[n % hosts]
        site = f"site{n:04d}.example"
        r = host_root(folder, host)
        for sub in ("etc/nginx/arrears.d", "etc/nginx/sites-available", "etc/nginx/sites-enabled", "srv",
                    "var/lib/arrears", "var/backups/arrears"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        (r / "srv" / site).mkdir()
        vhost = r / "etc/nginx/sites-available" / site
        vhost.write_text(f"server {{\n    listen 80;\n    server_name {site};\n"
                         f"    include {r}/etc/nginx/arrears.d/{site}.con[f];\n    root {r}/srv/{site};\n}}\n")
        (r / "etc/nginx/sites-enabled" / site).symlink_to(vhost)
        ids.append(acc)
        lines.append({"id": acc, "username": f"u{n:04d}", "billing_email": f"billing@{site}", "currency": "USD",
                      "resources": {"web": {"host": host, "sites": [site]}}})
        ledger.append({"account": acc, "at": day(0, 8), "amount": "-50.00", "kind": "charge", "ref": f"c-{acc}"})
        if n < payers:
            ledger.append({"account": acc, "at": day(9, 8), "amount": "50.00", "kind": "payment", "method": "card",
                           "ref": f"p-{acc}"})
    (folder / "accounts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in ledger))
    return cfg, ids


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")}


def cli(cfg: Path, db: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(cfg), "--db", db, *args],
                          capture_output=True, text=True, env=env(), cwd=ROOT, timeout=600)
    if check and done.returncode != 0:
        raise RuntimeError(f"arrears {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def start_agent(cfg: Path, db: str, name: str, at: str) -> subprocess.Popen[str]:
    """``arrears run --at AT --name NAME`` in the background; what it prints to stderr is in ``p.stderr``
    (a file, read it after the exit), stdout is dropped."""
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the process; closed with it)
    p = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(cfg), "--db", db, "run",
                          "--at", at, "--name", name],
                         stdout=subprocess.DEVNULL, stderr=err, text=True, env=env(), cwd=ROOT)
    p.stderr = err  # a file, never a pipe: an agent never blocks on what it prints
    return p


def stderr_of(p: subprocess.Popen[str]) -> str:
    """What the finished agent ``p`` printed to stderr."""
    assert p.stderr is not None
    p.stderr.seek(0)
    return p.stderr.read()


def sql(db: str, statement: str) -> list[tuple[Any, ...]]:
    from tests.backends import query

    return query(db, statement)
