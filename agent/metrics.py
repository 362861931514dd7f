"""Prometheus metrics and the health endpoint of the daemon, served on a loopback port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics", "serve"]


class Metrics:
    """The daemon's counters; one registry per daemon, so tests can run several side by side. Every
    sample carries the agent's name as a label (``agent="NAME"``), so the metrics of several
    agents sharing a database stand side by side wherever they are scraped."""

    def __init__(self, agent: str = "") -> None:
        self.agent = agent
        own = CollectorRegistry()  # the metrics themselves; ``registry`` serves them with the agent's name
        self.registry = CollectorRegistry()
        self.registry.register(_Named(own, agent))
        self.ticks = Counter("arrears_ticks", "Ticks run", ["outcome"], registry=own)
        self.tick_seconds = Histogram("arrears_tick_seconds", "Duration of a tick", registry=own)
        self.measures = Counter("arrears_measures", "Measures taken", ["action"], registry=own)
        self.jobs = Counter("arrears_jobs", "Outbox jobs finished", ["kind", "outcome"], registry=own)
        self.pending_jobs = Gauge("arrears_pending_jobs", "Outbox jobs waiting", registry=own)
        self.notices_failed = Gauge("arrears_notices_failed_permanently",
                                    "Notices that failed for good (refused permanently; see arrears status)",
                                    registry=own)
        self.last_tick = Gauge("arrears_last_tick_timestamp_seconds", "End of the last tick", registry=own)
        self.health: dict[str, object] = {"status": "starting"}
        self._lock = threading.Lock()

    def set_health(self, at: datetime, **fields: object) -> None:
        """Update the health document; ``at`` is the daemon's clock (handed down by the CLI)."""
        with self._lock:
            self.health = {**self.health, **fields, "updated_at": at.isoformat()}

    def health_json(self) -> bytes:
        with self._lock:
            return json.dumps(self.health).encode()


class _Named(Collector):
    """The metrics of ``registry``, each sample labelled with the agent's name."""

    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.inner = registry
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            named = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                named.add_sample(sample.name, {"agent": self.agent, **sample.labels}, sample.value,
                                 sample.timestamp, sample.exemplar)
            yield named


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` in a background thread; returns the server (``shutdown()``)."""
    if host not in {"127.0.0.1", "::1", "localhost"}:
        raise ValueError(f"metrics listen address {host!r} must be loopback")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
            elif self.path in {"/healthz", "/health"}:
                body, ctype = metrics.health_json(), "application/json"
                code = 200 if metrics.health.get("status") in {"ok", "starting"} else 503
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="arrears-metrics", daemon=True).start()
    return server
