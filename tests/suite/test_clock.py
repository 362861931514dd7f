"""One clock: arrears reads the real time in one function (``agent.service.values.wall_clock``: a call's default
``now``, the CLI's without ``--at``, the daemon's) and hands ``now`` down;
nothing else in agent/, connectors/ or policy/ reads a clock, so ``--at`` simulates every decision, stamp and
date exactly (and ``make test`` runs the server-less suite five years ahead under libfaketime to prove it).

Durations are not the clock: ``time.monotonic()`` and ``time.perf_counter()`` (timeouts, latencies) are allowed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "connectors", "policy")

# the one read of the real clock, and what the hosts themselves do with their own clock
ALLOWED = {
    ("agent/service/values.py", "wall_clock", "datetime.now"),
    # agents' leases and heartbeats (liveness, never a decision): the database's clock; SQLite's is this machine's
    ("agent/agents.py", "db_clock", "datetime.now"),
    # the host stamps the name of an archive it writes with its own clock; nothing decides by it
    ("connectors/archive.py", "", "shell date"),
    # pruning compares archive files' ages with the host's clock, on the host (retention_days)
    ("connectors/archive.py", "", "shell find -mmin"),
}

_DATE_TYPES = {"datetime", "date"}
_CLOCK_OF_DATE = {"now", "utcnow", "today"}
_CLOCK_OF_TIME = {"time", "time_ns", "localtime", "gmtime", "ctime", "asctime", "strftime"}
_CLOCK_OF_EMAIL = {"formatdate", "localtime"}
_FILE_TIMES = {"st_mtime", "st_atime", "st_ctime", "st_mtime_ns", "st_atime_ns", "st_ctime_ns", "getmtime",
               "getatime", "getctime"}
_SQL_CLOCK = {"now", "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime",
              "sysdate"}
_SQL_TEXT = re.compile(r"current_timestamp|current_date|current_time\b|\bnow\(\)|(date|datetime|strftime)\([^)]*'now'",
                       re.IGNORECASE)
_SHELL = {"shell date": re.compile(r"\$\(\s*date(\s|\))|`date(\s|`)"),
          "shell find -mmin": re.compile(r"\s-(mmin|mtime|amin|atime|cmin|ctime|newermt)\s")}
_DEFAULT_KEYWORDS = {"server_default", "onupdate", "server_onupdate"}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str, str]] = []  # (line, enclosing function, what)
        self._function: list[str] = []

    def _add(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), self._function[-1] if self._function else "", what))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._function.append(node.name)
        self.generic_visit(node)
        self._function.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node: ast.Attribute) -> None:
        owner = _name(node.value)
        if node.attr in _CLOCK_OF_DATE and owner in _DATE_TYPES:
            self._add(node, f"{owner}.{node.attr}")
        elif node.attr in _CLOCK_OF_TIME and owner == "time":
            self._add(node, f"time.{node.attr}")
        elif node.attr in _CLOCK_OF_EMAIL and owner == "utils":
            self._add(node, f"email.utils.{node.attr}")
        elif node.attr in _FILE_TIMES:
            self._add(node, f"file time {node.attr}")
        elif node.attr in _SQL_CLOCK and owner == "func":
            self._add(node, f"func.{node.attr}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = {alias.name for alias in node.names}
        clock = {"time": _CLOCK_OF_TIME, "email.utils": _CLOCK_OF_EMAIL, "os.path": _FILE_TIMES}.get(node.module or "")
        for name in sorted(names & (clock or set())):
            self._add(node, f"from {node.module} import {name}")
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg in _DEFAULT_KEYWORDS and re.search(r"now|current|timestamp|localtime", ast.unparse(node.value),
                                                       re.IGNORECASE):
            self._add(node.value, f"{node.arg}={ast.unparse(node.value)}")
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):  # docstrings: prose
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            if _SQL_TEXT.search(node.value):
                self._add(node, "SQL clock")
            for what, pattern in _SHELL.items():
                if pattern.search(node.value):
                    self._add(node, what)
        self.generic_visit(node)


def clock_reads(source: str) -> list[tuple[int, str, str]]:
    finder = _Finder()
    finder.visit(ast.parse(source))
    return finder.found


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_cli_reads_the_real_clock_once_and_nothing_below_it_reads_any() -> None:
    assert len(_sources()) > 40
    seen: set[tuple[str, str, str]] = set()
    unexpected = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for line, function, what in clock_reads(path.read_text(encoding="utf-8")):
            key = (rel, function, what)
            if key in ALLOWED or (rel, "", what) in ALLOWED:
                seen.add(key if key in ALLOWED else (rel, "", what))
            else:
                unexpected.append(f"{rel}:{line}: {what} (in {function or 'module'}): take `now` from the caller")
    assert not unexpected, "\n".join(unexpected)
    assert seen == ALLOWED  # an allowance nobody needs any more goes


@pytest.mark.parametrize("source", [
    "from datetime import datetime\nx = datetime.now()",
    "import datetime\nx = datetime.datetime.utcnow()",
    "from datetime import date\nx = date.today()",
    "import time\nx = time.time()",
    "from time import time as t",
    "import email.utils\nx = email.utils.formatdate()",
    "from dataclasses import dataclass, field\nfrom datetime import datetime\n"
    "@dataclass\nclass A:\n    at: datetime = field(default_factory=datetime.now)",
    "x = path.stat().st_mtime",
    "import os\nx = os.path.getmtime('f')",
    "from sqlalchemy import func\nc = mapped_column(server_default=func.now())",
    "c = Column(DateTime, server_default=text('CURRENT_TIMESTAMP'))",
    "session.execute(text(\"update jobs set claimed_at = datetime('now')\"))",
    "script = 'stamp=$(date -u +%s)'",
])
def test_each_kind_of_clock_read_is_found(source: str) -> None:
    assert clock_reads(source)


@pytest.mark.parametrize("source", [
    "import time\nstart = time.monotonic()",
    "import time\nx = time.perf_counter()",
    "def f(now):\n    return now.date()",
    "x = state.now",
    "from datetime import datetime\nx = datetime.fromisoformat(s)",
])
def test_durations_and_a_handed_down_now_are_not_clock_reads(source: str) -> None:
    assert clock_reads(source) == []
