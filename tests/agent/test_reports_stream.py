"""Reports over every account read them a chunk at a time and print as they go."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from agent.cli.app import emit_json, emit_json_array
from agent.store import models as m
from agent.store.db import Store
from agent.store.repo import due_select, iter_accounts

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _fill(store: Store, n: int) -> None:
    with store.session() as s:
        for i in range(n):
            s.add(m.Account(id=f"a{i:03d}", state="deleted" if i % 4 == 0 else "active", resources={},
                            next_check_at=NOW + timedelta(days=i % 3)))


def test_iter_accounts_reads_every_selected_account_once_in_chunks(store: Store) -> None:
    _fill(store, 23)
    with store.session() as s:
        chunks = list(iter_accounts(s, select(m.Account).where(m.Account.state != "deleted"), chunk=5))
        assert all(len(c) <= 5 for c in chunks)
        ids = [a.id for c in chunks for a in c]
        assert ids == sorted(a.id for a in s.scalars(select(m.Account).where(m.Account.state != "deleted")))
        assert len(ids) == 17
        assert len(list(iter_accounts(s, chunk=23))) == 1  # an exact multiple ends without an empty chunk
        due = [a.id for c in iter_accounts(s, due_select(NOW + timedelta(days=1)), chunk=4) for a in c]
        assert due == [f"a{i:03d}" for i in range(23) if i % 3 < 2]


def test_iter_accounts_of_nothing_yields_nothing(store: Store) -> None:
    with store.session() as s:
        assert list(iter_accounts(s)) == []


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                     max_leaves=8)


def _printed(f: Any, items: list[Any]) -> str:
    import click

    @click.command()
    def show() -> None:
        f(items)

    return CliRunner().invoke(show, catch_exceptions=False).output


@given(st.lists(_json, max_size=5))
def test_a_streamed_json_array_prints_what_the_whole_list_prints(items: list[Any]) -> None:
    streamed = _printed(lambda xs: emit_json_array(iter(xs)), items)
    assert streamed == _printed(emit_json, items)
    assert json.loads(streamed) == items


_row = st.dictionaries(st.text(), st.none() | st.booleans() | st.text() | st.integers(), max_size=4)


@settings(max_examples=25, deadline=None)
@given(st.lists(_row, max_size=450))
def test_report_rows_of_plain_values_stream_as_the_whole_list_prints(rows: list[dict[str, Any]]) -> None:
    """Rows of text, true, false and null (a report's rows, written without the indenting encoder), over
    several writes of rows, print exactly what ``json.dumps`` prints for the whole list."""
    streamed = _printed(lambda xs: emit_json_array(iter(xs)), rows)
    assert streamed == _printed(emit_json, rows)


def test_csv_written_in_chunks_is_the_same_csv() -> None:
    import click

    from agent.cli.app import emit_csv

    rows = [[f"a{i}", f"-{i}.50", "=cmd()" if i % 2 else "x\x1b[31m"] for i in range(7)]

    def run(chunk: int) -> str:
        @click.command()
        def show() -> None:
            emit_csv(["account", "balance", "note"], iter(rows), numeric=frozenset({"balance"}), chunk=chunk)

        return CliRunner().invoke(show, catch_exceptions=False).output

    out = run(2)
    assert out == run(500)
    assert out.splitlines()[0] == "account,balance,note"
    assert out.splitlines()[1:3] == ["a0,-0.50,x\x1b[31m", "a1,-1.50,'=cmd()"]
    assert len(out.splitlines()) == 8
