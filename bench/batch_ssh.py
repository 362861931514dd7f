"""Time suspending and resuming many accounts on one host over SSH, against the floor: a minimal script
making the same host changes.

    python bench/batch_ssh.py [--accounts 1000] [--repeat 3] [--no-strace]

Starts its own sshd on loopback (tests/servers/sshd.py; in a private network namespace when run as
root). Each of ``--accounts`` accounts has one nginx site and one dovecot+postfix mailbox; the real
connectors' operations and handlers do the work. Their files live in a temporary folder; the config
test, reload, postmap, kick and who commands are ``true``, so no nginx, dovecot or postfix is needed.
Every script is built before any timing.

Variants, each run on one open SSH connection and timed side by side (``--repeat`` interleaved rounds,
medians shown):

arrears suspend / resume  one batch for all accounts (``run_batch``), what arrears does;
arrears again             the suspension applied a second time: nothing to change;
floor suspend / resume    a minimal script making the same host changes: one write per snippet (shell
                          builtins), one write per list file for all mailboxes, one ``postmap`` call
                          for both maps, one reload per server; resume one ``rm`` of every snippet and
                          one write per list file.

Every arrears run is checked: each operation succeeded and changed the host (none on the second run).
The floor's host files are checked against arrears' (the same snippets, the same list files).
CPU time is the host shell's (the same scripts run locally with ``sh -s``, user + system time of the
child processes). Processes per operation come from ``strace -f -c`` of those local runs: ``execve``
calls, and forks (``clone``/``fork``/``vfork``). Ansible and pyinfra variants are not run: they are no
project dependencies, and this bench says so when they are not installed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from connectors.base import BatchResult, Handler, Operation, ScriptOutput, build_script, parse_output
from connectors.mail.dovecot_postfix import DovecotPostfixConnector, DovecotPostfixSettings
from connectors.ssh import SshTransport
from connectors.validate import q
from connectors.web.nginx import NginxConnector, NginxSettings

if TYPE_CHECKING:
    from tests.servers.sshd import SshdServer

__all__ = ["BenchHost", "main"]

REPO = Path(__file__).resolve().parents[1]
SUSPENDED_URL = "http://billing.example/suspended.html"


@dataclass
class BenchHost:
    """N accounts (one nginx site and one mailbox each) whose files live below ``root``."""

    root: Path
    web: NginxConnector
    mail: DovecotPostfixConnector
    suspend: list[Operation]
    resume: list[Operation]
    handlers: list[Handler]
    sites: list[str]
    boxes: list[str]
    state_dir: str

    def reset(self) -> None:
        """Back to nothing suspended: drop snippets, deny lists, maps and saved state (vhosts stay)."""
        for sub in ("hooks", "state", "dovecot", "postfix"):
            shutil.rmtree(self.root / sub, ignore_errors=True)

    def script(self, ops: list[Operation]) -> str:
        return build_script(ops, self.handlers, state_dir=self.state_dir)

    def snapshot(self) -> dict[str, bytes]:
        """The host changes: every snippet, deny list and map (not arrears' own saved state)."""
        return {str(p.relative_to(self.root)): p.read_bytes()
                for sub in ("hooks", "dovecot", "postfix") for p in sorted((self.root / sub).rglob("*"))
                if p.is_file()}


def make_host(root: Path, count: int) -> BenchHost:
    """Lay out Debian-like nginx vhosts carrying the arrears hook, and the two connectors' settings."""
    for sub in ("sites-available", "sites-enabled", "mail", "archive"):
        (root / sub).mkdir(parents=True)
    state = str(root / "state")
    web = NginxConnector(NginxSettings(
        hook_dir=str(root / "hooks"), vhost_dir=str(root / "sites-available"),
        enabled_dir=str(root / "sites-enabled"), vhost_name="{site}", state_dir=state,
        archive_dir=str(root / "archive"), suspended_url=SUSPENDED_URL, config_test=["true"], reload=["true"],
    ), "bench")
    mail = DovecotPostfixConnector(DovecotPostfixSettings(
        deny_dir=str(root / "dovecot" / "arrears"), imap_ports=[143, 993], pop3_ports=[110, 995],
        webmail_ports=[10143], password_lock_file=str(root / "dovecot" / "arrears" / "password-lock"),
        bounce_map=str(root / "postfix" / "bounce"), norelay_map=str(root / "postfix" / "norelay"),
        postmap_command="true", postfix_reload_command="true", dovecot_reload_command="true",
        kick_command="true", state_dir=state, maildir_template=str(root / "mail") + "/{domain}/{local}",
        mail_roots=[str(root / "mail")], archive_dir=str(root / "archive"),
    ), "bench")
    suspend: list[Operation] = []
    resume: list[Operation] = []
    sites, boxes = [], []
    for i in range(count):
        account, site = f"acct-{i:05d}", f"site-{i:05d}.bench.test"
        vhost = root / "sites-available" / site
        vhost.write_text(f"server {{\n    include {root / 'hooks'}/{site}.con[f];\n    listen 80;\n"
                         f"    server_name {site};\n    root /srv/www/{site};\n}}\n")
        (root / "sites-enabled" / site).symlink_to(vhost)
        sites.append(site)
        boxes.append(f"info@{site}")
        for action, ops in (("suspend", suspend), ("resume", resume)):
            ops += web.operations(action, account, {"sites": [site]})  # type: ignore[arg-type]
            ops += mail.operations(action, account, {"mailboxes": [f"info@{site}"]})  # type: ignore[arg-type]
    return BenchHost(root, web, mail, suspend, resume, [*web.handlers(), *mail.handlers()], sites, boxes, state)


# -- the floor: the same host changes, nothing else -----------------------------------------------------

def floor_scripts(host: BenchHost) -> tuple[str, str]:
    """Suspend and resume as a minimal script: one builtin write per snippet and per list file, one
    postmap call for both maps, one reload each (the bench's commands are ``true``, as for arrears)."""
    s, m = host.web.settings, host.mail.settings
    lists: dict[str, list[str]] = {}
    for box in host.boxes:
        for entries in m_targets(host.mail, box).values():
            for file, line, _ in entries:
                lists.setdefault(file, []).append(line)
    dirs = sorted({s.hook_dir, *(str(Path(f).parent) for f in lists)})
    head = f"set -e\numask 022\nmkdir -p {' '.join(q(d) for d in dirs)}\n"
    loads = (f"true {q('hash:' + m.bounce_map)} {q('hash:' + m.norelay_map)}\n"  # postmap, both maps
             "true\ntrue\ntrue\n")  # nginx -s reload, postfix reload, doveadm reload
    snippets = "".join(f"printf '%s' {q(host.web.snippet(f'acct-{i:05d}', site, SUSPENDED_URL))} > "
                       f"{q(host.web.snippet_path(site))}\n" for i, site in enumerate(host.sites))
    writes = "".join(f"printf '%s\\n' {' '.join(q(line) for line in lines)} > {q(file)}\n"
                     for file, lines in lists.items())
    suspend = head + snippets + writes + loads
    resume = (head + f"rm -f -- {q(s.hook_dir)}/*.conf\n"
              + "".join(f": > {q(file)}\n" for file in lists) + loads)
    return suspend, resume


def m_targets(mail: DovecotPostfixConnector, box: str) -> dict[str, list[tuple[str, str, str]]]:
    return mail._targets(box)


# -- checking what a run did --------------------------------------------------------------------------

def check(batch: BatchResult, ops: list[Operation], *, changes: bool) -> None:
    """Every operation succeeded and changed the host (``changes``) or changed nothing (not ``changes``)."""
    failed = [f"{r.id}: {r.error or r.stderr.strip()}" for r in batch.results.values() if not r.ok]
    failed += [f"{h.id}: {h.error or h.stderr.strip()}" for h in batch.handlers.values() if not h.ok]
    if failed or len(batch.results) != len(ops) or batch.error:
        raise SystemExit(f"bench run went wrong ({len(batch.results)} results for {len(ops)} operations, "
                         f"{batch.error}): {failed[:3]}")
    changed = sum(r.changed for r in batch.results.values())
    if changes and changed != len(ops):
        raise SystemExit(f"expected every operation to change the host, {changed} of {len(ops)} did")
    if not changes and (changed or batch.handlers):
        raise SystemExit(f"the second application changed {changed} operations and ran {len(batch.handlers)} handlers")


# -- measuring ----------------------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    ops: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    execs: float | None = None
    forks: float | None = None
    script_bytes: int = 0


def over_ssh(transport: SshTransport, script: str) -> tuple[float, str]:
    start = time.perf_counter()
    out = transport.run_script(script, timeout=3600)
    wall = time.perf_counter() - start
    if out.exit_status != 0:
        raise SystemExit(f"a bench script exited {out.exit_status}: {out.stderr.strip()[-500:]}")
    return wall, out.stdout


def local(script: str, *, strace: Path | None = None) -> float:
    """CPU seconds (user + system) the host shell and its children took for ``script``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = ["sh", "-s"] if strace is None else ["strace", "-f", "-c", "-o", str(strace), "sh", "-s"]
    proc = subprocess.run(argv, input=script.encode(), capture_output=True, env={**os.environ, "LC_ALL": "C"},
                          check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"a bench script exited {proc.returncode} locally: {proc.stderr.decode()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def counts(strace_out: Path) -> tuple[int, int]:
    """``execve`` calls and forks in an ``strace -c`` summary."""
    execs = forks = 0
    for line in strace_out.read_text().splitlines():
        words = line.split()
        if len(words) >= 5 and re.fullmatch(r"\d+", words[3]):
            name, calls = words[-1], int(words[3])
            if name in ("execve", "execveat"):
                execs += calls
            elif name in ("clone", "clone3", "fork", "vfork"):
                forks += calls
    return execs, forks


def run(n: int, repeat: int, use_strace: bool) -> None:
    sys.path.insert(0, str(REPO))  # the test servers live in the repository's tests package
    from tests.servers.netns import enter_private_netns
    from tests.servers.sshd import start_sshd

    netns = enter_private_netns()
    with tempfile.TemporaryDirectory(prefix="arrears-bench-") as tmp:
        (Path(tmp) / "sshd").mkdir()
        sshd: SshdServer = start_sshd(Path(tmp) / "sshd")
        try:
            host = make_host(Path(tmp) / "host", n)
            floor_suspend, floor_resume = floor_scripts(host)
            scripts = {"suspend": host.script(host.suspend), "resume": host.script(host.resume)}
            ops = len(host.suspend)
            rows = {
                "suspend": Row("arrears suspend", ops, script_bytes=len(scripts["suspend"])),
                "resume": Row("arrears resume", ops, script_bytes=len(scripts["resume"])),
                "again": Row("arrears suspend again (no change)", ops, script_bytes=len(scripts["suspend"])),
                "fsuspend": Row("floor suspend", ops, script_bytes=len(floor_suspend)),
                "fresume": Row("floor resume", ops, script_bytes=len(floor_resume)),
            }
            load = [os.getloadavg()[0]]
            transport = SshTransport("bench", sshd.settings())
            transport.connect()
            try:
                for r in range(repeat):
                    print(f"round {r + 1} of {repeat}", file=sys.stderr, flush=True)
                    host.reset()
                    for key, ops_, script, changes in (("suspend", host.suspend, scripts["suspend"], True),
                                                       ("again", host.suspend, scripts["suspend"], False),
                                                       ("resume", host.resume, scripts["resume"], True)):
                        wall, stdout = over_ssh(transport, script)
                        check(parse_output("bench", ops_, ScriptOutput(stdout, "", 0)), ops_, changes=changes)
                        rows[key].wall.append(wall)
                        if key == "suspend":
                            suspended = host.snapshot()
                    host.reset()
                    rows["fsuspend"].wall.append(over_ssh(transport, floor_suspend)[0])
                    if host.snapshot() != suspended:
                        raise SystemExit("the floor's suspension did not make the same host changes as arrears'")
                    rows["fresume"].wall.append(over_ssh(transport, floor_resume)[0])
                    # CPU time, locally, side by side in the same round
                    host.reset()
                    for key, script in (("suspend", scripts["suspend"]), ("again", scripts["suspend"]),
                                        ("resume", scripts["resume"])):
                        rows[key].cpu.append(local(script))
                    host.reset()
                    rows["fsuspend"].cpu.append(local(floor_suspend))
                    rows["fresume"].cpu.append(local(floor_resume))
                    print("  " + ", ".join(f"{k} {v.wall[-1]:.2f} s" for k, v in rows.items()), file=sys.stderr)
            finally:
                transport.close()
            strace_note = ""
            if use_strace and shutil.which("strace"):
                host.reset()
                out = Path(tmp) / "strace.txt"
                for key, script in (("suspend", scripts["suspend"]), ("again", scripts["suspend"]),
                                    ("resume", scripts["resume"])):
                    local(script, strace=out)
                    execs, forks = counts(out)
                    rows[key].execs, rows[key].forks = execs / ops, forks / ops
                host.reset()
                for key, script in (("fsuspend", floor_suspend), ("fresume", floor_resume)):
                    local(script, strace=out)
                    execs, forks = counts(out)
                    rows[key].execs, rows[key].forks = execs / ops, forks / ops
            elif use_strace:
                strace_note = "strace is not installed: no process counts"
            load.append(os.getloadavg()[0])
        finally:
            sshd.stop()
    report(rows, n, repeat, netns, load, strace_note)


def report(rows: dict[str, Row], n: int, repeat: int, netns: bool, load: list[float], strace_note: str) -> None:
    med: Callable[[list[float]], float] = statistics.median
    print(f"accounts: {n} (one nginx site + one mailbox each: {2 * n} operations per batch), rounds: {repeat} "
          f"(medians), cores: {os.cpu_count()}, paramiko {paramiko.__version__}")
    print(f"sshd: loopback, {'private network namespace' if netns else 'host network namespace'}; load average "
          f"(1 min) {load[0]:.2f} before, {load[-1]:.2f} after")
    print()
    header = (f"{'variant':<36} {'wall s':>8} {'ms/op':>7} {'cpu s':>7} {'script KiB':>10} "
              f"{'execs/op':>9} {'forks/op':>9}")
    print(header)
    print("-" * len(header))
    for row in rows.values():
        execs = "-" if row.execs is None else f"{row.execs:.2f}"
        forks = "-" if row.forks is None else f"{row.forks:.2f}"
        print(f"{row.label:<36} {med(row.wall):>8.2f} {med(row.wall) / row.ops * 1000:>7.3f} {med(row.cpu):>7.2f} "
              f"{row.script_bytes / 1024:>10.0f} {execs:>9} {forks:>9}")
    print()
    ratio = [(a + b) / (c + d) for a, b, c, d in zip(rows["suspend"].wall, rows["resume"].wall,
                                                     rows["fsuspend"].wall, rows["fresume"].wall, strict=True)]
    cpu = [(a + b) / (c + d) for a, b, c, d in zip(rows["suspend"].cpu, rows["resume"].cpu,
                                                   rows["fsuspend"].cpu, rows["fresume"].cpu, strict=True)]
    print(f"arrears / floor, suspend + resume, per round: wall {', '.join(f'{x:.1f}x' for x in ratio)} "
          f"(median {med(ratio):.1f}x); cpu {', '.join(f'{x:.1f}x' for x in cpu)} (median {med(cpu):.1f}x)")
    for name in ("ansible-playbook", "pyinfra"):
        if shutil.which(name) is None:
            print(f"{name} is not installed: its variant is skipped (not a project dependency)")
    if strace_note:
        print(strace_note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000, help="accounts (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians shown (default 3)")
    parser.add_argument("--no-strace", action="store_true", help="do not count processes with strace")
    args = parser.parse_args()
    if args.accounts < 1 or args.repeat < 1:
        parser.error("--accounts and --repeat must be at least 1")
    run(args.accounts, args.repeat, not args.no_strace)


if __name__ == "__main__":
    main()
