"""The daemon loop: one tick every interval, one instance per database, graceful stop on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from agent.metrics import Metrics

__all__ = ["JsonFormatter", "run_daemon"]

log = logging.getLogger("arrears.daemon")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def run_daemon(
    tick: Callable[[threading.Event], Mapping[str, Any]],
    *,
    interval: float,
    metrics: Metrics,
    clock: Callable[[], datetime],
    stop: threading.Event | None = None,
    max_ticks: int | None = None,
) -> int:
    """Run ``tick(stop)`` every ``interval`` seconds until SIGTERM/SIGINT (or ``max_ticks``); SIGUSR1
    runs the next tick at once (a payment recorded with ``--now``). ``clock`` (the CLI's) stamps the health
    document and the last-tick metric; ``tick`` reads its own ``now`` from the same clock.

    A signal sets ``stop``: the tick in flight sees it, finishes the host batches it has started and
    claims nothing new; the loop then exits with status 0.
    """
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    wake = threading.Event()

    def on_wake(_signum: int, _frame: FrameType | None) -> None:
        wake.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_wake)
    ticks = 0
    try:
        metrics.set_health(clock(), status="ok", pid=os.getpid())
        while not stop.is_set():
            started = time.monotonic()
            try:
                with metrics.tick_seconds.time():
                    summary = dict(tick(stop))
                metrics.ticks.labels("ok").inc()
                finished = clock()
                metrics.last_tick.set(finished.timestamp())
                metrics.set_health(finished, status="ok", last_tick=summary)
                log.info("tick", extra={"fields": summary})
            except Exception as exc:  # one bad tick must not end the daemon; it is logged and retried
                metrics.ticks.labels("error").inc()
                metrics.set_health(clock(), status="degraded", last_error=str(exc))
                log.exception("tick failed")
            ticks += 1
            if max_ticks is not None and ticks >= max_ticks:
                break
            deadline = started + interval
            while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
                stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            wake.clear()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        metrics.set_health(clock(), status="stopped")
    log.info("stopped", extra={"fields": {"ticks": ticks}})
    return 0
