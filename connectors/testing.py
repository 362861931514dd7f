"""Testing kit for code that drives a fleet: an in-memory :class:`FakeFleet` and a flag-file connector.

``FakeFleet`` implements :class:`connectors.fleet.Fleet` without touching any host. It records every
job it is given, keeps the state of each (host, service, account) (``active``, ``suspended``,
``deleted``), is idempotent like the real connectors (a repeated measure reports ``changed=False``),
answers ``status`` jobs with facts, and can be told to fail a job or a whole host::

    fleet = FakeFleet()
    fleet.fail_host("web2")                       # transient: unreachable until heal_host("web2")
    fleet.fail_job("42:*:suspension:mail", "doveadm failed")   # glob on the job key, or a predicate
    results = fleet.apply(jobs)
    assert fleet.state("web1", "web", "42") == "suspended"

``FlagConnector`` is a tiny real connector (shell operations on flag files under a folder) for
exercising :class:`connectors.runner.InventoryFleet` end to end with the local or SSH transport;
:func:`flag_inventory_yaml` writes an inventory using it. The pytest plugin
(:mod:`connectors.pytest_plugin`) exposes these as the ``fake_fleet`` and ``fake_inventory`` fixtures.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from connectors import validate
from connectors.base import Action, Handler, Operation
from connectors.fleet import Job, JobResult, Progress
from connectors.inventory import Inventory
from connectors.observed import Observed

__all__ = [
    "FLAG_BACKEND",
    "FakeFleet",
    "FlagConnector",
    "JobMatch",
    "flag_backends",
    "flag_inventory_yaml",
    "observe_flags",
]

JobMatch = str | Callable[[Job], bool]

_STATE_AFTER: dict[str, str] = {"suspend": "suspended", "resume": "active", "delete": "deleted", "restore": "active"}
_ALLOWED_FROM: dict[str, set[str]] = {
    "suspend": {"active"},
    "resume": {"suspended"},
    "delete": {"active", "suspended"},
    "restore": {"deleted"},
}


@dataclass
class _Failure:
    match: JobMatch
    error: str
    transient: bool
    times: int | None  # None = until cleared


@dataclass
class _HostFailure:
    error: str
    transient: bool


@dataclass(eq=False)
class FakeFleet:
    """An in-memory fleet. Thread-safe; every public attribute is safe to read in assertions.

    ``inventory``: when given, jobs for hosts or services it does not have fail like on the real fleet.
    """

    inventory: Inventory | None = None
    jobs: list[Job] = field(default_factory=list)  # every job applied, in order
    batches: list[list[Job]] = field(default_factory=list)  # the jobs of each apply() call
    results: list[JobResult] = field(default_factory=list)  # every result, in order
    closed: bool = False
    _states: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _facts: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    _job_failures: list[_Failure] = field(default_factory=list)
    _host_failures: dict[str, _HostFailure] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- steering ---------------------------------------------------------------------------------

    def fail_job(self, match: JobMatch, error: str = "injected failure", *, transient: bool = False,
                 times: int | None = None) -> None:
        """Make matching jobs fail with ``error``. ``match`` is an account id, a glob on the job key
        (``"*:suspension:mail"``) or on the operation id ``account:service:action`` (``"42:mail:*"``), or a
        predicate on the :class:`Job`. ``times`` limits how many
        matching jobs fail (``None``: until :meth:`clear_failures`). A failed job changes nothing."""
        with self._lock:
            self._job_failures.append(_Failure(match, error, transient, times))

    def fail_host(self, host: str, *, transient: bool = True, error: str | None = None) -> None:
        """Every job for ``host`` fails (unreachable, transient by default) until :meth:`heal_host`."""
        with self._lock:
            self._host_failures[host] = _HostFailure(error or f"{host}: cannot connect: Connection refused",
                                                     transient)

    def heal_host(self, host: str) -> None:
        with self._lock:
            self._host_failures.pop(host, None)

    def clear_failures(self) -> None:
        with self._lock:
            self._job_failures.clear()
            self._host_failures.clear()

    def set_state(self, host: str, service: str, account: str, state: str) -> None:
        """Pretend the host is in ``state`` already (someone changed it by hand)."""
        if state not in {"active", "suspended", "deleted"}:
            raise ValueError(f"unknown state {state!r}")
        with self._lock:
            self._states[(host, service, account)] = state

    def set_facts(self, host: str, service: str, account: str, **facts: str) -> None:
        """Facts a ``status`` job (and every other job) for this account's service will report."""
        with self._lock:
            self._facts.setdefault((host, service, account), {}).update(facts)

    # -- reading ----------------------------------------------------------------------------------

    def state(self, host: str, service: str, account: str) -> str:
        with self._lock:
            return self._states.get((host, service, account), "active")

    def states(self) -> dict[tuple[str, str, str], str]:
        with self._lock:
            return dict(self._states)

    def applied(self, *, account: str | None = None, action: str | None = None, service: str | None = None,
                host: str | None = None) -> list[Job]:
        """The recorded jobs, filtered."""
        with self._lock:
            return [
                j for j in self.jobs
                if (account is None or j.account == account) and (action is None or j.action == action)
                and (service is None or j.service == service) and (host is None or j.host == host)
            ]

    # -- Fleet ------------------------------------------------------------------------------------

    def _failure_for(self, job: Job) -> _Failure | None:
        for failure in self._job_failures:
            if failure.times is not None and failure.times <= 0:
                continue
            m = failure.match
            hit = m(job) if callable(m) else (
                fnmatch.fnmatchcase(job.key, m) or job.account == m
                or fnmatch.fnmatchcase(f"{job.account}:{job.service}:{job.action}", m)
            )
            if hit:
                if failure.times is not None:
                    failure.times -= 1
                return failure
        return None

    def _apply_one(self, job: Job) -> JobResult:
        try:
            validate.account_id(job.account)
        except validate.UnsafeValue as exc:
            return JobResult(job.key, job.host, ok=False, error=f"{exc}; nothing was run")
        if self.inventory is not None:
            host = self.inventory.hosts.get(job.host)
            if host is None:
                return JobResult(job.key, job.host, ok=False, error=f"unknown host {job.host!r}; nothing was run")
            if job.service not in host.services:
                return JobResult(job.key, job.host, ok=False,
                                 error=f"host {job.host!r} has no {job.service!r} service; nothing was run")
        down = self._host_failures.get(job.host)
        if down is not None:
            return JobResult(job.key, job.host, ok=False, error=down.error, transient=down.transient)
        failure = self._failure_for(job)
        op_id = f"{job.account}:{job.service}:{job.action}"
        if failure is not None:
            return JobResult(job.key, job.host, ok=False, error=f"{op_id}: {failure.error}",
                             transient=failure.transient,
                             operations=[{"id": op_id, "kind": f"{job.service}:{job.action}", "rc": 1,
                                          "changed": False, "error": failure.error, "facts": {}}])
        where = (job.host, job.service, job.account)
        before = self._states.get(where, "active")
        facts = dict(self._facts.get(where, {}))
        changed = False
        if job.action == "status":
            facts.setdefault("state", before)
        else:
            if before in _ALLOWED_FROM[job.action]:
                self._states[where] = _STATE_AFTER[job.action]
                changed = True
            facts.setdefault("state", self._states.get(where, "active"))
            if job.action == "delete":
                archive = f"/var/backups/arrears/{job.account}-{job.service}.tar.gz"
                facts.setdefault("archive", archive)
                facts.setdefault("sha256", hashlib.sha256(archive.encode()).hexdigest())
        op = {"id": op_id, "kind": f"{job.service}:{job.action}", "rc": 0, "changed": changed, "error": None,
              "facts": dict(facts)}
        return JobResult(job.key, job.host, ok=True, changed=changed, facts=facts, operations=[op],
                         observed=observe_flags(facts) if job.action == "status" else None)

    def apply(self, jobs: Sequence[Job], *, progress: Progress | None = None) -> dict[str, JobResult]:
        if self.closed:
            raise RuntimeError("this FakeFleet was closed")
        out: dict[str, JobResult] = {}
        with self._lock:
            self.batches.append(list(jobs))
            for job in jobs:
                self.jobs.append(job)
                result = self._apply_one(job)
                self.results.append(result)
                out[job.key] = result
        if progress is not None:
            done = 0
            for host in dict.fromkeys(j.host for j in jobs):
                done += sum(1 for j in jobs if j.host == host)
                progress(host, done, len(jobs))
        return out

    def close(self) -> None:
        self.closed = True


