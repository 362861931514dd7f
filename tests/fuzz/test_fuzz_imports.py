"""Fuzzing the accounts, ledger and invoices importers (JSON lines and CSV), called directly.

Whatever a file holds, an import either succeeds, and then everything it stored can be used (every
amount fits its account's currency, every instant is on the calendar, the engine evaluates every account
and its balance can be written in a notice), or it raises :class:`ImportFileError` naming the file and a
line, and the database is exactly as it was (``iterdump()``). One in-memory database per test; every
example runs in a transaction that is rolled back, so the next starts from the same seeded state.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.imports import EARLIEST, LATEST, ImportFileError, import_accounts, import_invoices, import_ledger
from agent.notices import format_money
from agent.store import models as m
from agent.store.db import Store, open_store
from agent.store.repo import load_snapshots
from agent.tick import resolve_for
from policy import evaluate, load_policy
from policy.money import parse_amount
from tests.fuzz.strategies import ACCOUNTS, csv_file, json_lines, text_file
from tests.scenarios.harness import POLICY

NOW = datetime(2026, 3, 1, tzinfo=UTC)
EVAL_AT = datetime(2026, 6, 1, tzinfo=UTC)
PS = load_policy(POLICY.replace("{resume}", "true"), "policy.yaml")

Importer = Callable[[Session, Path], Any]
IMPORTERS: dict[str, Importer] = {
    "accounts": lambda s, p: import_accounts(s, p, NOW, PS),
    "ledger": lambda s, p: import_ledger(s, p, NOW),
    "invoices": lambda s, p: import_invoices(s, p, NOW),
}


@contextmanager
def seeded_store() -> Iterator[tuple[Store, Path]]:
    """One in-memory database with an account per currency, one charge and one invoice; and a folder."""
    store = open_store("sqlite://")
    shm = Path("/dev/shm")  # files in memory: each example writes one
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        base = Path(folder)
        (base / "a.jsonl").write_text("".join(f'{{"id": "{a}", "currency": "{c}"}}\n' for a, c in ACCOUNTS.items()))
        (base / "l.jsonl").write_text('{"account": "usd-01", "at": "2026-02-01T00:00:00Z", "amount": "-10.00", '
                                      '"ref": "seed"}\n')
        (base / "i.jsonl").write_text('{"account": "yen-01", "id": "seed", "issued_at": "2026-02-01T00:00:00Z", '
                                      '"due_at": "2026-02-10T00:00:00Z", "amount": "1000"}\n')
        with store.session() as s:
            import_accounts(s, base / "a.jsonl", NOW, PS)
            import_ledger(s, base / "l.jsonl", NOW)
            import_invoices(s, base / "i.jsonl", NOW)
        try:
            yield store, base
        finally:
            store.close()


def dump(store: Store) -> list[str]:
    con = store.engine.raw_connection()
    try:
        return list(con.driver_connection.iterdump())  # type: ignore[union-attr]
    finally:
        con.close()


class _Undo(Exception):
    """Rolls an accepted import back, so the next example starts from the seeded state."""


def usable(s: Session, touched: set[str]) -> None:
    """Everything stored can be used: amounts fit the currency, instants are on the calendar, the engine
    evaluates every account the import touched and its balance can be written in a notice."""
    currency: dict[str, str] = {aid: cur for aid, cur in s.execute(select(m.Account.id, m.Account.currency))}
    accounts = list(s.scalars(select(m.Account).where(m.Account.id.in_(sorted(touched)))))
    for e in s.scalars(select(m.LedgerEntry)):
        parse_amount(e.amount, currency=currency[e.account])
        assert EARLIEST <= e.at < LATEST
    for inv in s.scalars(select(m.Invoice)):
        parse_amount(inv.amount, currency=currency[inv.account])
        assert EARLIEST <= inv.issued_at <= inv.due_at < LATEST
    snaps = load_snapshots(s, accounts)
    for acc in accounts:
        assert acc.trial_ends_at is None or EARLIEST <= acc.trial_ends_at < LATEST
        resolved = resolve_for(PS, acc)
        decision = evaluate(snaps[acc.id], resolved, EVAL_AT)
        format_money(decision.balance, acc.currency, "de")
        format_money(resolved.credit_limit, acc.currency, "en")


def attempt(store: Store, folder: Path, kind: str, suffix: str, text: str, before: list[str]) -> None:
    """Import ``text``; ``before`` is the seeded database's dump, which it must still be afterwards (a rejected
    import wrote nothing; an accepted one is rolled back here)."""
    path = folder / f"{kind}{suffix}"
    path.write_text(text, encoding="utf-8", newline="")
    s = store.sessions()
    try:
        with s.begin():
            summary = IMPORTERS[kind](s, path)
            usable(s, summary.accounts)
            raise _Undo
    except ImportFileError as exc:
        assert str(exc).startswith(f"{path}:"), str(exc)
    except _Undo:
        pass
    finally:
        s.close()
    assert dump(store) == before


def fuzz(kind: str, suffix: str, files: st.SearchStrategy[str]) -> None:
    with seeded_store() as (store, folder):
        seeded = dump(store)

        @given(text=files)
        def run(text: str) -> None:
            attempt(store, folder, kind, suffix, text, seeded)

        run()


def test_fuzz_accounts_jsonl() -> None:
    fuzz("accounts", ".jsonl", json_lines("accounts"))


def test_fuzz_accounts_csv() -> None:
    fuzz("accounts", ".csv", csv_file("accounts"))


def test_fuzz_ledger_jsonl() -> None:
    fuzz("ledger", ".jsonl", json_lines("ledger"))


def test_fuzz_ledger_csv() -> None:
    fuzz("ledger", ".csv", csv_file("ledger"))


def test_fuzz_invoices_jsonl() -> None:
    fuzz("invoices", ".jsonl", json_lines("invoices"))


def test_fuzz_invoices_csv() -> None:
    fuzz("invoices", ".csv", csv_file("invoices"))


def test_fuzz_any_text_as_any_import() -> None:
    with seeded_store() as (store, folder):
        seeded = dump(store)

        @given(kind=st.sampled_from(sorted(IMPORTERS)), suffix=st.sampled_from([".jsonl", ".csv"]), text=text_file())
        def run(kind: str, suffix: str, text: str) -> None:
            attempt(store, folder, kind, suffix, text, seeded)

        run()
