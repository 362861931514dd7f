"""InventoryFleet: applies jobs to the inventory's hosts, one connection and one batch per host.

Jobs are grouped per host; each job's operations come from the host's connector for the job's service.
Every host runs one :func:`connectors.base.run_batch` over its own transport, hosts in parallel (at most
``defaults.parallel`` at a time). Transports stay open across :meth:`InventoryFleet.apply` calls until
:meth:`InventoryFleet.close`. A job whose account, host or service is wrong fails alone before anything
runs; a host that cannot be reached fails only its own jobs (``transient`` tells the caller to retry).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from connectors import validate
from connectors.base import (
    BatchResult,
    Connector,
    Handler,
    Operation,
    OpResult,
    Transport,
    TransportError,
    run_batch,
)
from connectors.fleet import Job, JobResult, Progress
from connectors.inventory import Inventory

__all__ = ["InventoryFleet", "TransportFactory", "job_resource"]

log = logging.getLogger(__name__)

TransportFactory = Callable[[str], Transport]  # host name -> a new, unconnected transport


def job_resource(job: Job) -> dict[str, Any]:
    """What a connector's ``operations`` receives as ``resource``: the facts saved by an earlier job
    (``job.state``, e.g. the archive and sha256 a restore needs, the flags a resume brings back) with the
    job's resource on top (the resource wins where both name the same key)."""
    return {**dict(job.state), **dict(job.resource)}


@dataclass
class _HostWork:
    host: str
    jobs: list[Job] = field(default_factory=list)
    ops: list[Operation] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    ops_of: dict[str, list[Operation]] = field(default_factory=dict)  # job key -> its operations
    connector_of: dict[str, Connector] = field(default_factory=dict)  # job key -> the connector that made them


def _op_dict(op: Operation, result: OpResult) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "rc": result.rc,
        "changed": result.changed,
        "error": result.error,
        "facts": dict(result.facts),
    }


