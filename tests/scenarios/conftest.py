"""Every scenario runs on SQLite and on PostgreSQL: each :class:`~tests.scenarios.harness.Arrears` a test
creates gets a new database from the parametrised ``new_database`` fixture (tests/backends.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.scenarios.harness import Arrears


@pytest.fixture(autouse=True)
def _on_each_backend(new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Arrears, "new_database", staticmethod(new_database))
