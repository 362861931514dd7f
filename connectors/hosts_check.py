"""``arrears hosts check``: connect to every host and report reachability, host-key status and backends.

Each host gets one connection and one batch holding a probe per configured service: its connector's own
``check_script()`` (the backend knows which tools and folders it needs). The report is plain JSON-able
data; :mod:`agent.cli.hosts` renders it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from connectors import validate
from connectors.base import Operation, Transport, TransportError, run_batch
from connectors.inventory import HostConfig, Inventory, ServiceConfig
from connectors.maintenance import each_host
from connectors.ssh import HostKeyError

__all__ = ["check_host", "check_hosts", "probe_script"]

def probe_script(inventory: Inventory, host: str, svc: ServiceConfig) -> str:
    """The shell probe for one service: its connector's own ``check_script()``."""
    try:
        return inventory.connector(host, svc.service).check_script()
    except Exception as exc:  # reported against the service; the other services are still checked
        return f"fail {validate.q(f'cannot build the {svc.backend} connector: {exc}')}"


def _service_report(svc: ServiceConfig, ok: bool, detail: str) -> dict[str, Any]:
    return {"service": svc.service, "backend": svc.backend, "ok": ok, "detail": detail}


def check_host(inventory: Inventory, name: str, transport: Transport) -> dict[str, Any]:
    """Connect, verify the host key, and run every service's probe in one batch."""
    host: HostConfig = inventory.hosts[name]
    report: dict[str, Any] = {
        "host": name,
        "transport": host.transport,
        "address": None,
        "port": None,
        "user": None,
        "reachable": False,
        "host_key": "not applicable" if host.transport == "local" else "not checked",
        "fingerprint": None,
        "connect_ms": None,
        "error": None,
        "transient": False,
        "services": [],
        "ok": False,
    }
    if host.transport == "ssh":
        settings = inventory.ssh_settings(name)
        report.update(address=settings.address, port=settings.port, user=settings.user,
                      sudo=settings.sudo and settings.user != "root")
    ops: list[Operation] = []
    services = list(host.services.values())
    for svc in services:
        ops.append(Operation(f"check:{svc.service}", "", f"{svc.service}:check", probe_script(inventory, name, svc)))
    started = time.perf_counter()
    try:
        connect = getattr(transport, "connect", None)
        if callable(connect):
            connect()
        report["connect_ms"] = round((time.perf_counter() - started) * 1000, 1)
        batch = run_batch(transport, ops, timeout=inventory.defaults.connect_timeout * 6)
        if not ops:
            transport.run_script("true", timeout=inventory.defaults.connect_timeout * 6)
    except HostKeyError as exc:
        report.update(host_key="changed" if exc.expected else "unknown", fingerprint=exc.fingerprint,
                      reachable=True, error=exc.message, transient=False)
        report["services"] = [_service_report(s, False, "not checked") for s in services]
        return report
    except TransportError as exc:
        report.update(error=exc.message, transient=exc.transient)
        # authentication and sudo problems happen after the host key was accepted
        if host.transport == "ssh" and not exc.transient:
            if "known_hosts" in exc.message:
                report["host_key"] = "no known_hosts file"
            else:
                report.update(reachable=True, host_key="ok")
        report["services"] = [_service_report(s, False, "not checked") for s in services]
        return report
    report["reachable"] = True
    if host.transport == "ssh":
        report["host_key"] = "ok"
    for svc, op in zip(services, ops, strict=True):
        r = batch.results[op.id]
        detail = r.facts.get("version", "") if r.ok else (r.error or f"exit {r.rc}")
        report["services"].append(_service_report(svc, r.ok, detail))
    report["ok"] = all(s["ok"] for s in report["services"])
    return report


def check_hosts(inventory: Inventory, *, hosts: Sequence[str] | None = None,
                transport_factory: Callable[[str], Transport] | None = None) -> dict[str, Any]:
    """Check the named hosts (default: all), in parallel bounded by ``defaults.parallel``."""
    names = list(hosts) if hosts else sorted(inventory.hosts)
    unknown = [n for n in names if n not in inventory.hosts]
    known = [n for n in names if n in inventory.hosts]
    reports = each_host(inventory, known, lambda name, transport: check_host(inventory, name, transport),
                        transport_factory=transport_factory)
    for name in unknown:
        reports.append({"host": name, "ok": False, "reachable": False, "host_key": "not checked",
                        "error": f"unknown host {name!r}: not in {inventory.source}", "services": []})
    return {"inventory": inventory.source, "ok": all(r["ok"] for r in reports), "hosts": reports}
