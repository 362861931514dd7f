"""The local transport: runs batches with ``sh -s`` on this machine (the demo fleet, tests)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from connectors.base import ScriptOutput, TransportError

__all__ = ["LocalTransport"]


class LocalTransport:
    """Runs scripts locally; ``host`` names the host it stands for in results."""

    def __init__(self, host: str, *, env: dict[str, str] | None = None) -> None:
        self.host = host
        self._env = env

    def run_script(self, script: str, *, timeout: float | None = None) -> ScriptOutput:
        env = None if self._env is None else {**os.environ, **self._env}
        try:
            proc = subprocess.run(
                ["sh", "-s"], input=script.encode(), capture_output=True, timeout=timeout, env=env, check=False,
                start_new_session=True,  # a signal to the agent's process group must not cut a batch short
            )
        except subprocess.TimeoutExpired as exc:
            raise TransportError(self.host, f"script timed out after {timeout}s", transient=True) from exc
        return ScriptOutput(proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"),
                            proc.returncode)

    def put(self, path: str, data: bytes, *, mode: int = 0o600) -> None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.arrears-tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def get(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def close(self) -> None:
        return None
