"""Time suspending many accounts on one host over SSH: one batch script against the per-account ways.

    python bench/batch_ssh.py [--accounts 200] [--repeat 1] [--conn-accounts 20]

Starts its own sshd on loopback (tests/servers/sshd.py; in a private network namespace when run as
root) and suspends ``--accounts`` accounts, each with one nginx site and one dovecot+postfix mailbox,
using the real connectors' operations and handlers. Their files live in a temporary folder; the config
test, reload, postmap and kick commands are ``true``, so no nginx, dovecot or postfix is needed. Every
account's two operations and both services' handlers are built once, before any timing.

Variants, timed side by side (median of ``--repeat`` runs, each from the same unsuspended state):

(a)        one SshTransport, one batch script for all accounts, handlers once (what arrears does);
(a) again  the same batch applied a second time on the still-open connection (nothing to change);
(b)        one SSH channel per account on one open connection (each account its own batch, its own
           handler runs);
(c)        a new SSH connection per account (a fresh SshTransport each time: a per-account ``ssh`` loop);
           run on the first ``--conn-accounts`` accounts only and extrapolated linearly to all of them;
(d)        the batch script of (a) run locally with ``sh -s`` in the session's C locale (the floor).

Connections are counted from the sshd's log (``Accepted publickey``). Every run is checked: every
operation succeeded and changed the host (none changed on the second application). Two components are
timed on their own to explain the gaps: opening one connection, and one empty command on an open
connection (which includes the login user's shell start-up files).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from connectors.base import BatchResult, Handler, Operation, build_script, run_batch
from connectors.local import LocalTransport
from connectors.mail.dovecot_postfix import DovecotPostfixConnector, DovecotPostfixSettings
from connectors.ssh import SshTransport
from connectors.web.nginx import NginxConnector, NginxSettings

if TYPE_CHECKING:
    from tests.servers.sshd import SshdServer

__all__ = ["BenchHost", "Variant", "main"]

REPO = Path(__file__).resolve().parents[1]
SUSPENDED_URL = "http://billing.example/suspended.html"


# -- the host's files -------------------------------------------------------------------------------

@dataclass
class BenchHost:
    """N accounts (one nginx site and one mailbox each) whose files live below ``root``."""

    root: Path
    accounts: list[str]
    ops_of: dict[str, list[Operation]]
    handlers: list[Handler]
    state_dir: str

    @property
    def all_ops(self) -> list[Operation]:
        return [op for account in self.accounts for op in self.ops_of[account]]

    def reset(self) -> None:
        """Back to nothing suspended: drop snippets, deny lists, maps and saved state (vhosts stay)."""
        for sub in ("hooks", "state", "dovecot", "postfix"):
            shutil.rmtree(self.root / sub, ignore_errors=True)


def make_host(root: Path, count: int) -> BenchHost:
    """Lay out Debian-like nginx vhosts carrying the arrears hook, and the two connectors' settings."""
    for sub in ("sites-available", "sites-enabled", "mail", "archive"):
        (root / sub).mkdir(parents=True)
    state = str(root / "state")
    web = NginxConnector(NginxSettings(
        hook_dir=str(root / "hooks"),
        vhost_dir=str(root / "sites-available"),
        enabled_dir=str(root / "sites-enabled"),
        vhost_name="{site}",
        state_dir=state,
        archive_dir=str(root / "archive"),
        suspended_url=SUSPENDED_URL,
        config_test=["true"],
        reload=["true"],
    ), "bench")
    mail = DovecotPostfixConnector(DovecotPostfixSettings(
        deny_dir=str(root / "dovecot" / "arrears"),
        imap_ports=[143, 993],
        pop3_ports=[110, 995],
        webmail_ports=[10143],
        password_lock_file=str(root / "dovecot" / "arrears" / "password-lock"),
        bounce_map=str(root / "postfix" / "bounce"),
        norelay_map=str(root / "postfix" / "norelay"),
        postmap_command="true",
        postfix_reload_command="true",
        dovecot_reload_command="true",
        kick_command="true",
        state_dir=state,
        maildir_template=str(root / "mail") + "/{domain}/{local}",
        mail_roots=[str(root / "mail")],
        archive_dir=str(root / "archive"),
    ), "bench")
    accounts: list[str] = []
    ops_of: dict[str, list[Operation]] = {}
    for i in range(count):
        account, site = f"acct-{i:05d}", f"site-{i:05d}.bench.test"
        vhost = root / "sites-available" / site
        vhost.write_text(
            "server {\n"
            f"    include {root / 'hooks'}/{site}.con[f];\n"
            "    listen 80;\n"
            f"    server_name {site};\n"
            f"    root /srv/www/{site};\n"
            "}\n"
        )
        (root / "sites-enabled" / site).symlink_to(vhost)
        accounts.append(account)
        ops_of[account] = [
            *web.operations("suspend", account, {"sites": [site]}),
            *mail.operations("suspend", account, {"mailboxes": [f"info@{site}"]}),
        ]
    return BenchHost(root, accounts, ops_of, [*web.handlers(), *mail.handlers()], state)


