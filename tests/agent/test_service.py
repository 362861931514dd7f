"""The Python API (:mod:`agent.service`) as a billing system or a panel uses it: a payment or a ledger line
sent twice credits once, records arrive already parsed and are checked as an import checks them (with the
field's path), an admin action with an idempotency key is done once, paged reports add up to the whole
report, and every refusal is a typed error that wrote nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from agent.imports import parse_instant
from agent.service import Arrears as Service
from agent.service import InvalidInput, NotFound, Refused
from tests.backends import query
from tests.scenarios.harness import Arrears, day

T = TypeVar("T")

ACCOUNTS = [{"id": f"acct-{n:02d}", "username": f"user{n}", "billing_email": f"u{n}@example.org"} for n in range(5)]


@pytest.fixture
def a(tmp_path: Path) -> Arrears:
    a = Arrears.create(tmp_path / "cfg", accounts=ACCOUNTS)
    for n, acc in enumerate(ACCOUNTS[:4]):
        a.charge(acc["id"], 0, f"{10 * (n + 1)}.00", f"c-{n}")
    a.run(0)
    return a


def test_a_payment_sent_twice_credits_once_and_answers_the_first(a: Arrears) -> None:
    with Service.open(a.folder, actor="billing") as svc:
        first = svc.payment("acct-00", "10.00", method="card", ref="inv-1", now=parse_instant(day(1)))
        again = svc.payment("acct-00", Decimal("10.00"), method="card", ref="inv-1", now=parse_instant(day(2)))
        assert (first.repeated, again.repeated) == (False, True)
        assert again.to_json() == first.to_json()  # the first payment, paid at day 1
        assert [e.amount for e in svc.history("acct-00").ledger if e.kind == "payment"] == [Decimal("10.00")]
        assert svc.show("acct-00", now=parse_instant(day(2))).balance == Decimal("0.00")
        with pytest.raises(Refused, match="already has a ledger entry with ref 'inv-1'"):
            svc.payment("acct-00", "11.00", ref="inv-1", now=parse_instant(day(2)))
        assert svc.history("acct-00").audit[-1].actor == "billing"
    # the command line records a new payment each time: a known ref stays a mistake there
    assert "already has a ledger entry with ref 'inv-1'" in a.fails("payment", "acct-00", "10.00", "--ref", "inv-1",
                                                                     "--at", day(3))


def test_one_ledger_line_is_checked_as_an_import_and_posted_once(a: Arrears) -> None:
    line = {"account": "acct-01", "at": day(1, 8), "amount": "-5.00", "kind": "charge", "ref": "fee-1"}
    with Service.open(a.folder) as svc:
        posted = svc.post_ledger(line, now=parse_instant(day(1)))
        assert (posted.amount, posted.kind, posted.repeated) == (Decimal("-5.00"), "charge", False)
        assert svc.post_ledger(line, now=parse_instant(day(1))).repeated
        assert [e.ref for e in svc.history("acct-01").ledger].count("fee-1") == 1
        with pytest.raises(Refused):
            svc.post_ledger({**line, "amount": "-6.00"}, now=parse_instant(day(1)))
        with pytest.raises(InvalidInput) as bad:
            svc.post_ledger({**line, "ref": "fee-2", "amount": "-5.001"}, now=parse_instant(day(1)))
        assert bad.value.field == "amount" and str(bad.value).startswith("amount: ")
        with pytest.raises(InvalidInput) as unknown:
            svc.post_ledger({**line, "account": "nobody"}, now=parse_instant(day(1)))
        assert unknown.value.field == "account"


def test_records_are_checked_as_an_import_checks_them_and_a_bad_one_writes_nothing(a: Arrears) -> None:
    before = a.dump()
    good = {"id": "new-01", "username": "new1", "billing_email": "n1@example.org"}
    with Service.open(a.folder) as svc:
        with pytest.raises(InvalidInput) as bad:
            svc.import_records("accounts", [good, {"id": "new-02", "billing_email": "not an address"}],
                               now=parse_instant(day(1)))
        assert bad.value.field == "records[1].billing_email"
        assert a.dump() == before
        result = svc.import_records("accounts", [good], now=parse_instant(day(1)))
        assert (result.created, result.updated) == (1, 0)
        view = svc.upsert_account({**good, "plan": "gold"}, now=parse_instant(day(1)))
        assert (view.id, view.plan, view.state) == ("new-01", "gold", "active")
        with pytest.raises(InvalidInput) as upsert:
            svc.upsert_account({"id": "new-03", "currency": "dollars"}, now=parse_instant(day(1)))
        assert upsert.value.field == "currency"


def test_an_admin_action_with_an_idempotency_key_is_done_once(a: Arrears) -> None:
    now = parse_instant(day(1))
    with Service.open(a.folder, actor="panel") as svc:
        first = svc.suspend("acct-04", reason="abuse report", now=now, idempotency_key="k-1")
        again = svc.suspend("acct-04", reason="abuse report", now=now, idempotency_key="k-1")
        assert again == first and first.holds_placed == ["admin"]
        assert [h.kind for h in svc.history("acct-04").holds] == ["admin"]
        with pytest.raises(Refused, match="already suspended"):  # without the key it is a second suspension
            svc.suspend("acct-04", reason="abuse report", now=now)
        with pytest.raises(Refused, match="idempotency key 'k-1' was used for suspend"):
            svc.resume("acct-04", now=now, idempotency_key="k-1")


def _twice_at_once(pg_url: str, account: str, call: Callable[[], T]) -> tuple[T, T]:
    """``call`` made twice at the same moment: both wait while another transaction holds ``account``'s row
    (until PostgreSQL shows both waiting for a lock), then both go on."""
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.connect() as conn, ThreadPoolExecutor(2) as pool:
            held = conn.begin()
            conn.execute(text("SELECT id FROM accounts WHERE id = :id FOR UPDATE"), {"id": account})
            calls = [pool.submit(call) for _ in range(2)]
            deadline = time.monotonic() + 60
            while query(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock'")[0][0] < 2:
                assert time.monotonic() < deadline, "the two calls never waited for the account's row"
                assert not any(c.done() for c in calls), [c.result() for c in calls if c.done()]
                time.sleep(0.02)
            held.commit()
            first, again = (c.result(timeout=60) for c in calls)
            return first, again
    finally:
        engine.dispose()


@pytest.mark.servers
def test_one_key_or_ref_sent_twice_at_the_same_moment_is_done_once(tmp_path: Path, pg_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A panel retrying a suspension, and billing retrying a payment and a ledger line, each twice at once on
    PostgreSQL: one call does the work, the other answers what it did."""
    monkeypatch.setattr(Arrears, "new_database", staticmethod(lambda: pg_url))
    a = Arrears.create(tmp_path / "cfg", accounts=ACCOUNTS)
    now = parse_instant(day(1))
    with Service.open(a.folder, db=pg_url, actor="panel") as svc:
        first, again = _twice_at_once(pg_url, "acct-04", lambda: svc.suspend(
            "acct-04", reason="abuse report", now=now, idempotency_key="k-1"))
        assert again == first and first.holds_placed == ["admin"]
        paid = _twice_at_once(pg_url, "acct-03", lambda: svc.payment("acct-03", "10.00", method="card",
                                                                     ref="inv-7", now=now))
        assert sorted(p.repeated for p in paid) == [False, True] and paid[0].to_json() == paid[1].to_json()
        line = {"account": "acct-02", "at": day(1, 8), "amount": "-5.00", "kind": "charge", "ref": "fee-7"}
        posted = _twice_at_once(pg_url, "acct-02", lambda: svc.post_ledger(line, now=now))
        assert sorted(p.repeated for p in posted) == [False, True]
        history = svc.history("acct-04")
        assert [h.kind for h in history.holds] == ["admin"]
        assert [e.action for e in history.audit].count("manual.suspend") == 1
        assert [e.ref for e in svc.history("acct-03").ledger].count("inv-7") == 1
        assert [e.ref for e in svc.history("acct-02").ledger].count("fee-7") == 1


