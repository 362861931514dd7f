"""``arrears daemon``: a tick every interval, metrics and health on loopback, graceful stop on SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from agent.cli.app import CliError, api, option_names, wall_clock
from agent.cli.run import name_option
from agent.cli.serve import api_options, listen_from
from agent.daemon import JsonFormatter, run_daemon
from agent.lock import DAEMON
from agent.metrics import Metrics, serve

__all__ = ["daemon"]

log = logging.getLogger("arrears.daemon")


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("arrears")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _count(metrics: Metrics, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Feed a run's summary into the metrics; return the compact line that is logged."""
    x = summary["executor"]
    for taken in x["taken"]:
        metrics.measures.labels(taken["action"]).inc()
    metrics.jobs.labels("any", "done").inc(x["done"])
    metrics.jobs.labels("any", "retrying").inc(x["retrying"])
    metrics.jobs.labels("any", "failed").inc(x["failed"])
    return {"due_accounts": summary["accounts"], "measures_queued": len(summary["measures"]),
            "taken": len(x["taken"]), "jobs_done": x["done"], "jobs_retrying": x["retrying"],
            "jobs_failed": x["failed"], "reclaimed": x["reclaimed"], "notices_sent": x["notices_sent"],
            "errors": [*summary["errors"], *x["errors"]][:20]}


@click.command("daemon")
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=300.0, show_default=True,
              help="seconds between ticks")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="serve /metrics and /healthz on this loopback port")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="loopback address to listen on")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--prune-every", type=click.FloatRange(0), default=24.0, show_default=True, metavar="HOURS",
              help="remove archives past their retention this often (0: never; see `arrears hosts prune`)")
@api_options("--api", None)
@click.option("--max-ticks", type=click.IntRange(1), default=None, hidden=True)
@name_option
@click.pass_context
def daemon(ctx: click.Context, interval: float, metrics_port: int | None, metrics_host: str, log_level: str,
           prune_every: float, listen: str | None, tls_cert: Path | None, tls_key: Path | None, behind_proxy: bool,
           max_ticks: int | None, name: str | None) -> None:
    """Run a tick every INTERVAL seconds until SIGTERM; one daemon per SQLite database, any number per
    PostgreSQL database (one per --name; see `arrears agents` and docs/scale.md).

    SIGTERM lets the tick in flight finish its host batches, then the daemon exits. SIGUSR1 (sent by
    `payment --now` and `ledger import --now`) runs the next tick at once. With --api HOST:PORT the same
    process serves the HTTP API (as `arrears serve` does); a payment posted with `now` wakes its tick.
    """
    from connectors.maintenance import prune_archives
    from connectors.runner import InventoryFleet

    svc, _ = api(ctx)
    where = listen_from(listen, tls_cert, tls_key, behind_proxy) if listen is not None else None
    _setup_logging(log_level)
    svc.check()  # policy, templates and inventory: a mistake stops the daemon before it starts
    inventory = svc.inventory
    fleet = svc.fleet = InventoryFleet(inventory) if inventory is not None else None
    server = None
    http: Any = None
    # a wake-up (SIGUSR1) that comes before the loop listens must not end the daemon: ignored until then
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with option_names(name="--name"), svc.lock(role=DAEMON, name=name) as agent:
            metrics = Metrics(agent.name)
            if metrics_port is not None:
                try:
                    server = serve(metrics, metrics_host, metrics_port)
                except (OSError, ValueError) as exc:
                    raise CliError(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from None
            if where is not None:
                from agent.api.app import create_app
                from agent.api.server import ListenError, background
                from agent.api.server import server as api_server
                from agent.service import Arrears

                # the API's own Python API on the real clock (the command's stands at its start); its
                # "now" wakes this daemon as it wakes any other
                web = Arrears(svc.config)
                http = api_server(create_app(web), where, log_level=log_level)
                try:
                    background(http)
                except ListenError as exc:
                    raise CliError(str(exc)) from None
            log.info("started", extra={"fields": {"agent": agent.name, "interval": interval,
                                                  "database": svc.config.db_url,
                                                  "metrics": f"{metrics_host}:{metrics_port}" if server else None,
                                                  "api": where.url if where is not None else None}})

            pruned_at: list[float] = []

            def tick(stop: threading.Event) -> Mapping[str, Any]:
                agent.verify()  # a lock lost with its database session is taken again, or no work is done
                summary = svc.run(now=wall_clock(), agent=agent, stop=stop).to_json()
                backlog = svc.backlog()
                metrics.pending_jobs.set(backlog.pending_jobs)
                metrics.notices_failed.set(backlog.failed_notices)
                line = _count(metrics, summary)
                if inventory is not None and prune_every and not stop.is_set() and (
                        not pruned_at or time.monotonic() - pruned_at[-1] >= prune_every * 3600):
                    pruned_at.append(time.monotonic())
                    report = prune_archives(inventory)
                    line["archives_pruned"] = sum(h["pruned"] for h in report["hosts"])
                    line["errors"] += [f"prune on {h['host']}: {h['error']}" for h in report["hosts"] if not h["ok"]]
                return line

            run_daemon(tick, interval=interval, metrics=metrics, clock=wall_clock, max_ticks=max_ticks)
    finally:
        if http is not None:
            http.should_exit = True
            web.close()
        if server is not None:
            server.shutdown()
            server.server_close()
        if fleet is not None:
            fleet.close()