# -- checking what a run did ------------------------------------------------------------------------

def check(batches: Sequence[BatchResult], ops: Sequence[Operation], *, changes: bool) -> None:
    """Every operation succeeded and changed the host (``changes``) or changed nothing (not ``changes``)."""
    results = {k: r for b in batches for k, r in b.results.items()}
    handlers = [h for b in batches for h in b.handlers.values()]
    failed = [f"{r.id}: {r.error or r.stderr.strip()}" for r in results.values() if not r.ok]
    failed += [f"{h.id}: {h.error or h.stderr.strip()}" for h in handlers if not h.ok]
    if failed or len(results) != len(ops):
        raise SystemExit(f"bench run went wrong ({len(results)} results for {len(ops)} operations): {failed[:3]}")
    changed = sum(r.changed for r in results.values())
    if changes and changed != len(ops):
        raise SystemExit(f"expected every operation to change the host, {changed} of {len(ops)} did")
    if not changes and (changed or handlers):
        raise SystemExit(f"the second application changed {changed} operations and ran {len(handlers)} handlers")


# -- the variants -----------------------------------------------------------------------------------

@dataclass
class Variant:
    key: str
    label: str
    accounts: int  # accounts actually run
    times: list[float] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def timed(sshd: SshdServer, variant: Variant, work: Callable[[], None]) -> None:
    before = sshd.connections()
    start = time.perf_counter()
    work()
    variant.times.append(time.perf_counter() - start)
    variant.connections.append(sshd.connections() - before)
    print(f"  {variant.label}: {variant.times[-1]:.2f} s", file=sys.stderr, flush=True)


def run_once(sshd: SshdServer, host: BenchHost, v: dict[str, Variant], conn_accounts: int) -> None:
    ops = host.all_ops
    handlers = host.handlers

    # (a) and (a) again: one connection, one script for every account
    host.reset()
    transport = SshTransport("bench", sshd.settings())

    def batched() -> None:
        transport.connect()
        check([run_batch(transport, ops, handlers, state_dir=host.state_dir)], ops, changes=True)

    def again() -> None:
        check([run_batch(transport, ops, handlers, state_dir=host.state_dir)], ops, changes=False)

    try:
        timed(sshd, v["a"], batched)
        timed(sshd, v["a2"], again)
    finally:
        transport.close()

    # (b) one channel per account on one connection
    host.reset()
    transport = SshTransport("bench", sshd.settings())

    def per_channel() -> None:
        transport.connect()
        batches = [run_batch(transport, host.ops_of[a], handlers, state_dir=host.state_dir) for a in host.accounts]
        check(batches, ops, changes=True)

    try:
        timed(sshd, v["b"], per_channel)
    finally:
        transport.close()

    # (c) a new connection per account (the first conn_accounts accounts)
    host.reset()
    some = host.accounts[:conn_accounts]
    some_ops = [op for a in some for op in host.ops_of[a]]

    def per_connection() -> None:
        batches = []
        for account in some:
            fresh = SshTransport("bench", sshd.settings())
            try:
                batches.append(run_batch(fresh, host.ops_of[account], handlers, state_dir=host.state_dir))
            finally:
                fresh.close()
        check(batches, some_ops, changes=True)

    timed(sshd, v["c"], per_connection)

    # (d) the script of (a), locally
    host.reset()
    # the SSH session has no locale (the test sshd accepts no LANG/LC_* and uses no PAM): same here
    local = LocalTransport("bench", env={"LC_ALL": "C"})
    timed(sshd, v["d"], lambda: check([run_batch(local, ops, handlers, state_dir=host.state_dir)], ops, changes=True))
    host.reset()


