"""A card payment posted over HTTP resumes a suspended account on the real servers: at once with
``"now": true``, else on the next tick. The API is a real ``arrears serve`` (uvicorn on loopback) whose clock
stands at the moment of the payment; the debt timeline is replayed with ``arrears run --at``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.server import serve
from tests.e2e.conftest import SLOTS, Arrears, Fleet, day
from tests.e2e.test_lifecycle import assert_clean, check_serving, check_suspended, taken

pytestmark = pytest.mark.servers


def _suspended(fleet: Fleet, folder: Path, account: str) -> None:
    arrears = fleet.config(folder, [fleet.account(account)])
    arrears.charge(account, 0, "30.00", "inv-1")
    for n in (0, 1, 2):
        assert_clean(arrears.run(n))
    check_suspended(fleet, SLOTS[account])
    assert arrears.show(account, 2, 12)["state"] == "suspended"


def test_a_card_payment_posted_with_now_resumes_the_account_at_once(fleet: Fleet, tmp_path: Path) -> None:
    slot = SLOTS["acct-1"]
    _suspended(fleet, tmp_path / "cfg", slot.id)
    with serve(tmp_path / "cfg", at=day(2, 15)) as api:
        billing = api.client("billing", name="billing-system")
        r = billing.post("/v1/payments", json={"account": slot.id, "amount": "30.00", "method": "card",
                                               "ref": "pay-1", "now": True})
        assert r.status_code == 201, r.text
        run = r.json()["applied"]["run"]
        assert [(t["account"], t["stage"]) for t in run["executor"]["taken"]] == [(slot.id, "resume")]
        check_serving(fleet, slot)
        assert fleet.ssh_login(slot.id) == fleet.users[slot.id].name
        assert fleet.mail_access(slot.mailbox)["imap"]
        shown = billing.get(f"/v1/accounts/{slot.id}").json()
        assert (shown["state"], shown["holds"], shown["balance"]) == ("active", [], "0.00")
        history = api.client("read").get(f"/v1/accounts/{slot.id}/history")
        assert ("payment", "billing-system") in [(a["action"], a["actor"]) for a in history.json()["audit"]]


def test_a_card_payment_posted_without_now_resumes_it_on_the_next_tick(fleet: Fleet, tmp_path: Path) -> None:
    slot = SLOTS["acct-3"]
    _suspended(fleet, tmp_path / "cfg", slot.id)
    with serve(tmp_path / "cfg", at=day(2, 15)) as api, api.client("billing") as billing:
        r = billing.post("/v1/payments", json={"account": slot.id, "amount": "30.00", "method": "card",
                                               "ref": "pay-1"})
        assert r.status_code == 201, r.text
        assert "applied" not in r.json()
        assert billing.get(f"/v1/accounts/{slot.id}").json()["state"] == "suspended"
        assert fleet.redirected("nginx", slot.site)
    result = Arrears(tmp_path / "cfg").run(2, 16)
    assert_clean(result)
    assert taken(result) == [(slot.id, "resume", "resume")]
    check_serving(fleet, slot)
    assert fleet.ssh_login(slot.id) == fleet.users[slot.id].name
