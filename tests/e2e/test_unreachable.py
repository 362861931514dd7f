"""One host unreachable during a tick, through the ``arrears`` command on real servers.

The inventory's ``mail`` host points at a closed port while ``web-nginx`` and ``web-apache`` are up. The
account without mail is suspended in that tick; the other one keeps its mail job pending with a back-off,
and ``arrears show`` says so. Once the inventory points at the real sshd again, a later run finishes it.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import MESSAGE_DOMAIN, SLOTS, Fleet, day, eventually
from tests.servers.base import free_port

pytestmark = pytest.mark.servers

BACKENDS = ("nginx", "apache")


def _taken(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(t["account"], t["stage"], t["action"]) for t in result["executor"]["taken"]]


def test_unreachable_host_keeps_its_jobs_pending_until_it_is_back(fleet: Fleet, tmp_path: Path) -> None:
    web_only, with_mail = SLOTS["acct-1"], SLOTS["acct-2"]
    closed = free_port()  # nothing listens there
    arrears = fleet.config(tmp_path / "cfg", [fleet.account(web_only.id, ("web", "login", "home")),
                                              fleet.account(with_mail.id)], ports={"mail": closed})
    for slot in (web_only, with_mail):
        arrears.charge(slot.id, 0, "30.00", f"inv-{slot.id}")
    for n in (0, 1):
        result = arrears.run(n)
        assert result["executor"]["errors"] == [] and len(_taken(result)) == 2

    # day 2: the suspension; the mail host does not answer
    result = arrears.run(2)
    executor = result["executor"]
    assert _taken(result) == [(web_only.id, "suspension", "suspend")]
    assert (executor["retrying"], executor["failed"]) == (1, 0)
    assert all(e.startswith(f"{with_mail.id}:") for e in executor["errors"]), executor["errors"]

    # the account on reachable hosts is suspended in that tick, with its notice
    for backend in BACKENDS:
        eventually(partial(fleet.redirected, backend, web_only.site),
                   f"{web_only.site} on {backend} to redirect")
    assert fleet.ssh_login(web_only.id) is None
    assert arrears.show(web_only.id, 2)["state"] == "suspended"
    assert [m["Subject"] for m in fleet.notices(web_only.billing_email)][-1] == (
        f"Your account {web_only.id} has been suspended")

    # the other one waits for its mail host: the web hosts applied their part, the account is not suspended yet
    for backend in BACKENDS:
        eventually(partial(fleet.redirected, backend, with_mail.site),
                   f"{with_mail.site} on {backend} to redirect")
    assert fleet.imap_ok(with_mail.mailbox)
    info = arrears.show(with_mail.id, 2)
    assert (info["state"], info["in_flight"]) == ("debtor", ["suspension"])
    assert set(info["jobs"]) == {"mail"}
    waiting = info["jobs"]["mail"]
    assert (waiting["pending"], waiting["claimed"], waiting["failed"]) == (1, 0, 0)
    assert str(closed) in waiting["last_error"] and "refused" in waiting["last_error"].lower(), waiting
    retry_at = waiting["next_attempt_at"]
    assert datetime.fromisoformat(retry_at) > datetime.fromisoformat(day(2))
    assert len(fleet.notices(with_mail.billing_email)) == 2  # no suspension notice before it took effect
    text = arrears.ok("show", with_mail.id, "--at", day(2))
    assert "waiting work on mail: 1 pending" in text

    # before the back-off has run out, a run leaves the job alone
    early = arrears.run(2, 10, 0)
    assert (early["executor"]["claimed"], _taken(early)) == (0, [])
    assert arrears.show(with_mail.id, 2)["jobs"]["mail"]["next_attempt_at"] == retry_at

    # the host is back: the next run after the back-off finishes the suspension
    fleet.write_inventory(arrears.folder)
    result = arrears.json("run", "--at", retry_at)
    assert result["executor"]["errors"] == [] and result["executor"]["failed"] == 0
    assert _taken(result) == [(with_mail.id, "suspension", "suspend")]
    info = arrears.show(with_mail.id, 3)
    assert (info["state"], info["in_flight"], info["jobs"]) == ("suspended", [], {})
    assert fleet.mail_access(with_mail.mailbox) == {"imap": False, "webmail": False, "pop3": False,
                                                    "incoming": False}
    assert fleet.ssh_login(with_mail.id) is None
    notice = fleet.notices(with_mail.billing_email)[-1]
    assert notice["Subject"] == f"Your account {with_mail.id} has been suspended"
    episode = info["episode"]["id"]
    assert notice["Message-ID"] == f"<arrears.{with_mail.id}.{episode}.suspension@{MESSAGE_DOMAIN}>"
