"""A real OpenSSH server for tests: its own host key, key-only logins, verbose log to count connections.

Fixtures (registered for the whole suite through ``pytest_plugins`` in tests/conftest.py):

``sshd``           module-scoped :class:`SshdServer` on a free loopback port.
``ssh_transport``  a connected :class:`connectors.ssh.SshTransport` as root on that server.

Keys for other unix users: ``sshd.add_user_key("alice")`` returns a private key path that logs in as
``alice`` (the user must exist, and with ``UsePAM no`` its password field must not be locked:
create it with ``useradd -p '*' ...``, not the default ``!``).
``sshd.settings(user=..., key=...)`` builds transport settings.
``start_sshd(workdir, wrapper=[...])`` starts sshd through a wrapper command, e.g.
``["unshare", "--mount", "--propagation", "private"]`` for a server (and its sessions) in a mount
namespace of its own: ``nsenter --target <server.daemon.proc.pid> --mount mount ...`` then mounts
where only its sessions see it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from connectors.ssh import SshSettings, SshTransport
from tests.servers.base import Daemon, free_port, require_binary

__all__ = ["SshdServer", "ssh_transport", "sshd", "start_sshd"]

SSHD = "/usr/sbin/sshd"


def _keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


class SshdServer:
    """A running test sshd. ``connections()`` counts authenticated logins from its VERBOSE log."""

    def __init__(self, workdir: Path, *, extra_config: str = "", wrapper: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log = workdir / "sshd.log"
        self.host_key = _keygen(workdir / "ssh_host_ed25519_key", "arrears-test-host")
        # sshd reads authorized keys as the target user, so this folder must be world-traversable
        self.auth_dir = Path(tempfile.mkdtemp(prefix="arrears-sshd-auth-"))
        self.auth_dir.chmod(0o755)
        self.keys_dir = workdir / "keys"
        self.keys_dir.mkdir()
        self.known_hosts = workdir / "known_hosts"
        pub = (workdir / "ssh_host_ed25519_key.pub").read_text().split()
        self.host_key_line = f"[{self.host}]:{self.port} {pub[0]} {pub[1]}"
        self.known_hosts.write_text(self.host_key_line + "\n")
        self.config = workdir / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            "PidFile none\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            f"AuthorizedKeysFile {self.auth_dir}/%u.pub\n"
            "LogLevel VERBOSE\n"
            "Subsystem sftp internal-sftp\n"
            f"{extra_config}"
        )
        self.client_key = self.add_user_key("root")
        self.daemon = Daemon("sshd", [*wrapper, SSHD, "-D", "-e", "-f", str(self.config)], log=self.log,
                             ports=[self.port])

    def start(self) -> SshdServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True, capture_output=True)
        self.daemon.start()
        return self

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.auth_dir, ignore_errors=True)

    def add_user_key(self, user: str) -> Path:
        """A new private key that logs in as unix ``user`` (appended to that user's authorized keys)."""
        n = len(list(self.keys_dir.glob(f"{user}.*"))) // 2
        key = _keygen(self.keys_dir / f"{user}.{n}", f"arrears-test-{user}")
        authorized = self.auth_dir / f"{user}.pub"
        with authorized.open("a") as fh:
            fh.write((key.with_suffix(key.suffix + ".pub")).read_text())
        authorized.chmod(0o644)
        return key

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connections(self, user: str | None = None) -> int:
        """Authenticated SSH connections so far (``Accepted publickey`` lines), optionally for one user."""
        needle = "Accepted publickey for " + (f"{user} " if user else "")
        return sum(1 for line in self.log_text().splitlines() if needle in line)

    def settings(self, *, user: str = "root", key: Path | str | None = None, known_hosts: Path | str | None = None,
                 **overrides: object) -> SshSettings:
        values: dict[str, object] = {
            "address": self.host,
            "port": self.port,
            "user": user,
            "key": str(key or self.client_key),
            "known_hosts": str(known_hosts or self.known_hosts),
            "connect_timeout": 5.0,
            "retries": 2,
            "retry_max_time": 5.0,
            "retry_initial_wait": 0.05,
            "retry_max_wait": 0.2,
        }
        values.update(overrides)
        return SshSettings(**values)  # type: ignore[arg-type]

    def transport(self, host: str = "sshd-test", **kwargs: object) -> SshTransport:
        return SshTransport(host, self.settings(**kwargs))  # type: ignore[arg-type]


def start_sshd(workdir: Path, *, extra_config: str = "", wrapper: Sequence[str] = ()) -> SshdServer:
    """Start a test sshd in ``workdir`` (for modules that need their own configuration), through
    ``wrapper`` (a command that execs its arguments) when given."""
    require_binary(SSHD, "ssh-keygen", *wrapper[:1])
    return SshdServer(workdir, extra_config=extra_config, wrapper=wrapper).start()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ssh_transport(sshd: SshdServer) -> Iterator[SshTransport]:
    transport = sshd.transport()
    transport.connect()
    try:
        yield transport
    finally:
        transport.close()



def start_sshd_at(workdir: Path, address: str, netns: Sequence[str]) -> SshdServer:
    """A test sshd listening on ``address`` inside another network namespace (``netns``: the command prefix
    that enters it, e.g. :meth:`tests.servers.netns.Namespaces.exec`). Its known_hosts names ``address``;
    it is ready when its log says it listens there (this process may have no route to it)."""
    require_binary(SSHD, "ssh-keygen", "ip")
    server = SshdServer(workdir, extra_config=f"ListenAddress {address}\n", wrapper=netns)
    server.host = address
    pub = (workdir / "ssh_host_ed25519_key.pub").read_text().split()
    server.host_key_line = f"[{address}]:{server.port} {pub[0]} {pub[1]}"
    server.known_hosts.write_text(server.host_key_line + "\n")
    server.daemon.ports = []
    server.daemon.ready = lambda: f"Server listening on {address} port {server.port}" in server.log_text()
    return server.start()
