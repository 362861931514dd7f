"""``arrears hosts prepare``: the one-time changes each host needs before arrears can act on it.

For every host and service of the inventory a *planner* (connectors/web/prepare.py for nginx and apache,
connectors/mail/prepare.py for dovecot+postfix; the folders alone for the other backends) reads the
host's files over the host's own transport (local or SSH, like every batch) and returns a :class:`Plan`:
folders with their modes, files to write (each shown as a unified diff), lines the operator must add by
hand where a file is too unusual to edit safely (nothing is changed in such a file), the config test to
run after the edits and the commands to run when something changed (``postmap``, a reload).

Applying a plan writes the files atomically (a new file renamed into place, the old mode kept), runs the
config test, and puts every file of the plan back as it was when the test fails. A plan that finds
nothing to do changes nothing, so a second run is a no-op. ``dry_run`` prints the same diffs and
changes nothing. Every path is validated (:func:`connectors.validate.path`) and every value quoted
(:func:`connectors.validate.q`) before it reaches the host's shell.
"""

from __future__ import annotations

import base64
import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from connectors.base import Transport, TransportError, whole_script
from connectors.inventory import Inventory
from connectors.validate import UnsafeValue, q
from connectors.validate import path as safe_path

__all__ = ["Folder", "Manual", "Plan", "Remote", "Write", "prepare_hosts", "shell_words"]

log = logging.getLogger(__name__)

PRIVATE = 0o700  # state and archive folders: customers' data and the agent's records
SHARED = 0o755  # folders a daemon reads as its own user (hook snippets, deny lists, postfix maps)


@dataclass(frozen=True)
class Folder:
    path: str
    mode: int


@dataclass
class Write:
    """A file to (re)write: ``before`` is None for a new file."""

    path: str
    before: str | None
    after: str
    mode: int = 0o644

    def diff(self) -> str:
        old = [] if self.before is None else self.before.splitlines(keepends=True)
        lines = difflib.unified_diff(old, self.after.splitlines(keepends=True),
                                     fromfile="/dev/null" if self.before is None else self.path, tofile=self.path)
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


@dataclass(frozen=True)
class Manual:
    """A file left alone: add ``line`` by hand (``where`` says where)."""

    path: str
    line: str
    where: str


@dataclass
class Plan:
    service: str
    backend: str
    folders: list[Folder] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    manual: list[Manual] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    test: str | None = None  # a shell command line: the config test after the writes
    ensure: list[tuple[str, str]] = field(default_factory=list)  # (shell test, command): run when the test fails
    on_change: list[str] = field(default_factory=list)  # shell command lines run after a successful change


def shell_words(words: Sequence[str]) -> str:
    """A command line from its words, each quoted."""
    return " ".join(q(w) for w in words)


