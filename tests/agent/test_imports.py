"""Imports: exact amounts, placements from resources, updates, CSV, idempotent ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.imports import ImportFileError, import_accounts, import_invoices, import_ledger, parse_instant
from agent.store import models as m
from agent.store.db import Store
from policy.loader import PolicySet

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


ACCOUNT = {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example", "plan": "basic",
           "currency": "EUR", "has_billing_profile": False, "trial_ends_at": "2026-03-10T00:00:00+01:00",
           "resources": {"web": {"host": "web1", "sites": ["acme.example"]},
                         "mail": {"host": "mail1", "mailboxes": ["info@acme.example"]},
                         "home": {"host": "web1", "path": "/home/acme"}}}


def test_accounts_and_their_placements(store: Store, policy: PolicySet, tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [ACCOUNT])
    with store.session() as s:
        summary = import_accounts(s, path, NOW, policy)
    assert (summary.created, summary.updated) == (1, 0)
    with store.session() as s:
        acc = s.get(m.Account, "acme-01")
        assert acc is not None
        assert (acc.state, acc.currency, acc.has_billing_profile) == ("active", "EUR", False)
        assert acc.trial_ends_at == datetime(2026, 3, 9, 23, tzinfo=UTC)
        placements = {(p.service, p.host): p.resource for p in s.scalars(select(m.Placement))}
    assert placements == {("web", "web1"): {"sites": ["acme.example"]},
                          ("mail", "mail1"): {"mailboxes": ["info@acme.example"]},
                          ("home", "web1"): {"path": "/home/acme"}}


def test_reimport_updates_and_moves_placements(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        import_accounts(s, write(tmp_path / "a.jsonl", [ACCOUNT]), NOW)
    moved = {**ACCOUNT, "plan": "pro", "resources": {"web": {"host": "web2", "sites": ["acme.example"]}}}
    with store.session() as s:
        summary = import_accounts(s, write(tmp_path / "b.jsonl", [moved]), NOW)
    assert (summary.created, summary.updated) == (0, 1)
    with store.session() as s:
        assert s.get(m.Account, "acme-01").plan == "pro"  # type: ignore[union-attr]
        assert [(p.service, p.host) for p in s.scalars(select(m.Placement))] == [("web", "web2")]
    with store.session() as s:
        assert import_accounts(s, write(tmp_path / "c.jsonl", [moved]), NOW).skipped == 1


def test_ledger_amounts_are_exact_and_refs_dedupe(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        import_accounts(s, write(tmp_path / "a.jsonl", [{"id": "a1"}]), NOW)
    path = tmp_path / "l.jsonl"
    path.write_text('{"account": "a1", "at": "2026-03-01T00:00:00Z", "amount": -0.10, "ref": "c1"}\n'
                    '{"account": "a1", "at": "2026-03-01T00:00:00Z", "amount": -0.20, "ref": "c2"}\n'
                    '{"account": "a1", "at": "2026-03-02T00:00:00Z", "amount": 0.30, "method": "card"}\n'
                    '{"account": "a1", "at": "2026-03-02T00:00:00Z", "amount": 0.30, "method": "card"}\n')
    with store.session() as s:
        summary = import_ledger(s, path, NOW)
    # the last line repeats the one before (no ref: its content is the key)
    assert (summary.created, summary.skipped) == (3, 1)
    with store.session() as s:
        rows = list(s.execute(select(m.LedgerEntry.amount, m.LedgerEntry.kind).order_by(m.LedgerEntry.id)))
    assert rows == [(Decimal("-0.10"), "charge"), (Decimal("-0.20"), "charge"), (Decimal("0.30"), "payment")]
    assert sum(a for a, _ in rows) == 0


def test_ledger_sign_must_match_kind(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        import_accounts(s, write(tmp_path / "a.jsonl", [{"id": "a1"}]), NOW)
    path = write(tmp_path / "l.jsonl", [{"account": "a1", "at": "2026-03-01T00:00:00Z", "amount": "-5",
                                         "kind": "payment"}])
    with pytest.raises(ImportFileError, match=r"l\.jsonl:1: amount: a payment is positive"), store.session() as s:
        import_ledger(s, path, NOW)


def test_csv_accounts_with_json_columns(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,username,billing_email,plan,has_billing_profile,resources\n'
                    'c1,carol,c@example.net,home,false,"{""login"": {""host"": ""shell1"", ""user"": ""carol""}}"\n')
    with store.session() as s:
        import_accounts(s, path, NOW)
    with store.session() as s:
        acc = s.get(m.Account, "c1")
        assert acc is not None and acc.has_billing_profile is False and acc.plan == "home"
        assert [(p.service, p.host, p.resource) for p in s.scalars(select(m.Placement))] == [
            ("login", "shell1", {"user": "carol"})]


def test_invoices_update_paid_at(store: Store, tmp_path: Path) -> None:
    with store.session() as s:
        import_accounts(s, write(tmp_path / "a.jsonl", [{"id": "a1"}]), NOW)
    inv = {"account": "a1", "id": "i-1", "issued_at": "2026-03-01T00:00:00Z", "due_at": "2026-03-15T00:00:00Z",
           "amount": "10.00"}
    with store.session() as s:
        assert import_invoices(s, write(tmp_path / "i.jsonl", [inv]), NOW).created == 1
    with store.session() as s:
        paid = {**inv, "paid_at": "2026-03-05T00:00:00Z"}
        assert import_invoices(s, write(tmp_path / "i2.jsonl", [paid]), NOW).updated == 1
    with store.session() as s:
        assert s.scalar(select(m.Invoice.paid_at)) == datetime(2026, 3, 5, tzinfo=UTC)


def test_parse_instant_requires_a_zone() -> None:
    assert parse_instant("2026-03-01T10:00:00Z") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="has no zone"):
        parse_instant("2026-03-01T10:00:00")


def _accounts_file(path: Path, n: int, last: dict | None = None, *, resources: bool = True) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"a{i:06d}", "plan": "basic",
                                "resources": {"web": {"host": "web1", "sites": [f"s{i}.example"]},
                                              "home": {"host": "web1", "path": f"/home/a{i:06d}"}}
                                if resources else {}}) + "\n")
        if last is not None:
            f.write(json.dumps(last) + "\n")
    return path


def _ledger_file(path: Path, n: int, accounts: int, last: str | None = None) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"account": f"a{i % accounts:06d}", "at": "2026-03-01T00:00:00Z",
                                "amount": "-1.00", "ref": f"r{i}"}) + "\n")
        if last is not None:
            f.write(last + "\n")
    return path


def _counts(store: Store) -> tuple[int, int, int, int]:
    with store.session() as s:
        return tuple(len(list(s.scalars(select(t.id)))) for t in  # type: ignore[return-value]
                     (m.Account, m.Placement, m.ResourceClaim, m.LedgerEntry))


@pytest.mark.parametrize(("last", "where", "message"), [
    ({"id": "thief", "resources": {"web": {"host": "web1", "sites": ["s3.example"]}}},
     "resources.web.sites[0]", "belongs to account a000003"),
    ({"id": "nested", "resources": {"home": {"host": "web1", "path": "/home/a000001/inside"}}},
     "resources.home.path", "lies inside /home/a000001, the home of account a000001"),
    ({"id": "a000002"}, "id", "account 'a000002' already appears on line 3"),
])
def test_a_bad_line_in_the_last_chunk_writes_nothing(store: Store, policy: PolicySet, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, last: dict, where: str,
                                                     message: str) -> None:
    monkeypatch.setattr("agent.imports.CHUNK_ROWS", 50)  # 120 good lines are three chunks; the bad one ends the third
    path = _accounts_file(tmp_path / "a.jsonl", 120, last)
    with pytest.raises(ImportFileError) as refused, store.session() as s:
        import_accounts(s, path, NOW, policy)
    assert str(refused.value).startswith(f"{path}:121: {where}: ")
    assert message in str(refused.value)
    assert _counts(store) == (0, 0, 0, 0)
    # without the bad line the same file imports whole, over its chunks
    with store.session() as s:
        assert import_accounts(s, _accounts_file(tmp_path / "ok.jsonl", 120), NOW, policy).created == 120
    assert _counts(store) == (120, 240, 240, 0)


def test_a_bad_ledger_line_in_the_last_chunk_writes_nothing(store: Store, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.imports.CHUNK_ROWS", 50)
    with store.session() as s:
        import_accounts(s, _accounts_file(tmp_path / "a.jsonl", 10), NOW)
    before = _counts(store)
    bad = '{"account": "a000001", "at": "2026-03-01T00:00:00Z", "amount": "-1.001", "ref": "x"}'
    path = _ledger_file(tmp_path / "l.jsonl", 120, 10, bad)
    with pytest.raises(ImportFileError, match=r"l\.jsonl:121: amount: "), store.session() as s:
        import_ledger(s, path, NOW)
    assert _counts(store) == before
    # a ref repeated in a later chunk is skipped, like a stored one
    repeat = '{"account": "a000001", "at": "2026-03-01T00:00:00Z", "amount": "-1.00", "ref": "r1"}'
    with store.session() as s:
        summary = import_ledger(s, _ledger_file(tmp_path / "l2.jsonl", 120, 10, repeat), NOW)
    assert (summary.created, summary.skipped) == (120, 1)


def _peak(run: object) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_in_the_size_of_the_file(sqlite_store: Store, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten times the lines take about the same memory: no list of all records is kept. (On SQLite only:
    the import reads the file the same way on both, and under tracemalloc it takes a minute on PostgreSQL.)"""
    store = sqlite_store
    monkeypatch.setattr("agent.imports.CHUNK_ROWS", 100)
    with store.session() as s:
        import_accounts(s, write(tmp_path / "one.jsonl", [{"id": "a000000"}]), NOW)
    peaks = {}
    for n in (1_000, 10_000, 1_000):  # the first small run warms the statement caches
        path = _ledger_file(tmp_path / f"l{n}.jsonl", n, 1)
        with store.session() as s:
            peaks[n] = _peak(lambda s=s, path=path: import_ledger(s, path, NOW))
            s.rollback()
    assert peaks[10_000] < 1.5 * peaks[1_000], peaks
    peaks = {}
    for n in (1_000, 10_000, 1_000):
        path = _accounts_file(tmp_path / f"a{n}.jsonl", n, resources=False)
        with store.session() as s:
            peaks[n] = _peak(lambda s=s, path=path: import_accounts(s, path, NOW))
            s.rollback()
    # what grows is the set of the file's account ids (under 200 bytes an account), not the records
    assert peaks[10_000] < 1.5 * peaks[1_000] + 9_000 * 200, peaks
