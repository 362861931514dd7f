"""``arrears hosts check`` runs each backend's own probe (its connector's ``check_script``) on a local host."""

from __future__ import annotations

from pathlib import Path

from connectors.hosts_check import check_hosts
from connectors.inventory import load_inventory


def _inventory(tmp_path: Path, *, reload: str) -> str:
    t = tmp_path
    return f"""
hosts:
  h1:
    transport: local
    services:
      web: {{backend: nginx, hook_dir: {t}/hooks, vhost_dir: {t}/vhosts, enabled_dir: null,
             state_dir: {t}/state, archive_dir: {t}/archive, suspended_url: "https://billing.example/s",
             config_test: ["true"], reload: [{reload}]}}
      mail: {{backend: dovecot-postfix, postmap_command: "true", postfix_reload_command: "true",
              dovecot_reload_command: "true", kick_command: "true", state_dir: {t}/state,
              maildir_template: "{t}/mail/{{domain}}/{{local}}", mail_roots: [{t}/mail],
              archive_dir: {t}/archive}}
      login: {{backend: unix, state_dir: {t}/state, usermod_command: usermod}}
      home: {{backend: archive, roots: [{t}/home], archive_dir: {t}/archive, state_dir: {t}/state}}
"""


def test_every_backend_probes_what_it_needs(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    inv = load_inventory(_inventory(tmp_path, reload='"true"'), "inventory.yaml")
    report = check_hosts(inv)
    services = {s["service"]: s for s in report["hosts"][0]["services"]}
    assert report["ok"], services
    assert [(s, services[s]["backend"]) for s in ("web", "mail", "login", "home")] == [
        ("web", "nginx"), ("mail", "dovecot-postfix"), ("login", "unix"), ("home", "archive")]
    assert services["home"]["detail"].startswith("tar (GNU tar)")


def test_a_missing_command_or_folder_is_named_against_its_service(tmp_path: Path) -> None:
    inv = load_inventory(_inventory(tmp_path, reload="no-such-reload"), "inventory.yaml")
    report = check_hosts(inv)
    services = {s["service"]: s for s in report["hosts"][0]["services"]}
    assert not report["ok"]
    assert (services["web"]["ok"], services["web"]["detail"]) == (False, "no-such-reload not found (reload)")
    assert (services["home"]["ok"], services["home"]["detail"]) == (False, f"home root {tmp_path}/home does not exist")
    assert services["mail"]["ok"] and services["login"]["ok"]