class Remote:
    """Reads a host's files and folders over its transport (one small script per question)."""

    def __init__(self, transport: Transport, timeout: float = 120.0) -> None:
        self.transport = transport
        self.timeout = timeout

    def run(self, body: str) -> tuple[int, str, str]:
        out = self.transport.run_script(whole_script(body), timeout=self.timeout)
        return out.exit_status, out.stdout, out.stderr

    def read(self, path: str) -> tuple[str, int] | None:
        """The file's text and mode, or None when it is not a regular file."""
        return self.read_many([path])[path]

    def read_many(self, paths: Sequence[str]) -> dict[str, tuple[str, int] | None]:
        """Each file's text and mode (None: not a regular file), in one script."""
        checked = [safe_path(p) for p in paths]
        body = "".join(f"if [ -f {q(p)} ] && [ ! -L {q(p)} ]; then printf '%s ' \"$(stat -c %a -- {q(p)})\" && "
                       f"base64 -w0 < {q(p)} && echo; else echo none; fi\n" for p in checked)
        rc, out, err = self.run(body or ":\n")
        lines = out.splitlines()
        if rc != 0 or len(lines) != len(checked):
            raise TransportError(self.transport.host, f"cannot read {', '.join(checked)}: {err.strip()}",
                                 transient=False)
        found: dict[str, tuple[str, int] | None] = {}
        for p, line in zip(checked, lines, strict=True):
            mode, _, data = line.partition(" ")
            found[p] = None if line == "none" else (base64.b64decode(data).decode("utf-8", "surrogateescape"),
                                                     int(mode, 8))
        return found

    def holds(self, tests: Sequence[str]) -> list[bool]:
        """Whether each shell test holds on the host, in one script."""
        rc, out, err = self.run("".join(f"if {t}; then echo yes; else echo no; fi\n" for t in tests) or ":\n")
        lines = out.split()
        if rc != 0 or len(lines) != len(tests):
            raise TransportError(self.transport.host, f"cannot check the host: {err.strip()}", transient=False)
        return [line == "yes" for line in lines]

    def files(self, folder: str) -> list[str]:
        """The regular files (not symlinks) directly in ``folder``, sorted; [] when it does not exist."""
        d = safe_path(folder)
        rc, out, err = self.run(f"[ -d {q(d)} ] || exit 0\nfind {q(d)} -mindepth 1 -maxdepth 1 -type f | sort\n")
        if rc != 0:
            raise TransportError(self.transport.host, f"cannot list {d}: {err.strip()}", transient=False)
        return [line for line in out.splitlines() if line]

    def folder_modes(self, folders: Sequence[str]) -> dict[str, int | None]:
        """Each folder's mode, None when it does not exist."""
        body = "".join(f"if [ -d {q(safe_path(f))} ]; then stat -c %a -- {q(f)}; else echo -; fi\n" for f in folders)
        rc, out, err = self.run(body or ":\n")
        lines = out.splitlines()
        if rc != 0 or len(lines) != len(folders):
            raise TransportError(self.transport.host, f"cannot inspect folders: {err.strip()}", transient=False)
        return {f: None if v == "-" else int(v, 8) for f, v in zip(folders, lines, strict=True)}


Planner = Callable[[str, str, BaseModel, Any, Remote], Plan]  # service, backend, settings, connector, remote


def _folders_only(service: str, backend: str, settings: BaseModel, connector: Any, remote: Remote) -> Plan:
    return Plan(service, backend, folders=base_folders(settings))


def base_folders(settings: BaseModel) -> list[Folder]:
    """The state and archive folders every backend with such settings keeps (mode 0700)."""
    out = []
    for name in ("state_dir", "archive_dir"):
        value = getattr(settings, name, None)
        if isinstance(value, str):
            out.append(Folder(safe_path(value), PRIVATE))
    return out


def _planner(service: str, backend: str) -> Planner:
    if service == "web" and backend in ("nginx", "apache"):
        from connectors.web.prepare import plan_web

        return plan_web
    if service == "mail" and backend == "dovecot-postfix":
        from connectors.mail.prepare import plan_dovecot_postfix

        return plan_dovecot_postfix
    return _folders_only


# -- applying -------------------------------------------------------------------------------------


def _folder_changes(plan: Plan, remote: Remote) -> list[tuple[Folder, int | None]]:
    seen: dict[str, Folder] = {}
    for f in plan.folders:
        seen.setdefault(f.path, f)
    modes = remote.folder_modes(list(seen))
    return [(f, modes[f.path]) for f in seen.values() if modes[f.path] != f.mode]


def _describe_folder(folder: Folder, mode: int | None) -> str:
    if mode is None:
        return f"mkdir -p -m {folder.mode:04o} {folder.path}"
    return f"chmod {folder.mode:04o} {folder.path}   # was {mode:04o}"


