"""A throwaway PostgreSQL cluster for the tests: ``initdb`` under a temporary folder, started with
``pg_ctl`` on a high port, ready when ``pg_isready`` says so; never the system service.

It listens on a Unix socket only (in its own folder), so every test module reaches it whatever network
namespace the module runs in. Each test gets a database of its own (``pg_url``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.base import require_binary, wait_for

__all__ = ["PgCluster", "pg_cluster", "pg_url"]

PORT = 55432


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


class PgCluster:
    def __init__(self, root: Path) -> None:
        self.bindir = _bindir()
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bindir / tool), *args], user="postgres", group="postgres",
                              capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> PgCluster:
        shutil.chown(self.root, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "arrears", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = (f"-k {self.root} -p {PORT} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-W", "start")
        wait_for(lambda: self._pg("pg_isready", "-h", str(self.root), "-p", str(PORT), check=False).returncode == 0,
                 timeout=60, what="PostgreSQL to accept connections", log=self.log)
        return self

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-W", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://arrears@/{database}?host={self.root}&port={PORT}"

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self._pg("createdb", "-h", str(self.root), "-p", str(PORT), "-U", "arrears", name)
        return name


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    require_binary(str(_bindir() / "initdb"), str(_bindir() / "pg_ctl"))
    root = Path(tempfile.mkdtemp(prefix="arrears-pg-"))
    cluster = PgCluster(root)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a new, empty database on the test cluster."""
    return pg_cluster.url(pg_cluster.create_database())
