"""``arrears hosts prepare`` on Debian 12's own nginx, apache2, dovecot and postfix configurations.

The trees come from the packages (tests/servers/stock.py) with two customer vhosts per web server, and the
stock dovecot switched to the passwd-file passdb its 10-auth.conf offers, for two virtual mailboxes (the
stock PAM passdb serves system users, not ``user@domain`` mailboxes); nginx, apache, postfix and dovecot
run from them (prepare's reloads reach the running daemons). ``prepare`` must show its changes as diffs
and change nothing with ``--dry-run``, make the hooks, passdb, restrictions, maps and folders, and change
nothing the second time; then a suspension and a resumption work on those servers (the sites redirect,
postfix bounces the mailbox, dovecot refuses its IMAP and POP3 logins) and leave every vhost as
``prepare`` left it. A vhost too unusual to edit, and a config test that fails, leave the files as they were.
"""

from __future__ import annotations

import hashlib
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.fleet import Job
from connectors.inventory import load_inventory_file
from connectors.prepare import prepare_hosts
from connectors.runner import InventoryFleet
from connectors.web.prepare import insert_hook, site_of
from tests.servers.base import free_port, wait_for
from tests.servers.mail import imap_login_ok, pop3_login_ok
from tests.servers.stock import CUSTOMER_SITES, StockMail, stock_apache, stock_mail, stock_nginx, web_settings
from tests.servers.web import WebServer

SUSPENDED = "http://billing.example.test/suspended"
MAILBOXES = {"info@shop.test": "pw-info", "sales@shop.test": "pw-sales"}  # the operator's virtual mailboxes
ARREARS = str(Path(sys.executable).with_name("arrears"))


@dataclass
class Stock:
    web: dict[str, WebServer]
    mail: StockMail
    inventory: Path

    def snapshot(self) -> dict[str, str]:
        """sha256 and mode of every file, and the mode of every folder, of the configuration trees and of the
        folders arrears keeps (the daemons' own logs, queues and pid files aside)."""
        out: dict[str, str] = {}
        for root in [*(w.root for w in self.web.values()), self.mail.root]:
            for top in ("etc", "arrears", "state", "archive"):
                for p in [root / top, *sorted((root / top).rglob("*"))]:
                    if not p.exists():
                        out[str(p)] = "absent"
                    elif p.is_symlink():
                        out[str(p)] = "-> " + str(p.readlink())
                    elif p.is_dir():
                        out[str(p)] = oct(p.stat().st_mode & 0o7777)
                    else:
                        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode & 0o7777)
        return out


def prepare(stock: Stock, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARREARS, "hosts", "prepare", "--inventory", str(stock.inventory), *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stock]:
    web = {"nginx": stock_nginx(), "apache": stock_apache()}
    mail = stock_mail()
    try:
        for w in web.values():
            assert w.daemon is not None
            w.daemon.start()
        mail.start_postfix()
        mail.serve_mailboxes(MAILBOXES)
        mail.start_dovecot()
        inventory = tmp_path_factory.mktemp("prepare") / "inventory.yaml"
        inventory.write_text(yaml.safe_dump({"hosts": {
            "web-nginx": {"transport": "local", "services": {"web": web_settings(web["nginx"], SUSPENDED, "{site}")}},
            "web-apache": {"transport": "local",
                           "services": {"web": web_settings(web["apache"], SUSPENDED, "{site}.conf")}},
            "mail": {"transport": "local", "services": {"mail": mail.settings}},
        }}))
        yield Stock(web, mail, inventory)
    finally:
        for w in web.values():
            w.stop()
            shutil.rmtree(w.root, ignore_errors=True)
        mail.stop()


def get(web: WebServer, site: str) -> Any:
    return web.get(site)


def rcpt(mail: StockMail, box: str) -> int:
    """The code the running stock postfix answers an outside sender's ``RCPT TO:<box>`` with."""
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        client.mail("someone@outside.test")
        code, _ = client.rcpt(box)
        return code


def logins(mail: StockMail, box: str) -> tuple[bool, bool]:
    """Whether the running stock dovecot accepts the mailbox's (IMAP, POP3) login."""
    return (imap_login_ok("127.0.0.1", mail.imap_port, box, MAILBOXES[box]),
            pop3_login_ok("127.0.0.1", mail.pop3_port, box, MAILBOXES[box]))


def redirected(web: WebServer, site: str) -> bool:
    return bool(get(web, site).headers.get("location") == SUSPENDED)


def serves_own_page(web: WebServer, site: str) -> bool:
    response = get(web, site)
    return response.status_code == 200 and site in response.text


