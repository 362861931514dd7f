"""Card payments posted over HTTP resume suspended accounts on the real servers: at once with ``"now": true``,
else on the next tick. The API is a real ``arrears serve`` (uvicorn on loopback) whose clock stands at the
moment of the payments; the debt timeline is replayed with ``arrears run --at``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.server import serve
from tests.e2e.conftest import SLOTS, Fleet, day
from tests.e2e.test_lifecycle import assert_clean, check_serving, check_suspended, taken

pytestmark = pytest.mark.servers


def test_card_payments_posted_over_http_resume_at_once_with_now_else_on_the_next_tick(fleet: Fleet,
                                                                                       tmp_path: Path) -> None:
    at_once, next_tick = SLOTS["acct-1"], SLOTS["acct-3"]
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(at_once.id), fleet.account(next_tick.id)])
    for slot in (at_once, next_tick):
        arrears.charge(slot.id, 0, "30.00", f"inv-{slot.id}")
    for n in (0, 1, 2):
        assert_clean(arrears.run(n))
    for slot in (at_once, next_tick):
        check_suspended(fleet, slot)

    with serve(tmp_path / "cfg", at=day(2, 17)) as api:
        billing = api.client("billing", name="billing-system")
        # without "now": recorded, and applied by the next tick
        later = billing.post("/v1/payments", json={"account": next_tick.id, "amount": "30.00", "method": "card",
                                                   "ref": "pay-1", "at": day(2, 15)})
        assert later.status_code == 201 and "applied" not in later.json(), later.text
        assert billing.get(f"/v1/accounts/{next_tick.id}").json()["state"] == "suspended"
        assert fleet.redirected("nginx", next_tick.site)
        result = arrears.run(2, 16)
        assert_clean(result)
        assert taken(result) == [(next_tick.id, "resume", "resume")]
        check_serving(fleet, next_tick)
        check_suspended(fleet, at_once)
        # with "now": applied before the answer comes
        now = billing.post("/v1/payments", json={"account": at_once.id, "amount": "30.00", "method": "card",
                                                 "ref": "pay-1", "now": True})
        assert now.status_code == 201, now.text
        run = now.json()["applied"]["run"]
        assert [(t["account"], t["stage"]) for t in run["executor"]["taken"]] == [(at_once.id, "resume")]
        for slot in (at_once, next_tick):
            check_serving(fleet, slot)
            assert fleet.ssh_login(slot.id) == fleet.users[slot.id].name
            shown = billing.get(f"/v1/accounts/{slot.id}").json()
            assert (shown["state"], shown["holds"], shown["balance"]) == ("active", [], "0.00")
        audit = api.client("read").get(f"/v1/accounts/{at_once.id}/history").json()["audit"]
        assert ("payment", "billing-system") in [(a["action"], a["actor"]) for a in audit]