def test_paged_debtors_add_up_to_the_report(a: Arrears) -> None:
    whole = a.json("debtors", "--at", day(1))
    assert len(whole) == 4
    rows: list[object] = []
    cursor = None
    with Service.open(a.folder) as svc:
        while True:
            page = svc.debtors(now=parse_instant(day(1)), cursor=cursor, limit=3)
            rows += [r.to_json() for r in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert rows == whole
        with pytest.raises(InvalidInput) as bad:
            svc.debtors(cursor="not-a-cursor")
        assert bad.value.field == "cursor"
        assert [j.status for j in svc.jobs(status="done").items] and not svc.jobs(status="failed").items


def test_unknown_accounts_and_bad_values_are_typed_errors(a: Arrears) -> None:
    with Service.open(a.folder) as svc:
        with pytest.raises(NotFound) as missing:
            svc.show("nobody")
        assert (missing.value.what, missing.value.key, str(missing.value)) == ("account", "nobody",
                                                                               "unknown account 'nobody'")
        with pytest.raises(InvalidInput) as amount:
            svc.can_spend("acct-00", "-1", now=parse_instant(day(1)))
        assert amount.value.field == "amount"
        with pytest.raises(InvalidInput) as until:
            svc.exempt("acct-00", "2020-01-01", reason="x", now=parse_instant(day(1)))
        assert until.value.field == "until"
        verdict = svc.can_spend("acct-00", "0", now=parse_instant(day(1)))
    cli = a.invoke("can-spend", "acct-00", "0", "--at", day(1), "--json")
    assert (cli.exit_code, json.loads(cli.stdout)) == (1, verdict.to_json())  # a debtor may not buy