@pytest.mark.servers
def test_dry_run_prints_the_diffs_and_changes_nothing(stock: Stock) -> None:
    before = stock.snapshot()
    result = prepare(stock, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert stock.snapshot() == before
    out = result.stdout
    nginx, apache = stock.web["nginx"], stock.web["apache"]
    for site in CUSTOMER_SITES:
        assert f"+++ {nginx.vhost_dir}/{site}\n" in out
        # indented with a tab like the stock file (printed as spaces; --json has the tab)
        assert f"+\tinclude {nginx.hook_dir}/{site}.con[f];\n".expandtabs(8) in out
        assert f"+\tIncludeOptional {apache.hook_dir}/{site}.conf\n".expandtabs(8) in out
    assert "+!include auth-arrears.conf.ext\n" in out
    assert f"+    check_sasl_access hash:{stock.mail.settings['norelay_map']},\n" in out
    assert "dry run: nothing was changed" in out


@pytest.mark.servers
def test_prepare_then_suspend_and_resume_and_a_second_prepare_changes_nothing(stock: Stock) -> None:
    result = prepare(stock)
    assert result.returncode == 0, result.stdout + result.stderr
    prepared = stock.snapshot()
    for web in stock.web.values():
        for site in CUSTOMER_SITES:
            assert serves_own_page(web, site)
    # what the services read now: the passdb first, the lookups first, the maps built
    m = stock.mail
    passdbs = subprocess.run(["doveconf", "-c", str(m.dovecot_dir / "dovecot.conf"), "-n", "passdb"],
                             capture_output=True, text=True, check=True).stdout
    assert passdbs.index("deny = yes") < passdbs.index(f"{m.dovecot_dir}/users")  # before the operator's own
    restrictions = subprocess.run(["postconf", "-c", str(m.postfix_dir), "-h", "smtpd_recipient_restrictions"],
                                  capture_output=True, text=True, check=True).stdout
    assert restrictions.startswith(f"check_recipient_access hash:{m.settings['bounce_map']}, check_sasl_access")
    assert Path(f"{m.settings['norelay_map']}.db").exists()
    assert oct(Path(str(m.settings["state_dir"])).stat().st_mode & 0o777) == "0o700"

    again = prepare(stock)
    assert again.returncode == 0, again.stdout + again.stderr
    assert stock.snapshot() == prepared
    assert again.stdout.count("(nothing to change)") == 3

    inv = load_inventory_file(stock.inventory)
    site = CUSTOMER_SITES[0]
    box, other = MAILBOXES
    assert logins(m, box) == logins(m, other) == (True, True)
    jobs = [Job(f"s:{host}", "acct-1", "suspend", service, host, resource)
            for host, service, resource in (("web-nginx", "web", {"sites": [site]}),
                                            ("web-apache", "web", {"sites": [site]}),
                                            ("mail", "mail", {"mailboxes": [box]}))]
    with InventoryFleet(inv) as fleet:
        results = fleet.apply(jobs)
        assert all(r.ok for r in results.values()), {k: r.error for k, r in results.items()}
        for web in stock.web.values():
            wait_for(partial(redirected, web, site), what=f"{web.backend} to redirect {site}")
            assert serves_own_page(web, CUSTOMER_SITES[1])
        wait_for(lambda: rcpt(m, box) == 550, what="the running postfix to bounce the suspended mailbox")
        assert rcpt(m, other) == 250  # everyone else: as before (the stock mynetworks lets us relay)
        # the running dovecot refuses the suspended mailbox's logins through the deny passdb prepare put first
        wait_for(lambda: logins(m, box) == (False, False), what="dovecot to refuse the suspended mailbox")
        assert logins(m, other) == (True, True)
        resumed = fleet.apply([Job(j.key.replace("s:", "r:"), j.account, "resume", j.service, j.host, j.resource,
                                   results[j.key].facts) for j in jobs])
        assert all(r.ok for r in resumed.values()), {k: r.error for k, r in resumed.items()}
    wait_for(lambda: rcpt(m, box) == 250, what="postfix to stop bouncing the resumed mailbox")
    wait_for(lambda: logins(m, box) == (True, True), what="dovecot to accept the resumed mailbox again")
    for web in stock.web.values():
        wait_for(partial(serves_own_page, web, site), what=f"{web.backend} to serve {site} again")
        for p in web.vhost_dir.iterdir():
            assert prepared[str(p)] == hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode & 0o7777)


def _local_nginx(tmp_path: Path, vhosts: dict[str, str], config_test: str) -> Path:
    (tmp_path / "sites").mkdir()
    for name, text in vhosts.items():
        (tmp_path / "sites" / name).write_text(text)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"hosts": {"web": {"transport": "local", "services": {"web": {
        "backend": "nginx", "hook_dir": f"{tmp_path}/hooks", "vhost_dir": f"{tmp_path}/sites",
        "enabled_dir": None, "state_dir": f"{tmp_path}/state", "archive_dir": f"{tmp_path}/archive",
        "suspended_url": SUSPENDED, "config_test": config_test, "reload": "true"}}}}}))
    return inventory


