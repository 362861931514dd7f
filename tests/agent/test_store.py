"""The store on SQLite and on PostgreSQL: migrations from an empty database match the models, old databases
are migrated with their data, money is exact and timestamps aware; SQLite's pragmas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from agent.store import models as m
from agent.store.db import Store, StoreError, current_revision, head_revision, json_text, open_store


def test_migrations_create_exactly_the_models(empty_db_url: str) -> None:
    store = open_store(empty_db_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), m.Base.metadata)
        assert diff == []
        assert current_revision(store.engine) == head_revision()
        if store.engine.dialect.name == "postgresql":  # the database's own exact and zoned types
            with store.engine.connect() as conn:
                types = dict(conn.execute(text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'ledger' AND column_name IN ('amount', 'at')")).all())
            assert types == {"amount": "numeric", "at": "timestamp with time zone"}
    finally:
        store.close()


def test_every_model_types_exactly_the_columns_of_its_table() -> None:
    for cls in m.Base.__subclasses__():
        typed = [name for name, hint in cls.__annotations__.items() if str(hint).startswith("Mapped[")]
        assert typed == [c.name for c in cls.__table__.columns], cls.__name__


def test_opening_again_keeps_the_data(empty_db_url: str) -> None:
    url = empty_db_url
    s = open_store(url)
    with s.session() as session:
        session.add(m.Account(id="a1", state="active", resources={}))
    s.close()
    s = open_store(url)
    with s.session() as session:
        assert session.scalar(select(m.Account.id)) == "a1"
    s.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("pragma journal_mode")).scalar() == "wal"
        assert conn.execute(text("pragma foreign_keys")).scalar() == 1
    store.close()


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"), store.session() as session:
        session.add(m.LedgerEntry(account="ghost", at=datetime(2026, 1, 1, tzinfo=UTC), amount=Decimal(1),
                                  kind="payment", ref="x"))


def test_money_is_exact(store: Store) -> None:
    amounts = [Decimal("0.10"), Decimal("0.20"), Decimal("-0.30"), Decimal("12345678901234567890.123456789")]
    with store.session() as session:
        session.add(m.Account(id="a1", state="active", resources={}))
        session.flush()
        for i, a in enumerate(amounts):
            session.add(m.LedgerEntry(account="a1", at=datetime(2026, 1, 1, tzinfo=UTC), amount=a, kind="adjustment",
                                      ref=f"r{i}"))
    with store.session() as session:
        got = list(session.scalars(select(m.LedgerEntry.amount).order_by(m.LedgerEntry.id)))
    assert got == amounts
    assert all(isinstance(a, Decimal) for a in got)
    assert sum(got[:3], Decimal(0)) == Decimal("0.00")


def test_money_refuses_floats(store: Store) -> None:
    with pytest.raises(StatementError, match="money must be a Decimal"), store.session() as session:
        session.add(m.Account(id="a1", state="active", resources={}))
        session.flush()
        session.add(m.LedgerEntry(account="a1", at=datetime(2026, 1, 1, tzinfo=UTC), amount=0.1,  # type: ignore[arg-type]
                                  kind="payment", ref="f"))


def test_timestamps_refuse_naive_and_come_back_aware_utc(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime"), store.session() as session:
        session.add(m.Account(id="a1", state="active", resources={}, next_check_at=datetime(2026, 1, 1)))
    amsterdam = timezone(timedelta(hours=1))
    with store.session() as session:
        session.add(m.Account(id="a2", state="active", resources={},
                              next_check_at=datetime(2026, 1, 1, 12, tzinfo=amsterdam)))
    with store.session() as session:
        value = session.scalar(select(m.Account.next_check_at).where(m.Account.id == "a2"))
    assert value == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_a_bad_database_url_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path / 'missing' / 'a.db'}")
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("::nonsense::")


def test_the_claims_migration_claims_existing_placements_in_order(empty_db_url: str) -> None:
    from agent.store.db import make_engine, migrate

    engine = make_engine(empty_db_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        for aid in ("a1", "b2", "c3"):
            conn.execute(text("INSERT INTO accounts (id, currency, has_billing_profile, state, resources) "
                              "VALUES (:id, 'USD', true, 'active', '{}')"), {"id": aid})
        for aid, service, resource in [
            ("a1", "home", '{"path": "/home/a"}'),
            ("b2", "home", '{"path": "/home/a"}'),  # a second owner from before: left unclaimed
            ("b2", "web", '{"sites": ["B.example."]}'),
            ("c3", "web", '{"sites": ["x;y"]}'),  # no validator accepts it: left unclaimed
        ]:
            conn.execute(text("INSERT INTO placements (account, service, host, resource, state) "
                              "VALUES (:a, :s, 'web1', :r, '{}')"), {"a": aid, "s": service, "r": resource})
    migrate(engine)
    with engine.connect() as conn:
        claims = conn.execute(text("SELECT account, service, key FROM resource_claims ORDER BY id")).all()
    engine.dispose()
    assert [tuple(c) for c in claims] == [("a1", "home", "/home/a"), ("b2", "web", "b.example")]


def test_the_head_known_from_the_file_names_is_alembics_head() -> None:
    from agent.store.revision import HEAD

    assert head_revision() == HEAD


def test_opening_a_current_database_reads_its_revision_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'a.db'}"
    open_store(url).close()
    probe = ("import sys; from agent.store.db import open_store; s = open_store(sys.argv[1]); s.close(); "
             "print(sorted(n for n in sys.modules if n.split('.')[0] == 'alembic'))")
    out = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_old_database_is_still_migrated_with_its_amounts_and_times(empty_db_url: str) -> None:
    from agent.store.db import make_engine, migrate

    engine = make_engine(empty_db_url)
    migrate(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:  # as revision 0001 stored them on both: decimal strings, UTC without a zone
        conn.execute(text("INSERT INTO accounts (id, currency, has_billing_profile, state, resources, next_check_at) "
                          "VALUES ('a1', 'USD', true, 'active', '{}', '2026-03-02 10:00:00')"))
        conn.execute(text("INSERT INTO ledger (account, at, amount, kind, ref) VALUES "
                          "('a1', '2026-03-01 23:30:00', '-12345678901234567890.10', 'charge', 'c1'), "
                          "('a1', '2026-03-02 08:00:00', '0.20', 'payment', 'p1')"))
    engine.dispose()
    s = open_store(empty_db_url)
    assert current_revision(s.engine) == head_revision()
    with s.session() as session:
        ledger = session.execute(select(m.LedgerEntry.at, m.LedgerEntry.amount).order_by(m.LedgerEntry.id)).all()
        eleven_at_utc_plus_one = datetime(2026, 3, 2, 11, tzinfo=timezone(timedelta(hours=1)))
        due = session.scalar(select(m.Account.id).where(m.Account.next_check_at <= eleven_at_utc_plus_one))
    s.close()
    assert [tuple(r) for r in ledger] == [
        (datetime(2026, 3, 1, 23, 30, tzinfo=UTC), Decimal("-12345678901234567890.10")),
        (datetime(2026, 3, 2, 8, tzinfo=UTC), Decimal("0.20"))]
    assert due == "a1"  # 10:00 UTC is 11:00 at UTC+1: compared as the same moment


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(_JSON_VALUES)
def test_a_json_column_holds_the_text_json_dumps_writes(value: object) -> None:
    assert json_text(value) == json.dumps(value)


def test_a_json_column_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_text({"at": datetime(2026, 3, 1, tzinfo=UTC)})
