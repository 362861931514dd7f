"""A real ``arrears serve`` (uvicorn on loopback) in a subprocess, with tokens and httpx clients.

:func:`serve` starts it on a configuration folder, waits until it answers, and stops it at the end;
``server.client("billing")`` is an httpx client whose bearer token has those scopes (made with the real
``arrears tokens add``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.servers.base import free_port, wait_for

__all__ = ["ApiServer", "arrears_command", "serve"]


def arrears_command() -> str:
    beside = Path(sys.executable).with_name("arrears")
    found = str(beside) if beside.exists() else shutil.which("arrears")
    assert found is not None, "the arrears command is not installed (pip install -e '.[test]')"
    return found


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("ARREARS_CONFIG", "ARREARS_DB", "ARREARS_DEBUG")}


@dataclass
class ApiServer:
    folder: Path
    url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, *scopes: str, name: str | None = None) -> str:
        """The token called ``name`` (default: its scopes joined by ``-``) with ``scopes``, made once."""
        name = name or "-".join(scopes)
        if name not in self.tokens:
            made = subprocess.run([arrears_command(), "--config", str(self.folder), "tokens", "add", name,
                                   *(a for s in scopes for a in ("--scope", s)), "--json"],
                                  capture_output=True, text=True, env=_env(), check=True, stdin=subprocess.DEVNULL)
            self.tokens[name] = json.loads(made.stdout)["token"]
        return self.tokens[name]

    def client(self, *scopes: str, name: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(*scopes, name=name)}"} if scopes else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@contextmanager
def serve(folder: Path, *, at: str | None = None) -> Iterator[ApiServer]:
    """``arrears serve`` on ``folder`` (clock stood still at ``at`` when given) on a free loopback port."""
    port = free_port()
    log = folder / "serve.log"
    argv = [arrears_command(), "--config", str(folder), "serve", "--listen", f"127.0.0.1:{port}",
            "--log-level", "warning", *(("--at", at) if at else ())]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env(), stdin=subprocess.DEVNULL)
    server = ApiServer(folder, f"http://127.0.0.1:{port}")

    def ready() -> bool:
        assert proc.poll() is None, f"arrears serve exited {proc.returncode}:\n{log.read_text()}"
        try:
            return httpx.get(f"{server.url}/v1/openapi.json", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=30, what="arrears serve to answer", log=log)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