PLAIN = "server {\n    listen 80;\n    server_name plain.test;\n}\n"


def test_an_unusual_vhost_is_left_alone_with_the_line_to_add(tmp_path: Path) -> None:
    odd = "server { listen 80; server_name odd.test; }\n"
    inventory = _local_nginx(tmp_path, {"odd.test": odd, "plain.test": PLAIN}, "true")
    report: dict[str, Any] = prepare_hosts(load_inventory_file(inventory))
    service = report["hosts"][0]["services"][0]
    assert not report["ok"]
    assert service["manual"] == [{"path": f"{tmp_path}/sites/odd.test",
                                  "line": f"include {tmp_path}/hooks/odd.test.con[f];",
                                  "where": "first in every server block (the file is too unusual to edit)"}]
    assert (tmp_path / "sites" / "odd.test").read_text() == odd
    assert f"    include {tmp_path}/hooks/plain.test.con[f];\n" in (tmp_path / "sites" / "plain.test").read_text()


def test_a_failing_config_test_puts_every_file_back(tmp_path: Path) -> None:
    inventory = _local_nginx(tmp_path, {"plain.test": PLAIN, "other.test": PLAIN.replace("plain", "other")}, "false")
    report = prepare_hosts(load_inventory_file(inventory))
    service = report["hosts"][0]["services"][0]
    assert not report["ok"] and "the config test (false) failed" in service["error"]
    assert (tmp_path / "sites" / "plain.test").read_text() == PLAIN
    assert "include" not in (tmp_path / "sites" / "other.test").read_text()


@pytest.mark.parametrize(("text", "expected"), [
    ("server {\n\tlisten 80;\n}\nserver {\n  listen 443;\n}\n",
     "server {\n\tinclude H;\n\tlisten 80;\n}\nserver {\n  include H;\n  listen 443;\n}\n"),
    ("# server {\nserver {\n    return 200 \"}\";\n}\n",
     "# server {\nserver {\n    include H;\n    return 200 \"}\";\n}\n"),
    ("server {\n    include H;\n}\n", "server {\n    include H;\n}\n"),
    ("upstream x {\n}\nserver {\n}\n", None),
    ("server\n{\n}\n", None),
    ("", None),
])
def test_nginx_hook_placement(text: str, expected: str | None) -> None:
    assert insert_hook(text, "nginx", "include H;", r"^[[:space:]]*include[[:space:]]+H;") == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("<IfModule mod_ssl.c>\n\t<VirtualHost _default_:443>\n\t\tServerName a\n\t</VirtualHost>\n</IfModule>\n",
     "<IfModule mod_ssl.c>\n\t<VirtualHost _default_:443>\n\t\tIncludeOptional H\n\t\tServerName a\n"
     "\t</VirtualHost>\n</IfModule>\n"),
    ("<VirtualHost *:80>\n<VirtualHost *:81>\n</VirtualHost>\n</VirtualHost>\n", None),
    ("<VirtualHost *:80> ServerName a </VirtualHost>\n", None),
])
def test_apache_hook_placement(text: str, expected: str | None) -> None:
    assert insert_hook(text, "apache", "IncludeOptional H", r"^[[:space:]]*IncludeOptional[[:space:]]+H$") == expected


def test_the_site_comes_from_the_vhost_file_name() -> None:
    assert site_of("shop.test.conf", "{site}.conf") == "shop.test"
    assert site_of("shop.test", "{site}") == "shop.test"
    assert site_of("README", "{site}.conf") is None
    assert site_of("x;rm.conf", "{site}.conf") is None


_DIRECTIVE = st.sampled_from(["listen 80;", "server_name a.test;", 'return 200 "{ }";', "# a comment {",
                              "location / {", "}", "root /srv/www;", "add_header X-A '}';"])
_INDENT = st.sampled_from(["", "\t", "  ", "    "])


@st.composite
def _nginx_vhost(draw: st.DrawFn) -> str:
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        body, depth = [], 1
        for directive in draw(st.lists(_DIRECTIVE, max_size=6)):
            if directive == "}" and depth == 1:
                continue
            depth += directive.endswith("{") and not directive.startswith("#")
            depth -= directive == "}"
            body.append(draw(_INDENT) + directive)
        body += ["}"] * (depth - 1)
        if draw(st.booleans()):
            body.insert(draw(st.integers(0, len(body))), "    include H;")
        blocks.append("\n".join([draw(_INDENT) + "server {", *body, "}"]))
    return "\n".join(["# managed by hand", *blocks]) + "\n"


