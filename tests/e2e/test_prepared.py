"""``arrears hosts prepare`` over SSH on Debian 12's own nginx and apache2, then the debt lifecycle there.

The module's web servers are not the suite's hand-made ones: they run from the packages' own
configuration trees (tests/servers/stock.py), each with a customer vhost per site of :data:`SLOTS`
copied from the package's default site, and no arrears hook anywhere. ``hosts prepare`` (over the same
SSH transport as every batch) must make the hosts ready and change nothing the second time (its
``--dry-run`` is tested in tests/connectors/test_prepare.py); then a debtor is suspended on both servers
and resumed by a card payment, and every vhost is byte for byte as ``prepare`` left it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import SLOTS, Fleet, day
from tests.e2e.test_lifecycle import OPEN, assert_clean, check_serving, check_suspended, taken
from tests.servers.stock import stock_apache, stock_nginx
from tests.servers.web import WebServer

pytestmark = pytest.mark.servers

SITES = [slot.site for slot in SLOTS.values()]


def _serve(server: WebServer) -> Iterator[WebServer]:
    try:
        assert server.daemon is not None
        server.daemon.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="module")
def nginx_server() -> Iterator[WebServer]:
    """Debian's nginx, its customer vhosts without the hook (this module's fleet uses it)."""
    yield from _serve(stock_nginx(SITES, vhost_name="{site}.conf"))


@pytest.fixture(scope="module")
def apache_server() -> Iterator[WebServer]:
    """Debian's apache2, its customer vhosts without the hook (this module's fleet uses it)."""
    yield from _serve(stock_apache(SITES))


def folders(fleet: Fleet) -> dict[str, str]:
    """Every vhost's sha256 and link, and the mode of each folder ``prepare`` looks after."""
    snap = fleet.vhost_snapshot()
    for p in [fleet.state_dir, *(w.hook_dir for w in fleet.web.values()), fleet.mail.deny_dir]:
        snap[str(p)] = oct(p.stat().st_mode & 0o7777) if p.exists() else "absent"
    return snap


def test_prepare_then_suspension_and_exact_resume(fleet: Fleet, tmp_path: Path) -> None:
    slot = SLOTS["acct-1"]
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(slot.id)])
    untouched = folders(fleet)
    for site in SITES:
        assert "arrears.d" not in (fleet.web["nginx"].vhost_dir / f"{site}.conf").read_text()
    arrears.ok("hosts", "prepare")
    prepared = folders(fleet)
    assert prepared != untouched
    for site in SITES:
        nginx, apache = fleet.web["nginx"], fleet.web["apache"]
        assert f"\tinclude {nginx.hook_dir}/{site}.con[f];\n" in (nginx.vhost_dir / f"{site}.conf").read_text()
        assert f"\tIncludeOptional {apache.hook_dir}/{site}.conf\n" in (apache.vhost_dir / f"{site}.conf").read_text()
    again = arrears.ok("hosts", "prepare")
    assert folders(fleet) == prepared
    assert again.count("(nothing to change)") == 5, again  # web, login, home on web-nginx; web-apache; mail

    check_serving(fleet, slot)
    assert fleet.mail_access(slot.mailbox) == OPEN
    arrears.charge(slot.id, 0, "30.00", "inv-1")
    for n in (0, 1, 2):
        assert_clean(arrears.run(n))
    check_suspended(fleet, slot)
    arrears.ok("payment", slot.id, "30.00", "--method", "card", "--ref", "pay-1", "--at", day(2, 15))
    result = arrears.run(2, 16)
    assert_clean(result)
    assert taken(result) == [(slot.id, "resume", "resume")]
    check_serving(fleet, slot)
    assert fleet.mail_access(slot.mailbox) == OPEN
    assert folders(fleet) == prepared
