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
