"""Fixtures for the agent tests: a migrated store in a temporary folder and the sample policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store.db import Store, open_store
from policy import load_policy
from policy.loader import PolicySet
from tests.scenarios.harness import POLICY


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'arrears.db'}")
    yield s
    s.close()


@pytest.fixture
def policy() -> PolicySet:
    return load_policy(POLICY.replace("{resume}", "true"), "policy.yaml")
