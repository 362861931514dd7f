"""The login lock against a real sshd: SSH logins refused while suspended, sessions ended, crontab and
account expiry restored exactly, and a repeated suspend that changes nothing."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from connectors.base import BatchResult, Operation, Transport, run_batch
from connectors.login import UnixLoginConnector
from connectors.observed import Observed
from connectors.validate import UnsafeValue
from tests.servers.base import require_binary, wait_for
from tests.servers.sshd import SshdServer

pytestmark = pytest.mark.servers

CRONTABS = Path("/var/spool/cron/crontabs")


def _run(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


def _expiry(user: str) -> str:
    """Field 8 of the user's shadow entry: the account expiry in days since 1970, or empty."""
    return _run("getent", "shadow", user).strip().split(":")[7]


@pytest.fixture(scope="module")
def users(sshd: SshdServer) -> Iterator[dict[str, Path]]:
    """Two fresh unix users with key logins through the test sshd: name -> private key."""
    require_binary("useradd", "usermod", "userdel", "crontab", "getent", "pkill")
    names = [f"arl{secrets.token_hex(3)}" for _ in range(2)]
    created: list[str] = []
    try:
        for name in names:
            # '*' rather than the default '!' so that sshd (UsePAM no) accepts key logins
            _run("useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name)
            created.append(name)
        yield {name: sshd.add_user_key(name) for name in names}
    finally:
        for name in created:
            subprocess.run(["pkill", "-KILL", "-u", name], check=False)
            (CRONTABS / name).unlink(missing_ok=True)
            subprocess.run(["userdel", "--force", "--remove", name], capture_output=True, check=False)


@pytest.fixture
def connector(tmp_path: Path) -> UnixLoginConnector:
    return UnixLoginConnector(UnixLoginConnector.Settings(state_dir=str(tmp_path / "state")), "sshd-test")


def _login(sshd: SshdServer, user: str, key: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.get_host_keys().load(str(sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sshd.host, port=sshd.port, username=user, key_filename=str(key), allow_agent=False,
                   look_for_keys=False, timeout=5, banner_timeout=5, auth_timeout=5)
    return client


def _whoami(sshd: SshdServer, user: str, key: Path) -> str:
    client = _login(sshd, user, key)
    try:
        _, out, _ = client.exec_command("id -un", timeout=5)
        return str(out.read().decode().strip())
    finally:
        client.close()


def _hold_session(client: paramiko.SSHClient) -> paramiko.Channel:
    """A running command on an open session, ready once it has printed its first line."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session(timeout=5)
    chan.exec_command("echo up; exec sleep 600")
    assert chan.makefile("r").readline().strip() == "up"
    return chan


def _ended(client: paramiko.SSHClient, chan: paramiko.Channel) -> bool:
    transport = client.get_transport()
    return chan.closed or chan.exit_status_ready() or transport is None or not transport.is_active()


def _apply(transport: Transport, connector: UnixLoginConnector, action: str, account: str,
           users: list[str]) -> BatchResult:
    ops: list[Operation] = []
    for user in users:
        ops += connector.operations(action, account, {"user": user})  # type: ignore[arg-type]
    batch = run_batch(transport, ops)
    assert batch.ok, {op_id: r.error for op_id, r in batch.results.items()}
    return batch


def test_suspend_locks_ssh_logins_ends_sessions_and_resume_restores_exactly(
    sshd: SshdServer, ssh_transport: Transport, users: dict[str, Path], connector: UnixLoginConnector
) -> None:
    alice, bob = users
    _run("usermod", "--expiredate", "2030-01-01", alice)
    expiry_before = _expiry(alice)
    _run("crontab", "-u", alice, "-", stdin="# nightly\n17 3 * * * /bin/true\n")
    crontab = CRONTABS / alice
    cron_bytes, cron_stat = crontab.read_bytes(), crontab.stat()
    assert _whoami(sshd, alice, users[alice]) == alice

    alice_client, bob_client = _login(sshd, alice, users[alice]), _login(sshd, bob, users[bob])
    try:
        alice_session, bob_session = _hold_session(alice_client), _hold_session(bob_client)

        batch = _apply(ssh_transport, connector, "suspend", "acct-1", [alice])

        (result,) = batch.results.values()
        assert result.changed
        assert result.facts["expire_before"] == expiry_before == "21915"
        assert result.facts["crontab"] == "saved"
        assert int(result.facts["processes_ended"]) >= 1
        wait_for(lambda: _ended(alice_client, alice_session), timeout=10, what="alice's session to end")
        with pytest.raises(paramiko.AuthenticationException):
            _login(sshd, alice, users[alice])
        assert _expiry(alice) == "1"
        assert not crontab.exists()
        # the other user keeps the running session and can still log in
        assert not _ended(bob_client, bob_session)
        assert _whoami(sshd, bob, users[bob]) == bob
    finally:
        alice_client.close()
        bob_client.close()

    batch = _apply(ssh_transport, connector, "resume", "acct-1", [alice])

    (result,) = batch.results.values()
    assert result.changed
    assert result.facts == {"crontab": "restored", "expire_restored": "21915"}
    assert _expiry(alice) == expiry_before
    assert "Jan 01, 2030" in _run("chage", "-l", alice)
    assert crontab.read_bytes() == cron_bytes
    restored = crontab.stat()
    assert (restored.st_uid, restored.st_gid, restored.st_mode) == (cron_stat.st_uid, cron_stat.st_gid,
                                                                    cron_stat.st_mode)
    assert _whoami(sshd, alice, users[alice]) == alice


def test_suspend_twice_changes_nothing_the_second_time(
    sshd: SshdServer, ssh_transport: Transport, users: dict[str, Path], connector: UnixLoginConnector
) -> None:
    names = list(users)
    for name in names:
        _run("usermod", "--expiredate", "", name)

    first = _apply(ssh_transport, connector, "suspend", "acct-2", names)
    second = _apply(ssh_transport, connector, "suspend", "acct-2", names)
    kept_locked = _apply(ssh_transport, connector, "delete", "acct-2", names)

    assert all(r.changed for r in first.results.values())
    assert [r.changed for r in second.results.values()] == [False, False]
    assert [r.changed for r in kept_locked.results.values()] == [False, False]
    assert [r.facts["expire_before"] for r in second.results.values()] == ["", ""]
    for name in names:
        with pytest.raises(paramiko.AuthenticationException):
            _login(sshd, name, users[name])

    resumed = _apply(ssh_transport, connector, "resume", "acct-2", names)
    again = _apply(ssh_transport, connector, "resume", "acct-2", names)

    assert all(r.changed for r in resumed.results.values())
    assert [r.changed for r in again.results.values()] == [False, False]
    for name in names:
        assert _expiry(name) == ""
        assert _whoami(sshd, name, users[name]) == name


def test_status_reports_the_lock(ssh_transport: Transport, users: dict[str, Path],
                                 connector: UnixLoginConnector) -> None:
    name = next(iter(users))

    def observed() -> Observed:
        (status,) = _apply(ssh_transport, connector, "status", "acct-3", [name]).results.values()
        return connector.observe(status.facts)

    assert observed().state == "active"
    _apply(ssh_transport, connector, "suspend", "acct-3", [name])
    try:
        (status,) = _apply(ssh_transport, connector, "status", "acct-3", [name]).results.values()
        assert not status.changed
        assert status.facts["suspended"] == "yes"
        assert status.facts["expire"] == "1"
        locked = observed()  # a deleted account stays locked the same way
        assert locked.state == "suspended" and locked.agrees("deleted") and not locked.agrees("active")
        _run("usermod", "-e", "", name)  # someone unlocks it by hand
        assert observed().state == "active"
    finally:
        _apply(ssh_transport, connector, "resume", "acct-3", [name])
    (status,) = _apply(ssh_transport, connector, "status", "acct-3", [name]).results.values()
    assert status.facts["suspended"] == "no"
    assert observed().state == "active"


def test_system_accounts_are_refused_on_the_host(ssh_transport: Transport, connector: UnixLoginConnector) -> None:
    root_before = _run("getent", "shadow", "root")

    batch = run_batch(ssh_transport, connector.operations("suspend", "acct-4", {"user": "root"}))

    (result,) = batch.results.values()
    assert not result.ok
    assert not result.changed
    assert "refused root: uid 0 is below min_uid 1000" in (result.error or "")
    assert _run("getent", "shadow", "root") == root_before
    assert not os.path.exists(Path(connector.settings.state_dir) / "login" / "root" / "expire")


@pytest.mark.parametrize(
    ("account", "user", "refused"),
    [
        ("x;rm -rf /", "alice", "account id"),
        ("acct-5", "../../etc", "unix user"),
        ("acct-5", "bob; reboot", "unix user"),
        ("acct-5", "eve\n", "unix user"),
    ],
)
def test_unsafe_names_are_refused_before_anything_runs(connector: UnixLoginConnector, account: str, user: str,
                                                       refused: str) -> None:
    with pytest.raises(UnsafeValue, match=f"refused {refused}"):
        connector.operations("suspend", account, {"user": user})
