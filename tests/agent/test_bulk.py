"""The bulk writer stores exactly what SQLAlchemy itself would, and insert_ignore says which rows it wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, text

from agent.store import models as m
from agent.store.bulk import in_keys, insert_ignore, table_of, write_rows
from agent.store.db import Store

AT = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))


def _account(aid: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": aid, "username": "Ann", "billing_email": None, "plan": None, "reseller": None,
                           "currency": "EUR", "trial_ends_at": None, "has_billing_profile": True, "policy": None,
                           "resources": {}, "state": "active", "next_check_at": AT, "changed_at": AT,
                           "created_at": AT, "updated_at": AT}
    return {**row, **extra}


def _raw(store: Store, table: str, order: str) -> list[tuple[Any, ...]]:
    with store.session() as s:
        return [tuple(r) for r in s.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]


def test_rows_are_stored_as_sqlalchemy_stores_them(store: Store) -> None:
    accounts = table_of(m.Account)
    mine = [_account("a1", policy={"credit_limit": 5}, resources={"web": {"host": "w1", "sites": ["a.example"]}},
                     trial_ends_at=AT + timedelta(microseconds=7)), _account("a2")]
    theirs = [{**r, "id": r["id"] + "-sa"} for r in mine]
    with store.session() as s:
        write_rows(s, accounts, mine)
        s.execute(insert(accounts), theirs)
    a1, b1, a2, b2 = _raw(store, "accounts", "id")
    assert (a1[1:], a2[1:]) == (b1[1:], b2[1:])
    ledger = table_of(m.LedgerEntry)
    entry = {"at": AT, "amount": Decimal("-5.10"), "kind": "charge", "method": None, "imported_at": AT}
    with store.session() as s:
        assert len(insert_ignore(s, ledger, [{**entry, "account": "a1", "ref": "r1"}], key=("account", "ref"))) == 1
        s.execute(insert(ledger), [{**entry, "account": "a2", "ref": "r1"}])
    mine_row, sa_row = _raw(store, "ledger", "account")
    assert mine_row[2:] == sa_row[2:]
    if store.engine.dialect.name == "sqlite":  # stored as text there: the same text, in UTC
        assert "2026-03-01 07:30:00.000000" in mine_row


def test_insert_ignore_returns_only_the_rows_it_wrote(store: Store) -> None:
    ledger = table_of(m.LedgerEntry)
    with store.session() as s:
        write_rows(s, table_of(m.Account), [_account("a1")])

    def entry(ref: str) -> dict[str, Any]:
        return {"account": "a1", "at": AT, "amount": Decimal(1), "kind": "payment", "method": None, "ref": ref,
                "imported_at": datetime(2026, 3, 2, tzinfo=UTC)}

    with store.session() as s:
        assert sorted(insert_ignore(s, ledger, [entry("r1"), entry("r2")], key=("account", "ref"))) == \
            [("a1", "r1"), ("a1", "r2")]
        # one known, one repeated within the rows, one new: only the new one is written and returned
        assert list(insert_ignore(s, ledger, [entry("r2"), entry("r3"), entry("r3")], key=("account", "ref"))) == \
            [("a1", "r3")]
    assert [r[6] for r in _raw(store, "ledger", "ref")] == ["r1", "r2", "r3"]


def test_in_keys_matches_exactly_the_listed_keys(store: Store) -> None:
    accounts = table_of(m.Account)
    ids = ["a1", "o'neil", "zoë", "x" * 64, "a1-b"]
    with store.session() as s:
        write_rows(s, accounts, [_account(aid) for aid in ids])
    stmt = select(accounts.c.id).where(in_keys(accounts.c.id, "ids"), accounts.c.currency == bindparam("cur"))
    with store.session() as s:
        def found(keys: list[str], currency: str = "EUR") -> list[str]:
            return sorted(s.scalars(stmt, {"ids": keys, "cur": currency}))

        assert found([]) == []
        assert found(["a1", "a1", "nobody", "A1", "a1 "]) == ["a1"]
        assert found([*ids, "zoe"]) == sorted(ids)
        assert found(ids, "USD") == []  # the other conditions still hold
        many = [f"k{i}" for i in range(40_000)] + ["zoë"]  # past SQLite's 32,766 parameters of one statement
        assert found(many) == ["zoë"]
