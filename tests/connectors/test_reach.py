"""Reaching a host the way operators do, against real sshds: a target only a bastion can reach.

The bastion's namespace is reachable from the tests; the target's only from the bastion
(tests/servers/netns.py). Host keys are checked on both hops; ssh_config aliases with ProxyJump, keys in
a real ``ssh-agent`` and a passphrase key from the environment are used like an operator's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_mock import MockerFixture

from connectors.base import TransportError
from connectors.fleet import Job
from connectors.inventory import load_inventory_file
from connectors.runner import InventoryFleet
from connectors.ssh import HostKeyError, SshSettings, SshTransport
from tests.servers.base import require_binary, wait_for
from tests.servers.netns import Namespaces, bastion_and_target
from tests.servers.sshd import SshdServer, start_sshd_at

pytestmark = pytest.mark.servers

SUSPENDED = "http://billing.example.test/suspended"


@dataclass
class Reach:
    ns: Namespaces
    bastion: SshdServer
    target: SshdServer
    known_hosts: Path  # both hosts' keys

    def settings(self, *, bastion_known: Path | None = None, target_known: Path | None = None,
                 **target: Any) -> SshSettings:
        """The target through the bastion, each verified against ``known_hosts`` unless told otherwise."""
        bastion = self.bastion.settings(known_hosts=bastion_known or self.known_hosts)
        return self.target.settings(known_hosts=target_known or self.known_hosts, jump=bastion, **target)

    def accepted_from_bastion(self) -> int:
        return self.target.log_text().count(f"Accepted publickey for root from {self.ns.address['bastion@target']} ")


@pytest.fixture(scope="module")
def reach(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reach]:
    with bastion_and_target() as ns:
        bastion = start_sshd_at(tmp_path_factory.mktemp("bastion"), ns.address["bastion"], ns.exec("bastion"))
        try:
            target = start_sshd_at(tmp_path_factory.mktemp("target"), ns.address["target"], ns.exec("target"))
            try:
                known = tmp_path_factory.mktemp("reach") / "known_hosts"
                known.write_text(f"{bastion.host_key_line}\n{target.host_key_line}\n")
                yield Reach(ns, bastion, target, known)
            finally:
                target.stop()
        finally:
            bastion.stop()


def test_the_target_is_not_reachable_directly(reach: Reach) -> None:
    with pytest.raises(OSError):
        socket.create_connection((reach.target.host, reach.target.port), timeout=2).close()


def test_a_suspension_reaches_the_target_through_the_bastion(reach: Reach, tmp_path: Path,
                                                             mocker: MockerFixture) -> None:
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "shop.test").write_text(f"server {{\n    include {tmp_path}/hooks/shop.test.con[f];\n}}\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({
        "defaults": {"known_hosts": str(reach.known_hosts), "connect_timeout": 5, "retries": 1},
        "hosts": {
            "bastion": {"address": reach.bastion.host, "port": reach.bastion.port,
                        "key": str(reach.bastion.client_key)},
            "web1": {"address": reach.target.host, "port": reach.target.port, "key": str(reach.target.client_key),
                     "jump": "bastion", "services": {"web": {
                         "backend": "nginx", "hook_dir": f"{tmp_path}/hooks", "vhost_dir": f"{tmp_path}/sites",
                         "enabled_dir": None, "state_dir": f"{tmp_path}/state", "archive_dir": f"{tmp_path}/archive",
                         "suspended_url": SUSPENDED, "config_test": "true", "reload": "true"}}},
        },
    }))
    before = reach.accepted_from_bastion()
    connects = mocker.spy(socket, "create_connection")
    with InventoryFleet(load_inventory_file(inventory)) as fleet:
        result = fleet.apply([Job("k", "acct-1", "suspend", "web", "web1", {"sites": ["shop.test"]})])["k"]
    assert result.ok, result.error
    assert f"return 302 {SUSPENDED};" in (tmp_path / "hooks" / "shop.test.conf").read_text()
    assert [c.args[0] for c in connects.call_args_list] == [(reach.bastion.host, reach.bastion.port)]
    assert reach.accepted_from_bastion() == before + 1


def test_an_unknown_bastion_key_is_refused(reach: Reach, tmp_path: Path) -> None:
    only_target = tmp_path / "known_hosts"
    only_target.write_text(reach.target.host_key_line + "\n")
    settings = reach.settings(bastion_known=only_target, target_known=only_target)
    before = reach.target.connections()
    with pytest.raises(HostKeyError) as exc:
        SshTransport("web1", settings).connect()
    assert f"[{reach.bastion.host}]:{reach.bastion.port}" in exc.value.message
    assert "is not in" in exc.value.message
    assert reach.target.connections() == before
    assert only_target.read_text() == reach.target.host_key_line + "\n"  # nothing added


def test_an_unknown_target_key_is_refused_and_nothing_runs(reach: Reach, tmp_path: Path) -> None:
    only_bastion = tmp_path / "known_hosts"
    only_bastion.write_text(reach.bastion.host_key_line + "\n")
    settings = reach.settings(bastion_known=only_bastion, target_known=only_bastion)
    transport = SshTransport("web1", settings)
    with pytest.raises(HostKeyError) as exc:
        transport.run_script(f"touch {tmp_path}/ran\n")
    assert f"[{reach.target.host}]:{reach.target.port}" in exc.value.message
    assert not (tmp_path / "ran").exists()
    assert only_bastion.read_text() == reach.bastion.host_key_line + "\n"


def test_an_ssh_config_alias_with_proxyjump(reach: Reach, tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(
        f"Host shop-web\n  HostName {reach.target.host}\n  Port {reach.target.port}\n  User root\n"
        f"  IdentityFile {reach.target.client_key}\n  ProxyJump jumpbox\n\n"
        f"Host jumpbox\n  HostName {reach.bastion.host}\n  Port {reach.bastion.port}\n"
        f"  IdentityFile {reach.bastion.client_key}\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({
        "defaults": {"known_hosts": str(reach.known_hosts), "ssh_config": "ssh_config", "connect_timeout": 5},
        "hosts": {"web1": {"address": "shop-web"}},
    }))
    inv = load_inventory_file(inventory)
    transport = inv.transport("web1")
    try:
        out = transport.run_script('echo "$SSH_CONNECTION"\n')
    finally:
        transport.close()
    assert out.exit_status == 0
    assert out.stdout.split()[0] == reach.ns.address["bastion@target"]
    assert out.stdout.split()[2:] == [reach.target.host, str(reach.target.port)]


@pytest.fixture
def agent_sock(tmp_path: Path) -> Iterator[Path]:
    require_binary("ssh-agent", "ssh-add")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, what="ssh-agent's socket")
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_keys_in_ssh_agent(reach: Reach, agent_sock: Path, tmp_path: Path, mocker: MockerFixture) -> None:
    for server in (reach.bastion, reach.target):
        key = tmp_path / f"{server.port}.key"
        shutil.copy(server.client_key, key)
        key.chmod(0o600)
        subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(agent_sock)})
        key.unlink()  # only the agent holds it now
    mocker.patch.dict(os.environ, {"SSH_AUTH_SOCK": str(agent_sock)})
    settings = reach.settings(allow_agent=True)
    assert settings.jump is not None
    settings = replace(settings, key=None, jump=replace(settings.jump, key=None, allow_agent=True))
    transport = SshTransport("web1", settings)
    try:
        assert transport.run_script("id -un\n").stdout == "root\n"
    finally:
        transport.close()


def test_a_passphrase_key_from_the_environment(reach: Reach, tmp_path: Path, mocker: MockerFixture) -> None:
    key = tmp_path / "id_passphrase"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "correct horse", "-f", str(key)], check=True)
    with (reach.target.auth_dir / "root.pub").open("a") as fh:
        fh.write(key.with_suffix(".pub").read_text())
    settings = reach.settings(key=str(key), key_passphrase_env="ARREARS_TEST_KEY_PASSPHRASE")
    mocker.patch.dict(os.environ, {"ARREARS_TEST_KEY_PASSPHRASE": ""})
    del os.environ["ARREARS_TEST_KEY_PASSPHRASE"]
    with pytest.raises(TransportError, match="ARREARS_TEST_KEY_PASSPHRASE, which is not set"):
        SshTransport("web1", settings).connect()
    mocker.patch.dict(os.environ, {"ARREARS_TEST_KEY_PASSPHRASE": "correct horse"})
    transport = SshTransport("web1", settings)
    try:
        assert transport.run_script("id -un\n").stdout == "root\n"
    finally:
        transport.close()