class InventoryFleet:
    """The real fleet: the inventory's hosts over SSH (or locally for ``transport: local`` hosts)."""

    def __init__(self, inventory: Inventory, transport_factory: TransportFactory | None = None) -> None:
        self.inventory = inventory
        self._factory: TransportFactory = transport_factory or inventory.transport
        self._transports: dict[str, Transport] = {}
        self._lock = threading.Lock()

    # -- transports -------------------------------------------------------------------------------

    def transport(self, host: str) -> Transport:
        """The host's transport, created on first use and kept until :meth:`close`."""
        with self._lock:
            transport = self._transports.get(host)
            if transport is None:
                transport = self._factory(host)
                self._transports[host] = transport
            return transport

    def close(self) -> None:
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            try:
                transport.close()
            except Exception:  # closing one host must not stop closing the others
                log.warning("closing the transport of %s failed", transport.host, exc_info=True)

    def __enter__(self) -> InventoryFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- apply ------------------------------------------------------------------------------------

    def _plan(self, jobs: Sequence[Job], results: dict[str, JobResult]) -> dict[str, _HostWork]:
        work: dict[str, _HostWork] = {}
        seen: set[str] = set()
        for job in jobs:
            if job.key in seen:
                raise ValueError(f"job key {job.key!r} appears twice in one apply()")
            seen.add(job.key)
            error = self._plan_job(job, work)
            if error is not None:
                results[job.key] = JobResult(job.key, job.host, ok=False, error=error)
        return work

    def _plan_job(self, job: Job, work: dict[str, _HostWork]) -> str | None:
        """Add the job's operations to its host's batch; or say why it cannot run (then nothing runs for it)."""
        host = self.inventory.hosts.get(job.host)
        if host is None:
            known = ", ".join(sorted(self.inventory.hosts)) or "none"
            return f"unknown host {job.host!r}: not in {self.inventory.source} (known hosts: {known}); nothing was run"
        if job.service not in host.services:
            have = ", ".join(sorted(host.services)) or "none"
            return f"host {job.host!r} has no {job.service!r} service (it has: {have}); nothing was run"
        try:
            validate.account_id(job.account)
            connector = self.inventory.connector(job.host, job.service)
            ops = connector.operations(job.action, job.account, job_resource(job))
            handlers = connector.handlers() if ops else []
        except validate.UnsafeValue as exc:
            return f"{exc}; nothing was run"
        except KeyError as exc:
            return f"cannot build the operations: missing {exc}; nothing was run"
        except (LookupError, ValueError, TypeError, ImportError) as exc:
            return f"cannot build the operations: {exc}; nothing was run"
        w = work.setdefault(job.host, _HostWork(job.host))
        taken = {op.id for op in w.ops}
        ids = [op.id for op in ops]
        clash = sorted({i for i in ids if i in taken or ids.count(i) > 1})
        if clash:
            return f"operation ids {clash} clash with another job in this batch; nothing was run for this job"
        for handler in handlers:
            existing = w.handlers.get(handler.name)
            if existing is not None and existing.script != handler.script:
                return f"two connectors on {job.host} define different handlers named {handler.name!r}"
        w.jobs.append(job)
        w.ops.extend(ops)
        w.ops_of[job.key] = ops
        w.connector_of[job.key] = connector
        for handler in handlers:
            w.handlers.setdefault(handler.name, handler)
        return None

    def _run_host(self, w: _HostWork) -> dict[str, JobResult]:
        if not w.ops:
            return {job.key: self._job_result(job, w, BatchResult(w.host)) for job in w.jobs}
        try:
            transport = self.transport(w.host)
            batch = run_batch(transport, w.ops, list(w.handlers.values()),
                              timeout=self.inventory.defaults.batch_timeout,
                              state_dir=self.inventory.state_dir(w.host))
        except TransportError as exc:
            return {job.key: JobResult(job.key, w.host, ok=False, error=str(exc), transient=exc.transient)
                    for job in w.jobs}
        except Exception as exc:
            log.exception("batch for %s failed", w.host)
            return {job.key: JobResult(job.key, w.host, ok=False, error=f"batch failed: {exc}") for job in w.jobs}
        return {job.key: self._job_result(job, w, batch) for job in w.jobs}

    @staticmethod
    def _job_result(job: Job, w: _HostWork, batch: BatchResult) -> JobResult:
        ops = w.ops_of.get(job.key, [])
        result = JobResult(job.key, w.host, ok=True)
        errors: list[str] = []
        for op in ops:
            r = batch.results[op.id]
            result.operations.append(_op_dict(op, r))
            result.changed = result.changed or r.changed
            result.facts.update(r.facts)
            if not r.ok:
                errors.append(f"{op.id}: {r.error or f'exit {r.rc}'}")
            elif r.changed:
                for name in op.handlers:
                    h = batch.handlers.get(f"handler:{name}")
                    if h is not None and not h.ok:
                        reason = (h.stderr.strip().splitlines() or [f"exit {h.rc}"])[-1]
                        errors.append(f"{op.id}: handler {name} failed: {reason}")
        if errors:
            result.ok = False
            result.error = "; ".join(errors)
        elif job.action == "status":
            result.observed = w.connector_of[job.key].observe(result.facts)
        return result

    def apply(self, jobs: Sequence[Job], *, progress: Progress | None = None) -> dict[str, JobResult]:
        """Run every job; one result per job key. Never raises for a host's or a job's failure."""
        results: dict[str, JobResult] = {}
        work = self._plan(jobs, results)
        total = len(jobs)
        done = len(results)
        if not work:
            return results
        workers = max(1, min(self.inventory.defaults.parallel, len(work)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="arrears-host") as pool:
            futures = {pool.submit(self._run_host, w): w for w in work.values()}
            for future in as_completed(futures):
                w = futures[future]
                host_results = future.result()
                results.update(host_results)
                done += len(host_results)
                if progress is not None:
                    progress(w.host, done, total)
        return {job.key: results[job.key] for job in jobs}