def components(sshd: SshdServer, rounds: int = 10) -> tuple[float, float]:
    """Median seconds to open one connection, and to run one empty command on an open connection."""
    connects: list[float] = []
    for _ in range(rounds):
        transport = SshTransport("bench", sshd.settings())
        start = time.perf_counter()
        transport.connect()
        connects.append(time.perf_counter() - start)
        transport.close()
    commands: list[float] = []
    transport = SshTransport("bench", sshd.settings())
    try:
        transport.connect()
        for _ in range(rounds):
            start = time.perf_counter()
            transport.run_script("true\n")
            commands.append(time.perf_counter() - start)
    finally:
        transport.close()
    return statistics.median(connects), statistics.median(commands)


# -- report -----------------------------------------------------------------------------------------

def report(v: dict[str, Variant], n: int, repeat: int, connect: float, command: float, script_bytes: int,
           netns: bool, load: tuple[float, float]) -> None:
    print(f"accounts: {n} (one nginx site + one mailbox each: {2 * n} operations, 3 handlers), "
          f"repeat: {repeat} (median), cores: {os.cpu_count()}, paramiko {paramiko.__version__}")
    print(f"sshd: loopback, {'private network namespace' if netns else 'host network namespace'}; "
          f"batch script: {script_bytes / 1024:.0f} KiB; load average (1 min) {load[0]:.2f} before, "
          f"{load[1]:.2f} after")
    print()
    base = v["a"].median
    header = f"{'variant':<48} {'wall s':>8} {'ms/account':>11} {'x (a)':>8} {'connections':>12}"
    print(header)
    print("-" * len(header))
    notes: list[str] = []
    for key in ("a", "a2", "b", "c", "d"):
        var = v[key]
        per = var.median / var.accounts
        wall = per * n
        mark = ""
        if var.accounts != n:
            mark = "*"
            notes.append(f"* measured on {var.accounts} accounts ({var.median:.2f} s), extrapolated linearly to {n}; "
                         f"connections per run: {max(var.connections)} (would be {n})")
        conns = max(var.connections)
        print(f"{var.label:<48} {wall:>7.2f}{mark:1} {per * 1000:>11.2f} {wall / base:>8.2f} "
              f"{conns if not mark else n:>11}{mark:1}")
    print()
    for note in notes:
        print(note)
    print(f"components: open one connection {connect * 1000:.1f} ms; one empty command on an open connection "
          f"{command * 1000:.1f} ms (includes the login user's shell start-up files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200, help="accounts to suspend (default 200)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; the median is shown (default 1)")
    parser.add_argument("--conn-accounts", type=int, default=20,
                        help="accounts for (c), a connection each, extrapolated to --accounts (default 20)")
    args = parser.parse_args()
    if args.accounts < 1 or args.repeat < 1 or args.conn_accounts < 1:
        parser.error("--accounts, --repeat and --conn-accounts must be at least 1")
    n = args.accounts
    conn_accounts = min(args.conn_accounts, n)

    sys.path.insert(0, str(REPO))  # the test servers live in the repository's tests package
    from tests.servers.netns import enter_private_netns
    from tests.servers.sshd import start_sshd

    netns = enter_private_netns()
    with tempfile.TemporaryDirectory(prefix="arrears-bench-") as tmp:
        (Path(tmp) / "sshd").mkdir()
        sshd = start_sshd(Path(tmp) / "sshd")
        try:
            host = make_host(Path(tmp) / "host", n)
            script_bytes = len(build_script(host.all_ops, host.handlers, state_dir=host.state_dir).encode())
            v = {
                "a": Variant("a", "(a) one batch, one connection", n),
                "a2": Variant("a2", "(a) again: no change, connection still open", n),
                "b": Variant("b", "(b) one channel per account, one connection", n),
                "c": Variant("c", "(c) one connection per account", conn_accounts),
                "d": Variant("d", "(d) one batch, local sh -s (floor)", n),
            }
            load_before = os.getloadavg()[0]
            for r in range(args.repeat):
                print(f"run {r + 1} of {args.repeat}", file=sys.stderr, flush=True)
                run_once(sshd, host, v, conn_accounts)
            connect, command = components(sshd)
        finally:
            sshd.stop()
    report(v, n, args.repeat, connect, command, script_bytes, netns, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