# -- a real, tiny connector for end-to-end tests ------------------------------------------------------

FLAG_BACKEND = "flag"
_MESSAGE = re.compile(r"^[A-Za-z0-9 _.,:-]{1,200}$")


def observe_flags(facts: Mapping[str, str]) -> Observed:
    """The flag connector's (and the FakeFleet's) ``state`` fact, as it says."""
    state = facts.get("state")
    for known in ("active", "suspended", "deleted"):
        if state == known:
            return Observed(known, f"state {state}")
    return Observed("unknown", f"state {state}")


class FlagSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        return validate.path(value)


class FlagConnector:
    """Marks an account's service suspended/deleted with flag files under ``root/<service>/``.

    ``resource = {"fail": "message"}`` makes the operation fail with that message (for failure tests).
    One handler per service appends a line to ``root/<service>.reloads`` once per batch in which
    something changed (like a reload of nginx).
    """

    service = "web"
    Settings = FlagSettings

    def __init__(self, settings: FlagSettings, host: str, service: str | None = None) -> None:
        self.settings = settings
        self.host = host
        if service is not None:
            self.service = service

    def _handler_name(self) -> str:
        return f"flag-reload-{self.service}"

    def operations(self, action: Action, account: str, resource: Mapping[str, Any]) -> list[Operation]:
        acct = validate.account_id(account)
        base = f"{self.settings.root}/{self.service}/{acct}"
        f = validate.q(base)
        lines = [f"mkdir -p {validate.q(self.settings.root + '/' + self.service)}"]
        fail = resource.get("fail")
        if fail is not None:
            if not isinstance(fail, str) or not _MESSAGE.match(fail):
                raise validate.UnsafeValue("failure message", fail, f"does not match {_MESSAGE.pattern}")
            lines.append(f"fail {validate.q(fail)}")
        if action == "suspend":
            lines.append(f"if [ ! -e {f}.suspended ] && [ ! -e {f}.deleted ]; then : > {f}.suspended; changed; fi")
        elif action == "resume":
            lines.append(f"if [ -e {f}.suspended ]; then rm -f {f}.suspended; changed; fi")
        elif action == "delete":
            lines.append(f"if [ ! -e {f}.deleted ]; then rm -f {f}.suspended; : > {f}.deleted; changed; fi")
        elif action == "restore":
            lines.append(f"if [ -e {f}.deleted ]; then rm -f {f}.deleted; changed; fi")
        elif action != "status":
            raise ValueError(f"unknown action {action!r}")
        lines.append(
            f"if [ -e {f}.deleted ]; then fact state deleted; elif [ -e {f}.suspended ]; then fact state suspended;"
            " else fact state active; fi"
        )
        handlers = (self._handler_name(),) if action != "status" else ()
        return [Operation(f"{acct}:{self.service}:{action}", acct, f"{self.service}:{action}", "\n".join(lines),
                          handlers)]

    def observe(self, facts: Mapping[str, str]) -> Observed:
        return observe_flags(facts)

    def check_script(self) -> str:
        """The ``hosts check`` probe: the flag folder's parent must exist."""
        parent = validate.q(self.settings.root.rsplit("/", 1)[0] or "/")
        return f'[ -d {parent} ] || fail "flag folder parent {parent} does not exist"\nfact version flag'

    def handlers(self) -> list[Handler]:
        log = validate.q(f"{self.settings.root}/{self.service}.reloads")
        return [Handler(self._handler_name(), f'echo "$ARREARS_CHANGED" >> {log}')]


