"""The demo: a small fleet under one folder, driven by the real agent through the local transport.

``arrears demo DIR`` writes a configuration (policy.yaml, inventory.yaml with two ``transport: local``
hosts), lays out the hosts' files (nginx vhosts with their include hook, maildirs, home dirs), imports
twelve accounts, then replays 60 days: each simulated morning billing's new ledger lines are imported
and one tick runs with ``--at`` that day. Sites really get their suspended snippet, mailboxes their
flags, homes are archived and removed. The same configuration drives a real fleet once
``inventory.yaml`` names real hosts with ``transport: ssh``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from agent.service import Arrears
    from agent.service.running import Working

__all__ = [
    "DEMO_START",
    "DemoAccount",
    "DemoError",
    "account_line",
    "billing_day",
    "build_demo",
    "demo_accounts",
    "demo_inventory",
    "demo_policy",
    "final_states",
    "host_dirs",
    "import_cast",
    "lay_out_host_files",
    "replay_day",
]

DEMO_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # 07:00 in Amsterdam; the clocks change on day 27
MARKER = ".arrears-demo"


class DemoError(Exception):
    pass


@dataclass(frozen=True)
class DemoAccount:
    """One demo customer: who it is and what billing sends for it, as (day, amount, kind, method)."""

    id: str
    username: str
    story: str
    ledger: tuple[tuple[int, str, str, str | None], ...]
    plan: str = "basic"
    reseller: str | None = None
    trial_days: int | None = None
    has_billing_profile: bool = True
    admin: tuple[tuple[int, str, str], ...] = field(default=())  # (day, "suspend"|"resume", reason)

    @property
    def site(self) -> str:
        return f"{self.username}.example"

    @property
    def mailbox(self) -> str:
        return f"info@{self.site}"


def demo_accounts() -> list[DemoAccount]:
    """The cast: a debtor who never pays, card and cheque payers, a trial, an admin hold, good payers."""
    monthly = ((0, "-30.00", "charge", None), (0, "30.00", "payment", "card"),
               (30, "-30.00", "charge", None), (30, "30.00", "payment", "card"))
    cast = [
        DemoAccount("acme-01", "acme", "never pays: noticed, warned, suspended, warned again, deleted",
                    ((0, "-49.90", "charge", None),)),
        DemoAccount("bravo-02", "bravo", "pays by card after suspension: resumed at once",
                    ((1, "-30.00", "charge", None), (11, "30.00", "payment", "card"))),
        DemoAccount("cheque-03", "charlie", "pays by cheque after suspension: an admin resumes it",
                    ((2, "-75.00", "charge", None), (13, "75.00", "payment", "check")),
                    admin=((14, "resume", "cheque credited"),)),
        DemoAccount("delta-04", "delta", "pays late, before suspension: episode ends quietly",
                    ((3, "-20.00", "charge", None), (6, "10.00", "payment", "card"), (7, "10.00", "payment", "card"))),
        DemoAccount("echo-05", "echo", "trial ends without a billing profile: suspended",
                    (), trial_days=6, has_billing_profile=False),
        DemoAccount("foxtrot-06", "foxtrot", "within its reseller's credit; an admin suspends it for abuse",
                    ((4, "-15.00", "charge", None),), reseller="visp-a",
                    admin=((20, "suspend", "spam complaint"), (25, "resume", "spam stopped"))),
    ]
    for n, name in enumerate(["golf", "hotel", "india", "juliet", "kilo", "lima"], start=7):
        cast.append(DemoAccount(f"{name}-{n:02d}", name, "pays every month on time", monthly))
    return cast


def host_dirs(folder: Path) -> dict[str, Path]:
    """The root folder of each demo host (``web1``, ``mail1``) under ``folder``."""
    return {"web1": folder / "hosts" / "web1", "mail1": folder / "hosts" / "mail1"}


def demo_inventory(folder: Path, *, web_reload: Sequence[str] = ("true",)) -> dict[str, Any]:
    """The inventory of the demo hosts under ``folder``; ``web_reload`` is web1's nginx reload command."""
    web, mail = (str(p) for p in host_dirs(folder).values())
    return {
        "defaults": {"parallel": 4, "state_dir": f"{folder}/hosts/agent-state"},
        "hosts": {
            "web1": {"transport": "local", "services": {
                "web": {"backend": "nginx", "hook_dir": f"{web}/etc/nginx/arrears.d",
                        "vhost_dir": f"{web}/etc/nginx/sites-available",
                        "enabled_dir": f"{web}/etc/nginx/sites-enabled",
                        "state_dir": f"{web}/var/lib/arrears", "archive_dir": f"{web}/var/backups/arrears",
                        "suspended_url": "https://billing.example.net/suspended",
                        # the demo has no nginx: the config test and reload are no-ops on this machine
                        "config_test": ["true"], "reload": list(web_reload)},
                "home": {"backend": "archive", "roots": [f"{web}/home"],
                         "archive_dir": f"{web}/var/backups/arrears", "retention_days": 90,
                         "state_dir": f"{web}/var/lib/arrears"},
            }},
            "mail1": {"transport": "local", "services": {
                "mail": {"backend": "dovecot-postfix", "deny_dir": f"{mail}/etc/dovecot/arrears",
                         "password_lock_file": f"{mail}/etc/dovecot/arrears/password-lock",
                         "bounce_map": f"{mail}/etc/postfix/arrears/bounce",
                         "norelay_map": f"{mail}/etc/postfix/arrears/norelay",
                         "imap_ports": [143, 993], "pop3_ports": [110, 995], "webmail_ports": [10143],
                         "postmap_command": "true", "postfix_reload_command": "true",
                         "dovecot_reload_command": "true", "kick_command": "true",
                         "state_dir": f"{mail}/var/lib/arrears",
                         "maildir_template": f"{mail}/var/mail/vhosts/{{domain}}/{{local}}",
                         "mail_roots": [f"{mail}/var/mail/vhosts"],
                         "archive_dir": f"{mail}/var/backups/arrears"},
            }},
        },
    }


