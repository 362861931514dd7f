"""``arrears daemon --api``: the daemon's ticks and the HTTP API in one process. A card payment posted with
``"now": true`` wakes the daemon's own tick, which resumes the suspended account on the (local) fleet long
before its next interval."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.agent.fleet import build_fleet, debtor
from tests.servers.base import free_port, wait_for


def _ticks(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if line.startswith("{") and json.loads(line).get("msg") == "tick")


@pytest.mark.realtime
def test_a_payment_posted_to_the_daemons_api_wakes_its_tick(tmp_path: Path) -> None:
    fleet = build_fleet(tmp_path / "cfg", [debtor("acme-01", "acme")], notices={"spool_dir": "outbox"},
                        debt_at=datetime.now(UTC) - timedelta(days=2))
    acme = fleet.accounts[0]
    token = fleet.arrears.json("tokens", "add", "billing-system", "--scope", "billing")["token"]
    port = free_port()
    log = tmp_path / "daemon.log"
    proc = fleet.arrears.start("daemon", "--interval", "3600", "--api", f"127.0.0.1:{port}", log=log)
    try:
        # the first tick runs at start and suspends the account
        wait_for(lambda: proc.poll() is None and fleet.arrears.show(acme.id)["state"] == "suspended", timeout=60,
                 what="the daemon's first tick to suspend the account", log=log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as billing:
            r = billing.post("/v1/payments", json={"account": acme.id, "amount": "50.00", "method": "card",
                                                   "ref": "pay-1", "now": True})
            assert r.status_code == 201, r.text
            assert r.json()["applied"]["daemon"] == proc.pid
            # the interval is an hour: only the wake-up can run the tick that resumes the account
            wait_for(lambda: billing.get(f"/v1/accounts/{acme.id}").json()["state"] == "active", timeout=60,
                     what="the daemon to resume the account after the payment", log=log)
        assert fleet.host_untouched(acme)
        # the account is active once the executor resumed it; the tick logs its line after that
        wait_for(lambda: _ticks(log) >= 2, timeout=60, what="the woken tick's log line", log=log)
        assert _ticks(log) == 2
        audit = fleet.arrears.json("history", acme.id)["audit"]
        assert ("payment", "billing-system") in [(a["action"], a["actor"]) for a in audit]
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, log.read_text()