def _flag_class(service: str) -> type[FlagConnector]:
    return type(f"Flag{service.capitalize()}Connector", (FlagConnector,), {"service": service})


FlagWebConnector = _flag_class("web")
FlagMailConnector = _flag_class("mail")
FlagLoginConnector = _flag_class("login")
FlagHomeConnector = _flag_class("home")


def flag_backends() -> dict[tuple[str, str], str]:
    """Registry entries for the flag connector, one per service (add them with ``registry.register``)."""
    return {
        (service, FLAG_BACKEND): f"connectors.testing:Flag{service.capitalize()}Connector"
        for service in ("web", "mail", "login", "home")
    }


def flag_inventory_yaml(hosts: Mapping[str, str] | Iterable[str], *, services: Sequence[str] = ("web", "mail"),
                        parallel: int = 4, ssh: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Inventory YAML for hosts using the flag connector. ``hosts`` maps host name -> flag root folder (or
    is a list of names, rooted at /tmp/arrears-flags/<host>). ``ssh`` gives per-host SSH settings; hosts
    without them use ``transport: local``."""
    roots = dict(hosts) if isinstance(hosts, Mapping) else {h: f"/tmp/arrears-flags/{h}" for h in hosts}
    lines = [f"defaults: {{parallel: {parallel}, connect_timeout: 5, retries: 2, retry_max_time: 10}}", "hosts:"]
    for name, root in roots.items():
        lines.append(f"  {name}:")
        settings = (ssh or {}).get(name)
        if settings:
            lines.append("    transport: ssh")
            lines.extend(f"    {k}: {_yaml_scalar(v)}" for k, v in settings.items())
        else:
            lines.append("    transport: local")
        lines.append("    services:")
        lines.extend(f"      {s}: {{backend: {FLAG_BACKEND}, root: {root}}}" for s in services)
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