def demo_policy() -> dict[str, Any]:
    """The sample policy, its notices written to the ``outbox`` folder."""
    sample = Path(__file__).parent / "sample" / "policy.yaml"
    data: dict[str, Any] = yaml.safe_load(sample.read_text(encoding="utf-8"))
    data["notices"]["spool_dir"] = "outbox"
    return data


def lay_out_host_files(folder: Path, cast: list[DemoAccount]) -> None:
    """Create the demo hosts' files for ``cast``: vhosts with their include hook, docroots, homes, maildirs."""
    web, mail = host_dirs(folder).values()
    for sub in ("etc/nginx/arrears.d", "etc/nginx/sites-available", "etc/nginx/sites-enabled", "home", "srv",
                "var/lib/arrears", "var/backups/arrears"):
        (web / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("etc/dovecot/arrears", "etc/postfix/arrears", "var/mail/vhosts", "var/lib/arrears",
                "var/backups/arrears"):
        (mail / sub).mkdir(parents=True, exist_ok=True)
    for acc in cast:
        docroot = web / "srv" / acc.site
        docroot.mkdir(parents=True, exist_ok=True)
        (docroot / "index.html").write_text(f"<h1>Welcome to {acc.site}</h1>\n")
        vhost = web / "etc/nginx/sites-available" / acc.site
        vhost.write_text(
            "server {\n"
            "    listen 80;\n"
            f"    server_name {acc.site} www.{acc.site};\n"
            f"    include {web}/etc/nginx/arrears.d/{acc.site}.con[f];\n"
            f"    root {docroot};\n"
            "}\n"
        )
        link = web / "etc/nginx/sites-enabled" / acc.site
        if not link.is_symlink():
            link.symlink_to(vhost)
        home = web / "home" / acc.username
        (home / "public_html").mkdir(parents=True, exist_ok=True)
        (home / "public_html" / "index.php").write_text(f"<?php echo 'hello from {acc.username}';\n")
        (home / ".profile").write_text("umask 022\n")
        maildir = mail / "var/mail/vhosts" / acc.site / "info"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        (maildir / "new" / "1772431200.M1P1.mail1").write_text(
            f"From: billing@example.net\nTo: {acc.mailbox}\nSubject: welcome\n\nWelcome aboard.\n")


def account_line(folder: Path, acc: DemoAccount) -> dict[str, Any]:
    """The accounts-import line of ``acc``: its site and home on web1, its mailbox on mail1."""
    trial_ends = DEMO_START + timedelta(days=acc.trial_days) if acc.trial_days is not None else None
    return {
        "id": acc.id, "username": acc.username, "billing_email": f"billing@{acc.site}", "plan": acc.plan,
        "reseller": acc.reseller, "currency": "USD", "has_billing_profile": acc.has_billing_profile,
        "trial_ends_at": trial_ends.isoformat().replace("+00:00", "Z") if trial_ends else None,
        "resources": {
            "web": {"host": "web1", "sites": [acc.site]},
            "mail": {"host": "mail1", "mailboxes": [acc.mailbox]},
            "home": {"host": "web1", "path": str(host_dirs(folder)["web1"] / "home" / acc.username)},
        },
    }


def billing_day(day: int, cast: list[DemoAccount]) -> list[dict[str, Any]]:
    """The ledger lines billing sends on ``day`` (an hour before that day's tick)."""
    at = (DEMO_START + timedelta(days=day, hours=-1)).isoformat().replace("+00:00", "Z")
    return [{"account": acc.id, "at": at, "amount": amount, "kind": kind, "method": method,
             "ref": f"demo-{acc.id}-{day}-{n}"}
            for acc in cast for n, (d, amount, kind, method) in enumerate(acc.ledger) if d == day]


def build_demo(folder: Path, *, replace: bool = False) -> list[DemoAccount]:
    """Write the demo's configuration and host files under ``folder``; returns the cast."""
    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise DemoError(f"{folder} exists and is not a demo folder; choose an empty or new folder")
        if not replace:
            raise DemoError(f"{folder} already holds a demo; pass --replace to build it anew")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `arrears demo`; `arrears demo --replace` may delete this folder\n")
    cast = demo_accounts()
    (folder / "policy.yaml").write_text(yaml.safe_dump(demo_policy(), sort_keys=False))
    (folder / "inventory.yaml").write_text(
        "# The demo fleet: two hosts on this machine (transport: local). For a real fleet give each host\n"
        "# `transport: ssh`, its address, key and known_hosts, and its real paths (see the sample inventory).\n"
        + yaml.safe_dump(demo_inventory(folder), sort_keys=False))
    lay_out_host_files(folder, cast)
    billing = folder / "billing"
    billing.mkdir()
    (billing / "accounts.jsonl").write_text("".join(json.dumps(account_line(folder, a)) + "\n" for a in cast))
    return cast


# --- the replay -----------------------------------------------------------------------------------


def import_cast(svc: Arrears, folder: Path) -> None:
    """Billing's accounts of the demo, as of :data:`DEMO_START`."""
    from agent.imports import import_accounts
    from connectors.inventory import load_inventory_file

    with svc.store.session() as s:
        import_accounts(s, folder / "billing" / "accounts.jsonl", DEMO_START, svc.policy,
                        load_inventory_file(folder / "inventory.yaml"))


def replay_day(svc: Arrears, folder: Path, cast: list[DemoAccount], day: int, now: datetime,
               agent: Working) -> dict[str, Any]:
    """Day ``day`` of the demo at ``now``: billing's lines of the day, the admins' actions, then one run
    by ``agent`` (as :meth:`Arrears.lock` yields it). Returns the run's summary (as ``arrears run --json``)."""
    from agent import actions
    from agent.imports import import_ledger

    lines = billing_day(day, cast)
    if lines:
        path = folder / "billing" / f"ledger-day{day:02d}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        with svc.store.session() as s:
            import_ledger(s, path, now)
    for acc in cast:
        for when, what, reason in acc.admin:
            if when == day:
                with svc.store.session() as s:
                    if what == "suspend":
                        actions.suspend(s, acc.id, actor="admin", reason=reason, now=now,
                                        notice_template="admin_suspended")
                    else:
                        actions.resume(s, acc.id, svc.policy, actor="admin", reason=reason, now=now)
    return svc.run(now=now, agent=agent).to_json()


def final_states(svc: Arrears) -> dict[str, str]:
    """Each account's recorded state after the replay."""
    return {a.id: a.state for a in svc.accounts()}
