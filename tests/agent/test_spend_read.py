"""The purchase gate's single-account read gives the snapshot the batched read gives, on both backends:
same ledger and invoice order, only open holds and overrides in force, the open episode with its stages
(a resume is no stage; taken, undelivered and in-flight ones as the batch reads them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from agent.store import models as m
from agent.store.db import Store
from agent.store.prepared import end_reads
from agent.store.repo import UnknownAccount, load_snapshots, spend_snapshot

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _day(n: int) -> datetime:
    return T0 + timedelta(days=n, seconds=n * 7)


def _fill(store: Store) -> None:
    with store.session() as s:
        s.add(m.Account(id="full", plan="gold", reseller="r1", currency="EUR", trial_ends_at=_day(2),
                        has_billing_profile=False, state="suspended", policy={"credit_limit": 50}))
        s.add(m.Account(id="bare"))
        s.add(m.Account(id="gone", state="deleted"))
        s.flush()
        for i, (at, amount, kind, method) in enumerate([(_day(3), "-10.00", "charge", None),
                                                         (_day(1), "4.50", "payment", "card"),
                                                         (_day(3), "-0.01", "charge", None),
                                                         (_day(5), "1", "adjustment", None)]):
            s.add(m.LedgerEntry(account="full", at=at, amount=Decimal(amount), kind=kind, method=method,
                                ref=f"r{i}"))
        s.add(m.LedgerEntry(account="gone", at=_day(1), amount=Decimal("-3"), kind="charge", ref="g"))
        s.add(m.Invoice(account="full", invoice_id="INV-2", issued_at=_day(1), due_at=_day(9), amount=Decimal("7")))
        s.add(m.Invoice(account="full", invoice_id="INV-1", issued_at=_day(0), due_at=_day(4), amount=Decimal("3"),
                        paid_at=_day(6)))
        s.add(m.Hold(account="full", kind="debt", since=_day(4), reason="stage credit_hold", actor="agent"))
        s.add(m.Hold(account="full", kind="admin", since=_day(2), reason="old", actor="ops", released_at=_day(3)))
        s.add(m.Hold(account="full", kind="trial", since=_day(1), reason=None, actor=None))
        s.add(m.Override(account="full", kind="guarantee", actor="ops", reason="promised", created_at=_day(2),
                         expires_at=_day(8), amount=Decimal("20.00")))
        s.add(m.Override(account="full", kind="debt_date", actor="ops", reason="moved", created_at=_day(1),
                         at=_day(0)))
        s.add(m.Override(account="full", kind="exempt", actor="ops", reason="revoked", created_at=_day(1),
                         expires_at=_day(9), revoked_at=_day(2)))
        old = m.Episode(account="full", started_at=_day(0), trigger="subzero_period", ended_at=_day(1))
        open_ = m.Episode(account="full", started_at=_day(3), trigger="over_credit_limit")
        s.add_all([old, open_])
        s.flush()
        s.add(m.StageTaken(episode=old.id, account="full", stage="notice", action="notice", status="taken",
                           queued_at=_day(0), at=_day(0)))
        for stage, action, status, at in [("warn", "notice", "undelivered", _day(5)),
                                          ("notice", "notice", "taken", _day(4)),
                                          ("credit_hold", "suspend", "taken", _day(4)),
                                          ("resume", "resume", "taken", _day(5)),
                                          ("final", "notice", "in_flight", None),
                                          ("delete", "delete", "failed", None)]:
            s.add(m.StageTaken(episode=open_.id, account="full", stage=stage, action=action, status=status,
                               queued_at=_day(3), at=at))


@pytest.mark.parametrize("account", ["full", "bare", "gone"])
def test_the_single_account_read_is_the_batched_snapshot(store: Store, account: str) -> None:
    _fill(store)
    with store.session() as s:
        expected = load_snapshots(s, [s.get_one(m.Account, account)])[account]
    with store.engine.connect() as c:
        row, snap = spend_snapshot(c, account)
    assert snap == expected
    assert (row.id, row.currency) == (account, expected.currency)
    if account == "full":  # the comparison is over something: the inputs are there, in their order
        assert [e.ref for e in snap.ledger] == ["r1", "r0", "r2", "r3"]
        assert [i.id for i in snap.invoices] == ["INV-1", "INV-2"]
        assert [h.kind for h in snap.holds] == ["debt", "trial"]
        assert [o.kind for o in snap.overrides] == ["guarantee", "debt_date"]
        assert snap.episode is not None and [t.stage for t in snap.episode.stages_taken][-1] == "warn"
        assert snap.in_flight == ("final",) and row.policy == {"credit_limit": 50}


def test_an_unknown_account_is_refused_by_name(store: Store) -> None:
    with store.engine.connect() as c, pytest.raises(UnknownAccount, match="'nobody'"):
        spend_snapshot(c, "nobody")


def test_a_connection_kept_open_holds_no_transaction_between_reads(store: Store) -> None:
    """The purchase gate keeps its connection open between requests (agent.api.gate): once a read is done
    its transaction is over, so it holds no lock (PostgreSQL's driver opens one by itself) and the next
    read sees what was committed meanwhile."""
    _fill(store)
    with store.engine.connect() as kept:
        assert spend_snapshot(kept, "bare")[1].ledger == ()
        end_reads(kept)
        if store.engine.dialect.name == "postgresql":
            with store.engine.connect() as other:
                idle = other.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND state = 'idle in transaction'")).scalar()
            assert idle == 0
        with store.session() as s:
            s.add(m.LedgerEntry(account="bare", at=_day(1), amount=Decimal("-3.00"), kind="charge", ref="late",
                                imported_at=_day(1)))
        assert [e.ref for e in spend_snapshot(kept, "bare")[1].ledger] == ["late"]
        end_reads(kept)
