"""One agent of bench/agents_speed.py: it starts, registers and says ``ready``, waits for the file GO,
runs one tick at AT and prints how long the tick took (so process start-up is not measured).

    _agent.py CONFIG DB NAME AT GO
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.service import Arrears


def main() -> None:
    config, db, name, at, go = sys.argv[1:]
    with Arrears.open(config, db=db) as svc:
        svc.check()
        with svc.lock(name=name) as agent:
            print("ready", flush=True)
            while not Path(go).exists():
                time.sleep(0.005)
            started = time.monotonic()
            svc.run(now=datetime.fromisoformat(at), agent=agent)
            print(f"{time.monotonic() - started:.3f}", flush=True)


if __name__ == "__main__":
    main()
