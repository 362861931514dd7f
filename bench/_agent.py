"""One agent of bench/agents_speed.py: it starts, registers and says ``ready``, waits for the file GO,
runs one tick at AT and prints how long the tick took and the CPU it used: its own, and its children's
(the host batches' shells, ``transport: local``), in seconds. Process start-up is not measured: the
modules a run imports on first use are imported before ``ready``, as a daemon has them after its
first tick.

    _agent.py CONFIG DB NAME AT GO
"""

from __future__ import annotations

import importlib
import resource
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.service import Arrears

WARM = ("agent.actions", "agent.executor", "agent.imports", "agent.notices", "agent.tick", "connectors.runner")


def cpu(who: int) -> float:
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def main() -> None:
    config, db, name, at, go = sys.argv[1:]
    for module in WARM:
        importlib.import_module(module)
    with Arrears.open(config, db=db) as svc:
        svc.check()
        with svc.lock(name=name) as me:
            print("ready", flush=True)
            while not Path(go).exists():
                time.sleep(0.005)
            started, own, children = time.monotonic(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
            svc.run(now=datetime.fromisoformat(at), agent=me)
            print(f"{time.monotonic() - started:.3f} {cpu(resource.RUSAGE_SELF) - own:.3f} "
                  f"{cpu(resource.RUSAGE_CHILDREN) - children:.3f}", flush=True)


if __name__ == "__main__":
    main()
