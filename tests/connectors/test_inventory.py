"""inventory.yaml parsing: valid files load, every mistake names file, line, field and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import registry
from connectors.inventory import InventoryError, Problem, load_inventory, load_inventory_file
from connectors.local import LocalTransport
from connectors.ssh import SshTransport
from connectors.testing import FlagConnector, flag_backends


@pytest.fixture(autouse=True)
def _flag_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)


GOOD = """\
defaults: {parallel: 8, connect_timeout: 4, retries: 5, state_dir: /var/lib/arrears, known_hosts: keys/known_hosts}
hosts:
  web1:
    transport: ssh
    address: 203.0.113.10
    port: 2222
    user: arrears
    key: keys/id_ed25519
    sudo: true
    services:
      web: {backend: flag, root: /srv/flags}
      login: {backend: flag, root: /srv/flags}
  demo:
    transport: local
    services:
      mail:
        backend: flag
        root: /tmp/demo
"""


def _only(exc: pytest.ExceptionInfo[InventoryError]) -> Problem:
    assert len(exc.value.problems) == 1, exc.value.problems
    return exc.value.problems[0]


def test_valid_inventory_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    inv = load_inventory(GOOD, str(tmp_path / "inventory.yaml"))
    assert sorted(inv.hosts) == ["demo", "web1"]
    settings = inv.hosts["web1"].ssh_settings(inv.defaults)
    assert settings.address == "203.0.113.10" and settings.port == 2222 and settings.user == "arrears"
    assert settings.sudo is True and settings.retries == 5 and settings.connect_timeout == 4
    assert settings.key == str(tmp_path / "keys" / "id_ed25519")
    assert settings.known_hosts == str(tmp_path / "keys" / "known_hosts")
    assert isinstance(inv.transport("web1"), SshTransport)
    assert isinstance(inv.transport("demo"), LocalTransport)
    web = inv.connector("web1", "web")
    assert isinstance(web, FlagConnector) and web.service == "web" and web.host == "web1"
    assert inv.connector("web1", "web") is web
    assert inv.hosts["demo"].services["mail"].settings.root == "/tmp/demo"  # type: ignore[attr-defined]
    assert inv.state_dir("web1") == inv.defaults.state_dir == "/var/lib/arrears"  # no state_dir of its own


def test_a_host_may_have_a_state_dir_of_its_own(tmp_path: Path) -> None:
    text = GOOD.replace("    transport: local\n", "    transport: local\n    state_dir: /tmp/demo/state\n")
    inv = load_inventory(text, str(tmp_path / "inventory.yaml"))
    assert inv.state_dir("demo") == "/tmp/demo/state" and inv.state_dir("web1") == "/var/lib/arrears"
    with pytest.raises(InventoryError) as info:  # it reaches the host's shell: refused at load, located
        load_inventory(text.replace("/tmp/demo/state", "var/state"), "inv.yaml")
    p = _only(info)
    assert (p.file, p.line, p.field) == ("inv.yaml", 15, "hosts.demo.state_dir")
    assert p.message.startswith("refused path 'var/state'"), p.message


def test_unknown_host_key_names_line_field_and_allowed_keys() -> None:
    text = GOOD.replace("    sudo: true\n", "    sudo: true\n    pasword: hunter2\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "/etc/arrears/inventory.yaml")
    p = _only(info)
    assert (p.file, p.line, p.field) == ("/etc/arrears/inventory.yaml", 10, "hosts.web1.pasword")
    assert "unknown key" in p.message and "known_hosts" in p.hint
    assert "/etc/arrears/inventory.yaml:10: hosts.web1.pasword: unknown key" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_backend_settings_are_validated_by_the_connector_model() -> None:
    text = GOOD.replace("        root: /tmp/demo\n", "        root: /tmp/demo\n        rooot: /x\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "inv.yaml")
    p = _only(info)
    assert (p.line, p.field) == (19, "hosts.demo.services.mail.rooot")
    assert "root" in p.hint and "backend" in p.hint


def test_bad_value_in_backend_settings_points_at_its_line() -> None:
    text = GOOD.replace("        root: /tmp/demo\n", "        root: /tmp/../etc\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "inv.yaml")
    p = _only(info)
    assert (p.line, p.field) == (18, "hosts.demo.services.mail.root")
    assert ".." in p.message


def test_wrong_type_names_the_value() -> None:
    text = GOOD.replace("port: 2222", "port: twenty-two")
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "inv.yaml")
    p = _only(info)
    assert (p.line, p.field) == (6, "hosts.web1.port")
    assert "twenty-two" in p.hint


def test_ssh_host_needs_address_key_and_known_hosts() -> None:
    text = "hosts:\n  web1:\n    transport: ssh\n    services: {}\n"
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "inv.yaml")
    fields = {p.field: p for p in info.value.problems}
    assert set(fields) == {"hosts.web1.address", "hosts.web1.key", "hosts.web1.known_hosts"}
    assert all(p.line == 3 for p in fields.values())
    assert "always verified" in fields["hosts.web1.known_hosts"].message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
@pytest.mark.parametrize("where", ["host", "defaults"])
def test_a_private_key_others_can_read_is_refused_with_the_chmod_to_run(tmp_path: Path, mode: int,
                                                                        where: str) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key = keys / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    key.chmod(mode)
    text = GOOD if where == "host" else GOOD.replace("    key: keys/id_ed25519\n", "").replace(
        "known_hosts: keys/known_hosts}", "known_hosts: keys/known_hosts, key: keys/id_ed25519}")

    with pytest.raises(InventoryError) as info:
        load_inventory(text, str(tmp_path / "inventory.yaml"))

    p = _only(info)
    assert (p.field, p.line) == (("hosts.web1.key", 8) if where == "host" else ("defaults.key", 1))
    assert f"Permissions 0{mode:o} for '{key}' are too open" in p.message
    assert p.hint == f"run: chmod 600 {key}"

    key.chmod(0o600)
    inv = load_inventory(text, str(tmp_path / "inventory.yaml"))
    assert inv.hosts["web1"].ssh_settings(inv.defaults).key == str(key)


def test_unknown_backend_and_service_list_the_choices() -> None:
    text = GOOD.replace("web: {backend: flag, root: /srv/flags}", "web: {backend: lighttpd}").replace(
        "login: {backend: flag", "ftp: {backend: flag")
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "inv.yaml")
    by_field = {p.field: p for p in info.value.problems}
    assert by_field["hosts.web1.services.web.backend"].line == 11
    assert "nginx" in by_field["hosts.web1.services.web.backend"].hint
    assert by_field["hosts.web1.services.ftp"].line == 12
    assert "web, mail, login, home" in by_field["hosts.web1.services.ftp"].hint


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory("hosts:\n  web1:\n    address: [1, 2\n    port: 22\n", "inv.yaml")
    p = _only(info)
    assert p.line == 4 and "YAML syntax" in p.message


def test_duplicate_keys_are_errors() -> None:
    text = GOOD.replace("    port: 2222\n", "    port: 2222\n    port: 22\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(text, "inv.yaml")
    p = _only(info)
    assert (p.line, p.field) == (7, "hosts.web1.port") and "twice" in p.message


def test_missing_hosts_and_unknown_top_level_key() -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory("defaults: {parallel: 0}\nhost: {}\n", "inv.yaml")
    by_field = {p.field: p for p in info.value.problems}
    assert by_field["defaults.parallel"].line == 1
    assert by_field["host"].line == 2 and "hosts" in by_field["host"].hint
    assert "hosts" in by_field


def test_unreadable_file_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory_file(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_unknown_host_lookup_names_known_hosts() -> None:
    inv = load_inventory(GOOD, "inv.yaml")
    with pytest.raises(KeyError, match="known hosts: demo, web1"):
        inv.host("web9")


def test_registry_validates_settings_with_the_connectors_model() -> None:
    from pydantic import ValidationError

    connector = registry.connector_for("mail", "flag", {"backend": "flag", "root": "/srv/f"}, "mx1")
    assert isinstance(connector, FlagConnector) and connector.service == "mail" and connector.host == "mx1"
    with pytest.raises(ValidationError):
        registry.connector_for("mail", "flag", {"root": "relative/path"}, "mx1")
    with pytest.raises(registry.UnknownBackend, match=r"backends for web: .*apache.*nginx"):
        registry.connector_for("web", "lighttpd", {}, "h")
    with pytest.raises(registry.UnknownBackend, match="known services"):
        registry.connector_class("ftp", "vsftpd")


@pytest.mark.parametrize(("service", "backend"), [
    ("web", "nginx"), ("web", "apache"), ("mail", "dovecot-postfix"), ("mail", "vpopmail"),
    ("login", "unix"), ("home", "archive"),
])
def test_every_registered_connector_meets_the_contract(service: str, backend: str) -> None:
    import inspect

    from pydantic import BaseModel

    cls = registry.connector_class(service, backend)
    assert cls.service == service
    assert isinstance(cls.Settings, type) and issubclass(cls.Settings, BaseModel)
    assert list(inspect.signature(cls.__init__).parameters)[1:3] == ["settings", "host"]
    assert callable(cls.operations) and callable(cls.handlers)
    assert list(inspect.signature(cls.operations).parameters)[1:4] == ["action", "account", "resource"]


def _reach_inventory(tmp_path: Path, hosts: str, defaults: str = "") -> str:
    (tmp_path / "known_hosts").write_text("")
    return f"defaults:\n  known_hosts: known_hosts\n{defaults}hosts:\n{hosts}"


def test_jump_names_another_ssh_host_and_the_chain_must_end(tmp_path: Path) -> None:
    path = str(tmp_path / "inventory.yaml")
    with pytest.raises(InventoryError) as exc:
        load_inventory(_reach_inventory(tmp_path, "  a:\n    address: 10.0.0.1\n    key: /k\n    jump: nowhere\n"),
                       path)
    assert _only(exc).field == "hosts.a.jump" and "unknown host 'nowhere'" in _only(exc).message
    circle = ("  a:\n    address: 10.0.0.1\n    key: /k\n    jump: b\n"
              "  b:\n    address: 10.0.0.2\n    key: /k\n    jump: a\n")
    with pytest.raises(InventoryError) as exc:
        load_inventory(_reach_inventory(tmp_path, circle), path)
    assert "a -> b -> a" in str(exc.value) and f"{path}:7: hosts.a.jump" in str(exc.value)
    inv = load_inventory(_reach_inventory(tmp_path, circle.replace("    jump: a\n", "")), path)
    settings = inv.ssh_settings("a")
    assert settings.address == "10.0.0.1" and settings.jump is not None and settings.jump.address == "10.0.0.2"
    assert settings.jump.known_hosts == str(tmp_path / "known_hosts")


def test_an_ssh_config_alias_gives_address_user_port_key_and_proxyjump(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(
        "Host web-prod\n  HostName 203.0.113.7\n  User deploy\n  Port 2200\n  IdentityFile keys/web\n"
        "  ProxyJump ops@jump:2222\n\nHost jump\n  HostName 198.51.100.1\n  IdentityFile /etc/arrears/jump\n")
    inv = load_inventory(_reach_inventory(tmp_path, "  web1:\n    address: web-prod\n    port: 22\n",
                                          "  ssh_config: ssh_config\n"), str(tmp_path / "inventory.yaml"))
    s = inv.ssh_settings("web1")
    assert (s.address, s.user, s.port) == ("203.0.113.7", "deploy", 22)  # the inventory's own port wins
    assert s.key == str(tmp_path / "keys" / "web")  # relative to the ssh_config's folder
    assert s.jump is not None
    assert (s.jump.address, s.jump.user, s.jump.port, s.jump.key) == ("198.51.100.1", "ops", 2222, "/etc/arrears/jump")


def test_keys_may_come_from_the_agent_and_a_passphrase_from_the_environment(tmp_path: Path) -> None:
    path = str(tmp_path / "inventory.yaml")
    inv = load_inventory(_reach_inventory(tmp_path, "  a:\n    address: 10.0.0.1\n    allow_agent: true\n"), path)
    assert inv.ssh_settings("a").allow_agent and inv.ssh_settings("a").key is None
    with pytest.raises(InventoryError) as exc:
        load_inventory(_reach_inventory(tmp_path, "  a:\n    address: 10.0.0.1\n"), path)
    assert _only(exc).field == "hosts.a.key"
    with pytest.raises(InventoryError) as exc:
        load_inventory(_reach_inventory(tmp_path, "  a:\n    address: 10.0.0.1\n    key: /k\n"
                                                  "    key_passphrase_env: $(reboot)\n"), path)
    assert _only(exc).field == "hosts.a.key_passphrase_env"
    with pytest.raises(InventoryError) as exc:
        load_inventory(_reach_inventory(tmp_path, "  a:\n    address: alias\n    key: /k\n    ssh_config: nope\n"),
                       path)
    assert _only(exc).field == "hosts.a.ssh_config" and "cannot read" in _only(exc).message
