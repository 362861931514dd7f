"""Host work through the CLI: `arrears run` applies suspensions and resumes on the inventory's hosts
(local hosts served by the flag-file connector), and `arrears show` reports work waiting on a host."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.imports import parse_instant
from agent.service import Arrears as Service
from connectors import registry
from connectors.testing import FakeFleet, flag_backends, flag_inventory_yaml
from tests.scenarios.harness import Arrears, day

ACCOUNTS = [
    {"id": "acme-01", "billing_email": "billing@acme.example",
     "resources": {"web": {"host": "web1", "sites": ["acme.example"]},
                   "mail": {"host": "mail1", "mailboxes": ["info@acme.example"]}}},
    {"id": "bravo-02", "billing_email": "ap@bravo.example",
     "resources": {"web": {"host": "web1", "sites": ["bravo.example"]}}},
]


@pytest.fixture
def arrears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Arrears:
    for key, target in flag_backends().items():
        monkeypatch.setitem(registry.BACKENDS, key, target)
    a = Arrears.create(tmp_path / "cfg", accounts=ACCOUNTS)
    roots = {"web1": str(tmp_path / "hosts" / "web1"), "mail1": str(tmp_path / "hosts" / "mail1")}
    (a.folder / "inventory.yaml").write_text(flag_inventory_yaml(roots, services=("web", "mail")))
    a.charge("acme-01", 0, "30.00", "inv-1")
    a.charge("bravo-02", 0, "20.00", "inv-2")
    return a


def flags(tmp_path: Path) -> list[str]:
    root = tmp_path / "hosts"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.suspended")) if root.is_dir() else []


def test_suspend_and_resume_on_the_hosts(arrears: Arrears, tmp_path: Path) -> None:
    for n in (0, 5):
        arrears.run(n)
    assert flags(tmp_path) == []
    result = arrears.run(8)
    assert sorted(t["account"] for t in result["executor"]["taken"]) == ["acme-01", "bravo-02"]
    assert flags(tmp_path) == ["mail1/mail/acme-01.suspended", "web1/web/acme-01.suspended",
                               "web1/web/bravo-02.suspended"]
    assert arrears.show("acme-01", 8)["state"] == "suspended"
    # running again changes nothing on the hosts
    arrears.run(8)
    arrears.ok("payment", "acme-01", "30", "--method", "card", "--at", day(9))
    arrears.run(9)
    assert flags(tmp_path) == ["web1/web/bravo-02.suspended"]
    assert arrears.show("acme-01", 9)["state"] == "active"
    assert arrears.show("bravo-02", 9)["state"] == "suspended"


def test_show_tells_the_operator_about_an_unreachable_host(arrears: Arrears) -> None:
    fleet = FakeFleet()
    fleet.fail_host("mail1", error="mail1: connection refused")
    with Service.open(arrears.folder, db=arrears.db, fleet=fleet) as svc:
        for n in (0, 5, 8):
            svc.run(now=parse_instant(day(n)))
    info = arrears.show("acme-01", 8)
    assert info["state"] == "debtor"
    assert info["in_flight"] == ["suspension"]
    assert info["jobs"]["mail1"]["pending"] == 1
    assert "connection refused" in info["jobs"]["mail1"]["last_error"]
    text = arrears.ok("show", "acme-01", "--at", day(8)).stdout
    assert "waiting work on mail1: 1 pending" in text
    assert arrears.show("bravo-02", 8)["state"] == "suspended"
