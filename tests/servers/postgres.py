"""A throwaway PostgreSQL cluster for the tests and the benchmarks: ``initdb`` under a temporary folder,
started with ``pg_ctl`` on a high port, ready when ``pg_isready`` says so; never the system service.

It listens on a Unix socket only (in its own folder), so every test module reaches it whatever network
namespace the module runs in, and two clusters (two test runs, a test run and a benchmark) never meet.
One cluster serves the whole session; each test gets a database of its own, dropped after the test:
``pg_url`` is a new, empty one (what a first ``arrears`` run on PostgreSQL sees), and
``PgCluster.create_database(migrated=True)`` (tests/backends.py) makes one already at the newest schema,
copied from a template database migrated once per session (``CREATE DATABASE ... TEMPLATE`` is much
faster than migrating each time).

A benchmark starts one of its own with :func:`throwaway_cluster` (``bench/plan_scale.py --postgres``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers.base import require_binary, wait_for

__all__ = ["PORT", "PgCluster", "pg_cluster", "pg_url", "throwaway_cluster"]

PORT = 55432
TEMPLATE = "arrears_template"


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


class PgCluster:
    """One cluster under ``root``: its data folder, its log and its socket, owned by the user postgres."""

    def __init__(self, root: Path, *, port: int = PORT, durable: bool = False) -> None:
        self.bindir = _bindir()
        self.root = root
        self.port = port
        self.durable = durable  # fsync and synchronous commit as a production server has them (benchmarks)
        self.data = root / "data"
        self.log = root / "postgres.log"
        self._admin: Any = None  # an autocommit connection to the database "postgres", opened on first use
        self._template = False

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bindir / tool), *args], user="postgres", group="postgres",
                              capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> PgCluster:
        shutil.chown(self.root, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "arrears", "-A", "trust", "-E", "UTF8",
                 *(() if self.durable else ("--no-sync",)))
        options = f"-k {self.root} -p {self.port} -c listen_addresses='' -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-W", "start")
        wait_for(lambda: self._pg("pg_isready", "-h", str(self.root), "-p", str(self.port),
                                  check=False).returncode == 0,
                 timeout=60, what="PostgreSQL to accept connections", log=self.log)
        return self

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-W", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://arrears@/{database}?host={self.root}&port={self.port}"

    def _execute(self, sql: str) -> None:
        import psycopg

        if self._admin is None:
            self._admin = psycopg.connect(host=str(self.root), port=self.port, user="arrears", dbname="postgres",
                                          autocommit=True)
        self._admin.execute(sql)

    def create_database(self, *, migrated: bool = False) -> str:
        """A new database: empty, or (``migrated``) at the newest schema, copied from the template."""
        name = "t_" + uuid.uuid4().hex[:12]
        if migrated and not self._template:
            self._make_template()
        # FILE_COPY: a third faster than the default WAL_LOG for a database as small as the template
        self._execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY' if migrated else ""))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the sessions still open on it (an engine a test did not dispose of)."""
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _make_template(self) -> None:
        from agent.store.db import open_store

        self._execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{TEMPLATE}"')
        open_store(self.url(TEMPLATE)).close()  # no session may stay on a template while it is copied
        self._template = True


@contextmanager
def throwaway_cluster(*, port: int = PORT, durable: bool = False) -> Iterator[PgCluster]:
    """A cluster in a new temporary folder, stopped and removed when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="arrears-pg-"))
    cluster = PgCluster(root, port=port, durable=durable)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    require_binary(str(_bindir() / "initdb"), str(_bindir() / "pg_ctl"))
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a new, empty database on the test cluster."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)
