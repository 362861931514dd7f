"""Fixtures for the agent tests: a migrated store on each backend (tests/backends.py), one on SQLite only
(for what is about SQLite itself, or too slow to run twice), and the sample policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store.db import Store, open_store
from policy import load_policy
from policy.loader import PolicySet
from tests.backends import sqlite_url
from tests.scenarios.harness import POLICY


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(sqlite_url(tmp_path))
    yield s
    s.close()


@pytest.fixture
def policy() -> PolicySet:
    return load_policy(POLICY.replace("{resume}", "true"), "policy.yaml")