@settings(max_examples=200, deadline=None)
@given(_nginx_vhost())
def test_hook_placement_only_adds_one_line_per_block_and_is_idempotent(text: str) -> None:
    pattern = r"^[[:space:]]*include[[:space:]]+H;"
    once = insert_hook(text, "nginx", "include H;", pattern)
    assert once is not None
    assert insert_hook(once, "nginx", "include H;", pattern) == once
    added = [line for line in once.splitlines() if line not in text.splitlines()]
    assert all(line.strip() == "include H;" for line in added)
    assert [line for line in once.splitlines() if line.strip() != "include H;"] == \
        [line for line in text.splitlines() if line.strip() != "include H;"]
    blocks = sum(1 for line in once.splitlines() if line.strip() == "server {")
    assert sum(1 for line in once.splitlines() if line.strip() == "include H;") >= blocks  # every block has one


def test_an_unknown_host_is_refused_before_anything_runs(tmp_path: Path) -> None:
    inventory = _local_nginx(tmp_path, {"plain.test": PLAIN}, "true")
    result = subprocess.run([ARREARS, "hosts", "prepare", "--inventory", str(inventory), "web", "nosuch"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "unknown hosts nosuch" in result.stderr and "known hosts: web" in result.stderr
    assert (tmp_path / "sites" / "plain.test").read_text() == PLAIN
    assert not (tmp_path / "hooks").exists()


def test_main_cf_keeps_the_operators_restrictions_after_the_lookups() -> None:
    from connectors.mail.dovecot_postfix import DovecotPostfixSettings
    from connectors.mail.prepare import edit_main_cf

    s = DovecotPostfixSettings()
    text = ("smtpd_restriction_classes = greylist\n"
            "smtpd_recipient_restrictions = permit_mynetworks,\n    reject_unauth_destination\n")
    once = edit_main_cf(text, s)
    assert once == (
        "smtpd_restriction_classes = greylist, arrears_norelay\n"
        "smtpd_recipient_restrictions =\n"
        "    check_recipient_access hash:/etc/postfix/arrears/bounce,\n"
        "    check_sasl_access hash:/etc/postfix/arrears/norelay,\n"
        "    permit_mynetworks,\n    reject_unauth_destination\n"
        "\n# arrears: suspended mailboxes bounce (-b) and may not relay (-r); see docs/mail.md\n"
        "arrears_norelay = permit_auth_destination, reject\n")
    assert edit_main_cf(once, s) == once


def test_the_deny_passdb_goes_above_the_stock_system_passdb() -> None:
    from connectors.mail.prepare import edit_auth_conf

    stock = Path("/usr/share/dovecot/conf.d/10-auth.conf")
    if not stock.exists():
        pytest.skip("dovecot-core is not installed")
    before = stock.read_text().splitlines(keepends=True)
    after = edit_auth_conf("".join(before))
    assert after is not None
    n = before.index("!include auth-system.conf.ext\n")
    assert after.splitlines(keepends=True) == [*before[:n], "!include auth-arrears.conf.ext\n", *before[n:]]


def test_dovecot_without_a_passdb_include_and_master_cf_overrides_are_left_to_the_operator() -> None:
    from connectors.mail.dovecot_postfix import DovecotPostfixSettings
    from connectors.mail.prepare import _master_overrides, edit_auth_conf

    assert edit_auth_conf("passdb {\n  driver = pam\n}\n") is None
    master = ("submission inet n - y - - smtpd\n  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject\n"
              "#smtps inet n - y - - smtpd\n#  -o smtpd_recipient_restrictions=reject\n")
    assert _master_overrides(master, DovecotPostfixSettings()) == [(
        "submission", "  -o smtpd_recipient_restrictions=check_recipient_access,hash:/etc/postfix/arrears/bounce,"
        "check_sasl_access,hash:/etc/postfix/arrears/norelay,permit_sasl_authenticated,reject")]


def test_an_unreachable_host_is_one_error_and_the_others_are_prepared(tmp_path: Path) -> None:
    inventory = _local_nginx(tmp_path, {"plain.test": PLAIN}, "true")
    data = yaml.safe_load(inventory.read_text())
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "key").write_text("")
    (tmp_path / "key").chmod(0o600)
    data["hosts"]["gone"] = {"address": "127.0.0.1", "port": free_port(), "known_hosts": str(tmp_path / "known_hosts"),
                             "key": str(tmp_path / "key"), "services": {"login": {"backend": "unix"}}}
    data["defaults"] = {"retries": 1, "connect_timeout": 2}
    inventory.write_text(yaml.safe_dump(data))
    report = prepare_hosts(load_inventory_file(inventory))
    gone, web = report["hosts"]
    assert (gone["host"], gone["ok"], gone["services"]) == ("gone", False, [])
    assert "cannot connect to 127.0.0.1" in gone["error"]
    assert web["ok"] and web["changed"]
