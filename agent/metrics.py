"""Prometheus metrics and the health endpoint of the daemon, served on a loopback port."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "serve"]


class Metrics:
    """The daemon's counters; one registry per daemon, so tests can run several side by side."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ticks = Counter("arrears_ticks", "Ticks run", ["outcome"], registry=self.registry)
        self.tick_seconds = Histogram("arrears_tick_seconds", "Duration of a tick", registry=self.registry)
        self.measures = Counter("arrears_measures", "Measures taken", ["action"], registry=self.registry)
        self.jobs = Counter("arrears_jobs", "Outbox jobs finished", ["kind", "outcome"], registry=self.registry)
        self.pending_jobs = Gauge("arrears_pending_jobs", "Outbox jobs waiting", registry=self.registry)
        self.notices_failed = Gauge("arrears_notices_failed_permanently",
                                    "Notices that failed for good (refused permanently; see arrears status)",
                                    registry=self.registry)
        self.last_tick = Gauge("arrears_last_tick_timestamp_seconds", "End of the last tick", registry=self.registry)
        self.health: dict[str, object] = {"status": "starting"}
        self._lock = threading.Lock()

    def set_health(self, at: datetime, **fields: object) -> None:
        """Update the health document; ``at`` is the daemon's clock (handed down by the CLI)."""
        with self._lock:
            self.health = {**self.health, **fields, "updated_at": at.isoformat()}

    def health_json(self) -> bytes:
        with self._lock:
            return json.dumps(self.health).encode()


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