def _apply(plan: Plan, remote: Remote, report: dict[str, Any]) -> None:
    transport = remote.transport
    folders = _folder_changes(plan, remote)
    report["folders"] = [_describe_folder(f, m) for f, m in folders]
    done_already = remote.holds([test for test, _ in plan.ensure]) if plan.ensure else []
    due = [command for (_, command), held in zip(plan.ensure, done_already, strict=True) if not held]
    if report["dry_run"]:
        report["commands"] = due + ([plan.test] if plan.writes and plan.test else []) + \
            (plan.on_change if plan.writes else [])
        return
    if folders:
        body = "set -e\n" + "".join(f"mkdir -p -- {q(f.path)}\nchmod {f.mode:o} -- {q(f.path)}\n" for f, _ in folders)
        rc, _, err = remote.run(body)
        if rc != 0:
            raise TransportError(transport.host, f"cannot create the folders: {err.strip()}", transient=False)
        report["changed"] = True
    done: list[Write] = []
    try:
        for w in plan.writes:
            transport.put(w.path, w.after.encode("utf-8", "surrogateescape"), mode=w.mode)
            done.append(w)
        for command in due:
            rc, out, err = remote.run(f"{command} 2>&1\n")
            if rc != 0:
                raise _Failed(f"{command} failed: {(out + err).strip()}")
            report["commands"].append(command)
            report["changed"] = True
        if plan.writes and plan.test is not None:
            rc, out, err = remote.run(f"{plan.test} 2>&1\n")
            if rc != 0:
                raise _Failed(f"the config test ({plan.test}) failed, every file was put back as it was: "
                              f"{(out + err).strip()}")
    except (_Failed, TransportError) as exc:
        _roll_back(done, remote)
        report["ok"] = False
        report["error"] = str(exc)
        return
    if done:
        report["changed"] = True
        for command in plan.on_change:
            rc, out, err = remote.run(f"{command} 2>&1\n")
            report["commands"].append(command)
            if rc != 0:
                report["ok"] = False
                report["error"] = f"the change is in place, but {command} failed: {(out + err).strip()}"
                return


class _Failed(Exception):
    pass


def _roll_back(done: Sequence[Write], remote: Remote) -> None:
    for w in reversed(done):
        try:
            if w.before is None:
                remote.run(f"rm -f -- {q(w.path)}\n")
            else:
                remote.transport.put(w.path, w.before.encode("utf-8", "surrogateescape"), mode=w.mode)
        except TransportError:
            log.exception("putting %s back failed", w.path)


def _prepare_service(inv: Inventory, host: str, service: str, remote: Remote, dry_run: bool) -> dict[str, Any]:
    svc = inv.hosts[host].services[service]
    report: dict[str, Any] = {"service": service, "backend": svc.backend, "ok": True, "changed": False,
                              "dry_run": dry_run, "diffs": [], "folders": [], "manual": [], "notes": [],
                              "commands": [], "error": None}
    try:
        connector = inv.connector(host, service)
        plan = _planner(service, svc.backend)(service, svc.backend, svc.settings, connector, remote)
        report["diffs"] = [{"path": w.path, "diff": w.diff()} for w in plan.writes]
        report["manual"] = [{"path": m.path, "line": m.line, "where": m.where} for m in plan.manual]
        report["notes"] = list(plan.notes)
        _apply(plan, remote, report)
    except (TransportError, UnsafeValue, ValueError) as exc:
        report["ok"] = False
        report["error"] = str(exc)
    if report["manual"]:
        report["ok"] = False
    return report


def prepare_hosts(inv: Inventory, *, hosts: Sequence[str] | None = None, dry_run: bool = False,
                  transport_factory: Callable[[str], Transport] | None = None) -> dict[str, Any]:
    """Check (and unless ``dry_run`` make) every host's one-time changes; a report per host and service."""
    names = list(hosts) if hosts else sorted(inv.hosts)
    unknown = [n for n in names if n not in inv.hosts]
    if unknown:
        known = ", ".join(sorted(inv.hosts)) or "none"
        raise KeyError(f"unknown hosts {', '.join(unknown)}: not in {inv.source} (known hosts: {known})")
    factory = transport_factory or inv.transport
    out: list[dict[str, Any]] = []
    for name in names:
        entry: dict[str, Any] = {"host": name, "ok": True, "changed": False, "services": [], "error": None}
        transport = factory(name)
        try:
            connect = getattr(transport, "connect", None)
            if callable(connect):
                connect()  # an unreachable host is one error, not one per service
            remote = Remote(transport, timeout=inv.defaults.batch_timeout)
            for service in inv.hosts[name].services:
                s = _prepare_service(inv, name, service, remote, dry_run)
                entry["services"].append(s)
                entry["ok"] = entry["ok"] and s["ok"]
                entry["changed"] = entry["changed"] or s["changed"]
        except TransportError as exc:
            entry["ok"] = False
            entry["error"] = str(exc)
        finally:
            transport.close()
        out.append(entry)
    return {"inventory": inv.source, "dry_run": dry_run, "ok": all(h["ok"] for h in out),
            "changed": any(h["changed"] for h in out), "hosts": out}
