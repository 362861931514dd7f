"""The SSH transport against a real sshd: verified host keys, key auth, one connection, retries, sudo."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_mock import MockerFixture

from agent.cli import cli
from connectors.base import Operation, TransportError, run_batch
from connectors.ssh import HostKeyError, SshTransport
from tests.servers.base import free_port, require_binary, wait_for
from tests.servers.sshd import SshdServer

pytestmark = pytest.mark.servers


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ran"
    yield path


def test_runs_a_script_on_stdin_and_returns_its_output(ssh_transport: SshTransport) -> None:
    out = ssh_transport.run_script("read -r line || true\necho \"$(id -un) $0\"\necho warn >&2\nexit 3\n")
    assert out.stdout.split()[0] == "root"
    assert out.stderr == "warn\n"
    assert out.exit_status == 3


def test_large_output_on_both_streams_does_not_stall(ssh_transport: SshTransport) -> None:
    script = "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done\n" + "# pad\n" * 20000
    out = ssh_transport.run_script(script, timeout=60)
    assert out.stdout.count("\n") == 3000 and out.stderr.count("\n") == 3000


def test_200_operations_use_one_connection(sshd: SshdServer) -> None:
    transport = sshd.transport()
    before = sshd.connections("root")
    ops = [Operation(f"acct{i}.suspend", f"acct{i}", "flag", "echo ok; changed") for i in range(200)]
    try:
        started = time.perf_counter()
        first = run_batch(transport, ops)
        elapsed = time.perf_counter() - started
        second = run_batch(transport, ops)
    finally:
        transport.close()
    print(f"\n200 small operations in one batch over SSH (connect included): {elapsed * 1000:.0f} ms")
    assert first.ok and second.ok
    assert len(first.results) == 200 and all(r.changed for r in first.results.values())
    assert transport.connects == 1
    assert sshd.connections("root") - before == 1


def test_changed_host_key_is_refused_with_both_fingerprints(sshd: SshdServer, tmp_path: Path, marker: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (tmp_path / "other_key.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {kind} {blob}\n")
    before = sshd.connections()
    transport = sshd.transport(known_hosts=known)
    with pytest.raises(HostKeyError) as info:
        transport.run_script(f"touch {marker}")
    message = str(info.value)
    assert "CHANGED" in message
    assert _fingerprint(sshd.host_key.with_suffix(".pub")) in message
    assert _fingerprint(tmp_path / "other_key.pub") in message
    assert info.value.transient is False
    assert not marker.exists()
    assert sshd.connections() == before
    assert known.read_text() == f"[{sshd.host}]:{sshd.port} {kind} {blob}\n"


def test_unknown_host_key_names_fingerprint_and_how_to_add_it(sshd: SshdServer, tmp_path: Path,
                                                              marker: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    transport = sshd.transport(known_hosts=known)
    with pytest.raises(HostKeyError) as info:
        transport.run_script(f"touch {marker}")
    message = str(info.value)
    assert _fingerprint(sshd.host_key.with_suffix(".pub")) in message
    assert f"ssh-keyscan -p {sshd.port} {sshd.host} >> {known}" in message
    assert str(sshd.port) in message and sshd.host in message
    assert info.value.transient is False
    assert not marker.exists()
    assert known.read_text() == "", "the key must never be added automatically"


def test_missing_known_hosts_file_is_an_error(sshd: SshdServer, tmp_path: Path) -> None:
    transport = sshd.transport(known_hosts=tmp_path / "absent")
    with pytest.raises(TransportError) as info:
        transport.run_script("true")
    assert "does not exist" in str(info.value) and info.value.transient is False


def test_closed_port_is_transient_after_bounded_retries(sshd: SshdServer, mocker: MockerFixture) -> None:
    connects = mocker.spy(socket, "create_connection")
    transport = sshd.transport(port=free_port(), retries=3, retry_initial_wait=0.01, retry_max_wait=0.05)
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        transport.run_script("true")
    assert info.value.transient is True
    assert "refused" in str(info.value).lower()
    assert connects.call_count == 3
    assert time.monotonic() - started < 5


def test_wrong_key_is_not_retried(sshd: SshdServer, tmp_path: Path, mocker: MockerFixture) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    connects = mocker.spy(socket, "create_connection")
    transport = sshd.transport(key=stranger, retries=3)
    with pytest.raises(TransportError) as info:
        transport.run_script("true")
    assert info.value.transient is False
    assert "authentication" in str(info.value)
    assert connects.call_count == 1


def test_timeout_is_transient_and_the_transport_recovers(sshd: SshdServer) -> None:
    transport = sshd.transport()
    try:
        with pytest.raises(TransportError) as info:
            transport.run_script("sleep 10", timeout=0.5)
        assert info.value.transient is True and "timed out" in str(info.value)
        assert transport.run_script("echo back").stdout == "back\n"
    finally:
        transport.close()


def test_put_and_get_round_trip_with_mode(ssh_transport: SshTransport, tmp_path: Path) -> None:
    target = tmp_path / "put.bin"
    data = bytes(range(256)) * 10
    ssh_transport.put(str(target), data, mode=0o640)
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o640
    assert ssh_transport.get(str(target)) == data
    with pytest.raises(TransportError):
        ssh_transport.get(str(tmp_path / "missing"))


@pytest.fixture
def sudo_user(sshd: SshdServer) -> Iterator[tuple[str, Path]]:
    require_binary("sudo", "visudo", "useradd", "userdel")
    user = "arrears-sudo-t"
    subprocess.run(["userdel", "-r", user], capture_output=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", user], check=True)  # "!" would lock key logins
    key = sshd.add_user_key(user)
    try:
        yield user, key
    finally:
        Path("/etc/sudoers.d/arrears-test").unlink(missing_ok=True)
        # the user's sshd session process may still be exiting; userdel refuses while it lives
        wait_for(lambda: subprocess.run(["pgrep", "-u", user], capture_output=True).returncode != 0,
                 timeout=10, what=f"{user}'s processes to exit")
        subprocess.run(["userdel", "-r", user], capture_output=True, check=True)


def test_sudo_runs_the_batch_as_root_with_the_documented_rule(sshd: SshdServer, sudo_user: tuple[str, Path],
                                                              tmp_path: Path) -> None:
    user, key = sudo_user
    transport = sshd.transport(user=user, key=key, sudo=True)
    try:
        with pytest.raises(TransportError) as info:
            transport.run_script("id -u")
        assert "sudoers" in str(info.value) and info.value.transient is False

        rule = Path("/etc/sudoers.d/arrears-test")
        rule.write_text(f"{user} ALL=(root) NOPASSWD: /bin/sh -s\n")
        rule.chmod(0o440)
        subprocess.run(["visudo", "-cf", str(rule)], check=True, capture_output=True)

        assert transport.run_script("id -u").stdout == "0\n"
        target = tmp_path / "root-owned"
        transport.put(str(target), b"secret\n", mode=0o600)
        assert target.read_bytes() == b"secret\n" and target.stat().st_uid == 0
        assert transport.get(str(target)) == b"secret\n"
    finally:
        transport.close()


def test_a_connection_dropped_while_idle_is_reopened(sshd: SshdServer) -> None:
    transport = sshd.transport()
    try:
        assert transport.run_script("echo one").stdout == "one\n"
        assert sshd.daemon.proc is not None
        # end the per-connection sshd processes (the listener's children): the server drops the link
        children = subprocess.run(["pgrep", "-P", str(sshd.daemon.proc.pid)], capture_output=True, text=True)
        for pid in children.stdout.split():
            subprocess.run(["kill", pid], check=False)
        wait_for(lambda: subprocess.run(["pgrep", "-P", str(sshd.daemon.proc.pid)],  # type: ignore[union-attr]
                                        capture_output=True).returncode != 0, what="sessions to end")
        assert transport.run_script("echo two").stdout == "two\n"
        assert transport.connects == 2
    finally:
        transport.close()


def test_a_server_that_drops_the_handshake_is_transient_and_retried(sshd: SshdServer) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:  # like sshd past MaxStartups: accept, then hang up before the banner
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        transport = sshd.transport(port=port, retries=3, retry_initial_wait=0.01, retry_max_wait=0.05)
        with pytest.raises(TransportError) as info:
            transport.run_script("true")
        assert info.value.transient is True and "handshake" in str(info.value)
        assert len(accepted) == 3
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _loose_key(sshd: SshdServer, tmp_path: Path, mode: int) -> Path:
    """A copy of the key the test sshd accepts for root, with ``mode``."""
    key = tmp_path / "id key"  # a space: the chmod hint must quote it
    shutil.copyfile(sshd.client_key, key)
    key.chmod(mode)
    return key


@pytest.mark.parametrize("mode", [0o644, 0o640], ids=oct)
def test_a_private_key_others_can_read_is_refused_like_openssh(sshd: SshdServer, tmp_path: Path,
                                                               mode: int) -> None:
    key = _loose_key(sshd, tmp_path, mode)
    logins = sshd.connections()
    transport = sshd.transport(key=key)

    with pytest.raises(TransportError) as info:
        transport.run_script("true")

    assert info.value.transient is False
    assert f"Permissions 0{mode:o} for '{key}' are too open" in info.value.message
    assert f"run: chmod 600 '{key}'" in info.value.message
    assert sshd.connections() == logins

    key.chmod(0o600)
    assert transport.run_script("echo in").stdout == "in\n"
    transport.close()


def test_hosts_check_refuses_a_key_others_can_read(sshd: SshdServer, tmp_path: Path) -> None:
    key = _loose_key(sshd, tmp_path, 0o644)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "hosts:\n"
        "  web1:\n"
        "    transport: ssh\n"
        f"    address: {sshd.host}\n"
        f"    port: {sshd.port}\n"
        f"    key: {key}\n"
        f"    known_hosts: {sshd.known_hosts}\n"
        f"    services: {{home: {{backend: archive, roots: [{tmp_path}], archive_dir: /var/backups/arrears-t}}}}\n"
    )
    logins = sshd.connections()

    refused = CliRunner().invoke(cli, ["hosts", "check", "--inventory", str(inventory)])

    assert refused.exit_code == 2
    assert f"{inventory}:6: hosts.web1.key: Permissions 0644 for '{key}' are too open" in refused.output
    assert f"(run: chmod 600 '{key}')" in refused.output
    assert sshd.connections() == logins

    key.chmod(0o600)
    checked = CliRunner().invoke(cli, ["hosts", "check", "--inventory", str(inventory), "--json"])
    assert checked.exit_code == 0, checked.output
    assert sshd.connections() == logins + 1
    (host,) = json.loads(checked.output)["hosts"]
    assert [(s["service"], s["ok"]) for s in host["services"]] == [("home", True)]
