"""The suspended page rendered for each account, served by a real nginx in page mode.

The agent runs in-process (tick and executor) on the real fleet code (:class:`connectors.runner.InventoryFleet`,
one ``transport: local`` host) against the nginx of tests/servers/web.py; notices go to a spool folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from agent.config import AgentSettings
from agent.executor import ExecSummary, TemplateComposer, execute
from agent.imports import import_accounts, import_ledger
from agent.notices import NoticeSettings, Templates, make_notifier
from agent.store.db import Store
from agent.tick import tick
from connectors.inventory import load_inventory
from connectors.runner import InventoryFleet
from policy.loader import PolicySet
from tests.servers.base import wait_for
from tests.servers.web import SITES, WebServer

pytestmark = pytest.mark.servers

DAY0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
SETTINGS = AgentSettings(lease_seconds=600, backoff_seconds=60, max_attempts=3)
A, B = "acct-a", "acct-b"
PAY = "https://pay.hosting.example/account/{account_id}"


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


def inventory(server: WebServer) -> str:
    web = {"backend": "nginx", "hook_dir": str(server.hook_dir), "vhost_dir": str(server.vhost_dir),
           "enabled_dir": str(server.enabled_dir), "state_dir": str(server.state_dir),
           "archive_dir": str(server.root / "archive"), "mode": "page", "page_root": str(server.page_root),
           "retry_after": 600, "config_test": server.config_test, "reload": server.reload}
    return yaml.safe_dump({"hosts": {"web1": {"transport": "local", "services": {"web": web}}}})


class Agent:
    """Ticks and executor runs on one store, with the real templates and the real fleet."""

    def __init__(self, store: Store, policy: PolicySet, fleet: InventoryFleet, spool: Path) -> None:
        self.store = store
        self.policy = policy
        self.fleet = fleet
        settings = NoticeSettings(from_addr="billing@hosting.example", company="Example Hosting",
                                  payment_url=PAY, support_email="help@hosting.example", spool_dir=spool)
        self.now = day(0)
        self.notifier = make_notifier(settings, clock=lambda: self.now)  # each run's own day
        self.composer = TemplateComposer(Templates.load(None), settings, policy)

    def run(self, n: float) -> ExecSummary:
        self.now = day(n)
        with self.store.sessions() as s:
            tick(s, self.policy, day(n), SETTINGS)
            return execute(s, self.fleet, self.notifier, day(n), composer=self.composer, settings=SETTINGS,
                           transient_tries=1)


@pytest.fixture
def agent(sqlite_store: Store, policy: PolicySet, nginx_server: WebServer, tmp_path: Path) -> Iterator[Agent]:
    # on SQLite only: the module's nginx keeps the sites of one run suspended, and what the store does for the
    # page (the job carries it, rendered for the account) runs on both backends in test_executor.py
    store = sqlite_store
    accounts = [{"id": acc, "billing_email": f"{acc}@customer.example",
                 "resources": {"web": {"host": "web1", "sites": SITES[acc]}}} for acc in (A, B)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in accounts))
    (tmp_path / "l.jsonl").write_text("".join(json.dumps({"account": a["id"], "at": day(0).isoformat(),
                                                          "amount": "-10", "ref": "c"}) + "\n" for a in accounts))
    with store.session() as s:
        import_accounts(s, tmp_path / "a.jsonl", DAY0, policy)
        import_ledger(s, tmp_path / "l.jsonl", DAY0)
    fleet = InventoryFleet(load_inventory(inventory(nginx_server)))
    try:
        yield Agent(store, policy, fleet, tmp_path / "spool")
    finally:
        fleet.close()


def served(server: WebServer, site: str, path: str = "/") -> tuple[int, str]:
    r = server.get(site, path)
    return r.status_code, r.text


def test_each_suspended_site_serves_the_page_rendered_for_its_account(agent: Agent, nginx_server: WebServer,
                                                                      tmp_path: Path) -> None:
    for n in (0, 5):  # the notices before the suspension
        agent.run(n)
    assert all(served(nginx_server, site)[0] == 200 for sites in SITES.values() for site in sites)
    x = agent.run(8)
    assert x.errors == [] and sorted(t["account"] for t in x.taken if t["stage"] == "suspension") == [A, B]

    def suspended_everywhere() -> bool:
        return all(served(nginx_server, site)[0] == 503 for sites in SITES.values() for site in sites)

    wait_for(suspended_everywhere, timeout=15, what="every site answering 503", log=nginx_server.log)
    for account, sites in SITES.items():
        other = B if account == A else A
        for site in sites:
            r = nginx_server.get(site, "/a/b/c.html?x=1")
            assert r.status_code == 503 and r.headers.get("retry-after") == "600"
            assert f'<a href="https://pay.hosting.example/account/{account}">' in r.text
            assert "Example Hosting" in r.text and "mailto:help@hosting.example" in r.text
            assert f"/account/{other}" not in r.text
    assert sorted(p.name for p in nginx_server.page_root.glob("arrears-*.html")) \
        == sorted(f"arrears-{site}.html" for sites in SITES.values() for site in sites)

    # payment: the account's sites serve their own content again and its pages are gone
    (tmp_path / "p.jsonl").write_text(json.dumps({"account": A, "at": day(9).isoformat(), "amount": "10",
                                                  "method": "card", "ref": "p"}) + "\n")
    with agent.store.session() as s:
        import_ledger(s, tmp_path / "p.jsonl", day(9))
    agent.run(9)
    wait_for(lambda: all(served(nginx_server, site)[0] == 200 for site in SITES[A]), timeout=15,
             what="A's sites back", log=nginx_server.log)
    assert all(f"welcome to {site}" in served(nginx_server, site)[1] for site in SITES[A])
    assert sorted(p.name for p in nginx_server.page_root.glob("arrears-*.html")) \
        == sorted(f"arrears-{site}.html" for site in SITES[B])
    assert all(served(nginx_server, site)[0] == 503 for site in SITES[B])
