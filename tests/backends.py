"""The store's two backends as parametrised fixtures: a test that takes one of them runs once on SQLite and
once on the test cluster's PostgreSQL (tests/servers/postgres.py); the PostgreSQL leg is marked ``servers``
(it needs the real server, and never skips in CI).

- ``new_database``: makes a new database each time it is called and returns its URL. On SQLite a file in a
  folder of its own under the test's temporary folder (made by the first open); on PostgreSQL a database
  of its own, already at the newest schema, dropped after the test.
- ``db_url``: one such database.
- ``empty_db_url``: a database with nothing in it on both (what the migrations start from).

:func:`query` reads a database directly, whichever it is (the harnesses' look at what no command shows).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

__all__ = ["BACKENDS", "db_url", "dump", "empty_db_url", "new_database", "query", "sqlite_url"]

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)]


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'arrears.db'}"


def query(url: str, sql: str, **params: object) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (``:name`` parameters) on the database at ``url``, on a connection of its own."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (to prove that a refused command wrote nothing)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            return {t: sorted(map(tuple, conn.execute(text(f'select * from "{t}"'))), key=repr) for t in tables}
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    numbers = itertools.count(1)
    if request.param == "sqlite":
        def make_sqlite() -> str:
            folder = tmp_path / f"db{next(numbers)}"
            folder.mkdir()
            return sqlite_url(folder)

        yield make_sqlite
        return
    cluster = request.getfixturevalue("pg_cluster")
    made: list[str] = []

    def make_postgresql() -> str:
        made.append(cluster.create_database(migrated=True))
        url: str = cluster.url(made[-1])
        return url

    yield make_postgresql
    for name in made:
        cluster.drop_database(name)


@pytest.fixture
def db_url(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("pg_url")
    return url
