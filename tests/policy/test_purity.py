"""policy/ stays pure: no I/O or clock imports, no reading the current time."""

from __future__ import annotations

import ast
from pathlib import Path

import policy

FORBIDDEN_MODULES = {"os", "pathlib", "socket", "sqlalchemy", "time", "subprocess", "shutil", "io", "urllib",
                     "http", "requests", "httpx", "paramiko", "fabric", "sqlite3", "logging", "random"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "open"}


def sources() -> list[Path]:
    return sorted(Path(policy.__file__).parent.glob("*.py"))


def test_no_io_imports_and_no_clock_reads() -> None:
    assert len(sources()) >= 5
    for path in sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                assert called not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {called}()"


def test_public_api_is_exported() -> None:
    for name in ("load_policy", "PolicySet", "PolicyError", "evaluate", "forecast", "can_spend", "SpendVerdict",
                 "explain", "balance_at", "ForecastItem"):
        assert name in policy.__all__ and hasattr(policy, name)
