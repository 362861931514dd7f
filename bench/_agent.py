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

from agent.cli.app import CliState
from agent.cli.run import agent_lock, check_config, run_once
from agent.config import discover


def main() -> None:
    config, db, name, at, go = sys.argv[1:]
    state = CliState(config=discover(config, db))
    check_config(state)
    with agent_lock(state, name=name) as agent:
        print("ready", flush=True)
        while not Path(go).exists():
            time.sleep(0.005)
        started = time.monotonic()
        run_once(state, datetime.fromisoformat(at), agent=agent)
        print(f"{time.monotonic() - started:.3f}", flush=True)
    state.close()


if __name__ == "__main__":
    main()
