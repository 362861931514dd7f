"""The crash window: a batch stopped right after its changes reached the disk, and its agent killed.

:func:`stop_after` adds a hook right after the last operation's change reached the disk: after its own
script, or, when it names a commit, after that commit's pass over the files. There the batch's shell writes
its pid to ``pidfile`` and stops itself (SIGSTOP), before that operation's result line and before any handler.
:func:`crash` runs a batch over SSH from an agent process of its own, waits until the batch's shell has
stopped, SIGKILLs the agent, then lets the batch go on (``then="cont"``: it finds its connection gone)
or kills it (``then="kill"``), and waits until the batch's shell is gone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from connectors.base import Handler, Operation
from connectors.ssh import SshSettings
from tests.servers.base import wait_for

__all__ = ["crash", "stop_after"]

_AGENT = """
import json, sys
from connectors.ssh import SshSettings, SshTransport
SshTransport("crash-test", SshSettings(**json.loads(sys.argv[1]))).run_script(open(sys.argv[2]).read(), timeout=300)
"""


def stop_after(ops: Sequence[Operation], handlers: Sequence[Handler],
               pidfile: Path) -> tuple[list[Operation], list[Handler]]:
    """``ops`` and ``handlers`` with the batch stopping itself right after the last operation made its change."""
    *rest, last = ops
    hook = f"\nprintf '%s' $$ > {pidfile}.tmp; mv -f {pidfile}.tmp {pidfile}; kill -STOP $$\n"
    if last.commit:
        return list(ops), [Handler(h.name, h.script + hook, h.commit) if h.name == last.commit else h
                           for h in handlers]
    return [*rest, dataclasses.replace(last, script=last.script + hook)], list(handlers)


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def crash(settings: SshSettings, script: str, pidfile: Path, *, then: Literal["cont", "kill"]) -> None:
    batch = pidfile.with_name("batch.sh")
    batch.write_text(script)
    agent = subprocess.Popen([sys.executable, "-c", _AGENT, json.dumps(dataclasses.asdict(settings)), str(batch)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        wait_for(lambda: pidfile.exists() and _state(int(pidfile.read_text())) == "T", timeout=60,
                 what="the batch to stop after its change")
    finally:
        agent.kill()
        agent.wait(timeout=10)
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGCONT if then == "cont" else signal.SIGKILL)
    wait_for(lambda: _state(pid) in (None, "Z"), timeout=30, what="the stopped batch to end")
