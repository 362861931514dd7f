"""Starting and stopping real daemons for tests: free ports, readiness polling, log capture.

A test that needs a server fails (never skips) in CI when the server is missing; on a developer's
machine it skips with the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

__all__ = ["Daemon", "free_port", "in_ci", "require_binary", "wait_for", "wait_port"]

INSTALL_HINT = "run: bash scripts/install-test-deps.sh"


def in_ci() -> bool:
    """Whether the suite runs in CI (``CI`` set to anything but empty, 0, false or no): there a skip is an error."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_binary(*names: str) -> None:
    """Fail in CI, skip elsewhere, when a server binary the test needs is not installed."""
    missing = [n for n in names if shutil.which(n) is None and not Path(n).exists()]
    if not missing:
        return
    message = f"missing server binaries {missing}; {INSTALL_HINT}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout: float = 20.0, what: str = "condition",
             log: Path | None = None) -> None:
    """Poll ``check`` until it is true; fail with ``what`` and the log's tail when it never is."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{tail}")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port: int, *, timeout: float = 20.0, log: Path | None = None) -> None:
    wait_for(lambda: _port_open(port), timeout=timeout, what=f"port {port} to accept connections", log=log)


class Daemon:
    """A foreground daemon owned by the test: started with ``argv``, ready when ``ports`` accept."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path, ports: Sequence[int] = (),
                 env: dict[str, str] | None = None, ready: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.ports = list(ports)
        self.env = env
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=None if self.env is None else {**os.environ, **self.env},
                                     start_new_session=True)
        out.close()
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            return all(_port_open(p) for p in self.ports) and (self.ready is None or self.ready())

        wait_for(up, timeout=timeout, what=f"{self.name} to be ready", log=self.log)
        return self

    def stop(self) -> None:
        """Stop the daemon and everything it started: its whole session's process group (a wrapper such
        as ``apache2ctl`` does not exec the server, so stopping the wrapper alone would leave it running)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self._group_alive():  # what it started ends after it (apache's children, ...)
            if time.monotonic() > deadline:
                self._signal_group(signal.SIGKILL)
                break
            time.sleep(0.02)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # start_new_session: the group's id is the daemon's pid

    def _group_alive(self) -> bool:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True
