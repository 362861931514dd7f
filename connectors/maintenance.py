"""Work on every host of the inventory outside the outbox: the parallel loop, and archive pruning.

:func:`each_host` runs one function per host, each with its own transport, in parallel bounded by
``defaults.parallel`` (``arrears hosts check`` uses it too). :func:`prune_archives` removes, on every
host with a home service, the archives older than that service's ``retention_days``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connectors.base import Transport, TransportError, run_batch
from connectors.inventory import Inventory

__all__ = ["each_host", "prune_archives"]


def each_host(inventory: Inventory, names: Sequence[str], work: Callable[[str, Transport], dict[str, Any]], *,
              transport_factory: Callable[[str], Transport] | None = None) -> list[dict[str, Any]]:
    """``work(name, transport)`` for every host named, in parallel; each transport closed afterwards."""
    factory = transport_factory or inventory.transport

    def one(name: str) -> dict[str, Any]:
        transport = factory(name)
        try:
            return work(name, transport)
        finally:
            transport.close()

    if not names:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(inventory.defaults.parallel, len(names)))) as pool:
        return list(pool.map(one, names))


def prune_archives(inventory: Inventory, *, hosts: Sequence[str] | None = None, dry_run: bool = False,
                   transport_factory: Callable[[str], Transport] | None = None) -> dict[str, Any]:
    """Remove (``dry_run``: list) the archives past their retention on every host with a home service."""
    names = [n for n in (hosts or sorted(inventory.hosts))
             if n in inventory.hosts and "home" in inventory.hosts[n].services]

    def prune(name: str, transport: Transport) -> dict[str, Any]:
        connector = inventory.connector(name, "home")
        ops = connector.prune_operations(dry_run=dry_run)  # type: ignore[attr-defined]
        report: dict[str, Any] = {"host": name, "ok": False, "pruned": 0, "files": [], "error": None}
        try:
            batch = run_batch(transport, ops, timeout=inventory.defaults.batch_timeout)
        except TransportError as exc:
            report["error"] = exc.message
            return report
        (result,) = batch.results.values()
        report.update(ok=result.ok, error=result.error, pruned=int(result.facts.get("pruned", "0") or 0),
                      files=result.facts.get("files", "").split())
        return report

    reports = each_host(inventory, names, prune, transport_factory=transport_factory)
    return {"dry_run": dry_run, "ok": all(r["ok"] for r in reports), "hosts": reports}
