"""Generated operations and batch scripts, without a host: each case of tests/connectors/cases/*.yaml (a
backend's settings, an action and its inputs) -> the operations it generates, and its whole batch script
is valid POSIX sh (``sh -n``) that ShellCheck finds no warning in. Runs without root in a few seconds."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.base import build_script
from connectors.registry import connector_for
from tests.servers.base import require_binary

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))
# SC2317: functions reached only through a call by name (operations, handlers) look unreachable;
# SC3013: ``-nt`` is not in POSIX, but dash, bash and busybox sh all have it
SHELLCHECK = ["shellcheck", "--shell=sh", "--severity=warning", "--exclude=SC2317,SC3013", "-"]


def _cases() -> list[Any]:
    out = []
    for file in CASES:
        for n, case in enumerate(yaml.safe_load(file.read_text())):
            out.append(pytest.param(case, id=f"{file.stem}-{n}-{case['backend']}-{case['action']}"))
    return out


def _script(case: dict[str, Any]) -> tuple[list[Any], str]:
    conn = connector_for(case["service"], case["backend"], case["settings"], "case-host")
    ops = conn.operations(case["action"], case["account"], case["resource"])
    return ops, build_script(ops, conn.handlers(), state_dir="/var/lib/arrears")


@pytest.mark.parametrize("case", _cases())
def test_a_case_generates_its_operations(case: dict[str, Any]) -> None:
    ops, _ = _script(case)
    got = [{"id": op.id, "kind": op.kind, "handlers": list(op.handlers), **({"commit": op.commit} if op.commit else {})}
           for op in ops]
    assert got == case["operations"]
    text = "\n".join(op.script for op in ops)
    for needle in case.get("contains", []):
        assert needle in text, needle
    for word in case.get("absent", []):
        assert word not in text, word


@pytest.mark.parametrize("case", _cases())
def test_a_case_batch_script_is_valid_posix_sh(case: dict[str, Any]) -> None:
    _, script = _script(case)
    syntax = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    require_binary("shellcheck")
    lint = subprocess.run(SHELLCHECK, input=script, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout
