"""Start-up: the CPU time of ``arrears --help`` and of ``arrears plan`` on a small database, beside the floor
(``python -c pass``), the median of N runs each.

    python bench/startup.py                        # this checkout, 11 runs of each
    python bench/startup.py --runs 21
    python bench/startup.py --compare /tmp/main    # another checkout of arrears beside this one, interleaved

Each command runs as the installed ``arrears`` console script does (``from agent.cli import main``) in a
child process, in the virtualenv of this checkout; its CPU time (user + system) comes from ``wait4``. The
small database is ``arrears init``'s sample (six accounts) with its accounts, ledger and invoices imported;
``plan`` runs at a moment some of them are due. With ``--compare DIR`` the same commands run on DIR's code
(``PYTHONPATH=DIR``, same interpreter and libraries) in turn with this checkout's, so both see the same load.

Each checkout's bytecode is compiled first (``compileall``): start-up is measured as installed, where the
``.pyc`` files exist (without them, with ``PYTHONDONTWRITEBYTECODE`` set on an editable install, every run
would compile the project's own sources again).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AT = "2026-03-10T12:00:00Z"  # some of the sample's accounts are due then
ENTRY = "import sys; sys.argv[0] = 'arrears'; from agent.cli import main; main()"  # what the console script runs


def cpu(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """The CPU time (user + system) of ``argv`` run to its end; it must succeed."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err.decode(errors='replace')[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def small_database(folder: Path, env: dict[str, str]) -> None:
    """``arrears init``'s sample configuration in ``folder``, its data imported."""
    def arrears(*args: str) -> None:
        subprocess.run([sys.executable, "-c", ENTRY, "--config", str(folder), *args], env=env, check=True,
                       stdout=subprocess.DEVNULL)

    arrears("init")
    for kind in ("accounts", "ledger", "invoices"):
        arrears(kind, "import", str(folder / f"{kind}.jsonl"))


def compile_bytecode(checkout: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "agent", "connectors", "policy"], cwd=checkout,
                   env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="runs of each command (the median is shown)")
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR",
                        help="another checkout of arrears, measured in turn with this one")
    args = parser.parse_args()
    checkouts = {"this": ROOT} | ({"compare": args.compare.resolve()} if args.compare else {})
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    base_env["PYTHONDONTWRITEBYTECODE"] = "1"  # every run alike: nothing is written between runs
    for checkout in checkouts.values():
        compile_bytecode(checkout)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "small"
        small_database(folder, {**base_env, "PYTHONPATH": str(ROOT)})
        plan = ["--config", str(folder), "plan", "--at", AT]
        commands = {
            "floor: python -c pass": ["-c", "pass"],
            "arrears --help": ["-c", ENTRY, "--help"],
            "arrears plan (small database)": ["-c", ENTRY, *plan],
            "arrears plan --json (small database)": ["-c", ENTRY, *plan, "--json"],
        }
        runs: dict[tuple[str, str], list[float]] = {(c, k): [] for c in commands for k in checkouts}
        load = os.getloadavg()[0]
        for _ in range(args.runs):
            for name, argv in commands.items():
                for key, checkout in checkouts.items():
                    env = {**base_env, "PYTHONPATH": str(checkout)}
                    runs[name, key].append(cpu([sys.executable, *argv], env, Path(tmp)))
    print(f"cores: {os.cpu_count()}, load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"python {sys.version.split()[0]}; CPU seconds (user + system), median of {args.runs}"
          + (f"; compare: {checkouts['compare']}" if args.compare else ""))
    print(f"{'command':<42}" + "".join(f"{key:>10}" for key in checkouts))
    for name in commands:
        print(f"{name:<42}" + "".join(f"{statistics.median(runs[name, key]):10.3f}" for key in checkouts))


if __name__ == "__main__":
    main()
