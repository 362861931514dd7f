"""Hostile values for the fuzz suite: amounts, instants, identifiers and whole JSON lines / CSV files.

Each strategy mixes values arrears must accept (so the importers get past their first check) with the
broken and hostile ones billing exports have been seen to carry: sub-minor-unit amounts, huge exponents,
NaN, instants at the ends of the calendar, huge numbers, deep nesting, oversized cells.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

__all__ = ["ACCOUNTS", "amounts", "csv_file", "instants", "json_lines", "json_values", "text_file"]

ACCOUNTS = {"usd-01": "USD", "yen-01": "JPY", "bhd-01": "BHD"}

# Sentinels replaced by raw JSON text after json.dumps (values json.dumps cannot write itself).
_RAW = {
    "@@BIGINT@@": "-" + "9" * 5000,
    "@@DEEP@@": "[" * 5000 + "]" * 5000,
    "@@DEEP40@@": "[" * 40 + "]" * 40,
    "@@NAN@@": "NaN",
    "@@INF@@": "-Infinity",
    "@@HUGEEXP@@": "-1e999999",
    "@@FLOAT@@": "1.5e3",
    "@@LONGFRAC@@": "0." + "0" * 300 + "1",
}
_SENTINELS = st.sampled_from(sorted(_RAW))


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """``good`` about ``odds`` times in ``odds + 1``, else ``bad``: most records get past the first check."""
    return st.one_of(*([good] * odds), bad)

_SPECIAL_AMOUNTS = ["-0.0001", "-1e999999", "1e999999", "NaN", "-Infinity", "sNaN", "1E+2", "0.5", "-0.5", "-1",
                    "-1.00", "1.250", "-1.2505", "1e15", "-999999999999999.99", "-0E-100", "0", "-0", " 12.50 ",
                    "12,50", "1_000", "0x10", "", "١٢", "-" + "9" * 70]


def amounts() -> st.SearchStrategy[Any]:
    """Amounts as billing writes them: decimal text, JSON numbers, and hostile forms."""
    good = st.one_of(
        st.decimals(min_value=-10**6, max_value=10**6, places=2).map(str),
        st.integers(min_value=-10**6, max_value=10**6).map(str),
        st.integers(min_value=-10**6, max_value=10**6),
        st.decimals(min_value=-10**6, max_value=10**6, places=3).map(str),
    )
    bad = st.one_of(
        st.sampled_from(_SPECIAL_AMOUNTS),
        st.decimals(allow_nan=True, allow_infinity=True, places=None).map(str),
        st.integers(min_value=-10**20, max_value=10**20),
        _SENTINELS,
        st.text(max_size=12),
        st.booleans(),
        st.none(),
    )
    return mostly(good, bad, 2)


_ZONES = st.one_of(st.just(UTC), st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))))


def instants() -> st.SearchStrategy[Any]:
    """ISO-8601 text: valid, zone-less, at both ends of the calendar, malformed."""
    good = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=_ZONES).map(
        lambda d: d.isoformat())
    return mostly(good, st.one_of(
        st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z",
                         "2999-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "2026-03-01", "2026-03-01T09:00:00",
                         "2026-02-30T00:00:00Z", "2026-03-01T09:00:00+24:00", "now", "", "2026-03-01T09:00:00Z"]),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES).map(
            lambda d: d.isoformat()),
        st.text(max_size=30),
        st.integers(),
    ))


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), _SENTINELS)
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=max_leaves)


_BAD_IDS = st.one_of(st.sampled_from(["nobody", "../etc", "", "a" * 65]), st.text(max_size=8))
_ACCOUNT_IDS = mostly(st.sampled_from(list(ACCOUNTS)), _BAD_IDS)
_NEW_IDS = mostly(st.sampled_from([*ACCOUNTS, "new-01", "new-02"]), _BAD_IDS)
_TEXT = mostly(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
               st.one_of(st.text(max_size=20), st.sampled_from(["a\nb", "\x00", "\x1b[8m", "x" * 400])))
_CURRENCIES = mostly(st.sampled_from(["USD", "JPY", "BHD", "EUR"]),
                     st.one_of(st.sampled_from(["XYZ", "usd", "US", "", "IRR"]), st.text(max_size=4)))

_LAYER = st.fixed_dictionaries({}, optional={
    "credit_limit": amounts(), "financial_threshold": amounts(), "currency": _CURRENCIES,
    "guaranteed_payment": st.fixed_dictionaries({}, optional={"limit": amounts(), "days": st.integers()}),
    "triggers": st.fixed_dictionaries({}, optional={"unpaid_total_over": amounts(), "max_delay": st.one_of(
        st.integers(), st.text(max_size=8), st.sampled_from(["36h", "9" * 5000 + "s"]))}),
})

_RESOURCES = mostly(st.dictionaries(
    st.sampled_from(["web", "mail", "login", "home", "Bad!"]),
    st.fixed_dictionaries({}, optional={"host": st.sampled_from(["web1", "mail1", "", "-x"]),
                                        "path": st.sampled_from(["/home/a", "/home/a/../b", "relative"]),
                                        "sites": json_values(3), "user": _TEXT,
                                        "port": st.one_of(_SENTINELS, st.integers())}), max_size=3),
                    json_values())

FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "accounts": {"id": _NEW_IDS, "username": _TEXT, "billing_email": st.one_of(_TEXT, st.just("a@b.example")),
                 "plan": _TEXT, "reseller": _TEXT, "currency": _CURRENCIES, "trial_ends_at": instants(),
                 "has_billing_profile": mostly(st.booleans(), _TEXT), "policy": mostly(_LAYER, json_values()),
                 "resources": _RESOURCES},
    "ledger": {"account": _ACCOUNT_IDS, "at": instants(), "amount": amounts(),
               "kind": mostly(st.sampled_from(["refund", "adjustment"]), st.sampled_from(["charge", "payment", "gift",
                                                                                         ""])),
               "method": _TEXT, "ref": _TEXT},
    "invoices": {"account": _ACCOUNT_IDS, "id": _TEXT, "issued_at": instants(), "due_at": instants(),
                 "amount": amounts(), "paid_at": instants()},
}


def _record(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = FIELDS[kind]
    required = {"accounts": ("id",), "ledger": ("account", "at", "amount"),
                "invoices": ("account", "id", "issued_at", "due_at", "amount")}[kind]
    return st.fixed_dictionaries({k: fields[k] for k in required},
                                 optional={k: v for k, v in fields.items() if k not in required})


def _with_unknown_field(record: dict[str, Any], unknown: bool) -> dict[str, Any]:
    return {**record, "colour": "blue"} if unknown else record


def _raw(text: str) -> str:
    for sentinel, raw in _RAW.items():
        text = text.replace(json.dumps(sentinel), raw)
    return text


_RAW_LINES = st.sampled_from(["not json", "[1, 2]", "", "   ", "# a comment", '{"a": 1e999999}', "\x00", "{",
                              '{"account": "usd-01"', "null", '"text"', "{}" * 3])


def json_lines(kind: str) -> st.SearchStrategy[str]:
    """A JSON lines file of ``kind`` records (sometimes with a broken line)."""
    record = st.builds(_with_unknown_field, _record(kind), st.sampled_from([False] * 10 + [True]))
    line = mostly(record.map(lambda r: _raw(json.dumps(r))), _RAW_LINES, 10)
    return st.lists(line, min_size=1, max_size=3).map(lambda lines: "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return _raw(json.dumps(value))
    if value is None:
        return ""
    return _raw(str(value)) if isinstance(value, str) and value in _RAW else str(value)


_HUGE_CELL = "x" * 140_000


@st.composite
def csv_file(draw: st.DrawFn, kind: str) -> str:
    """A CSV file of ``kind`` records: a header of (mostly) known columns, rows of cells, hostile cells."""
    fields = list(FIELDS[kind])
    if draw(st.integers(0, 5)) == 0:
        header = draw(st.lists(st.one_of(st.sampled_from(fields), st.text(max_size=5)), min_size=1, max_size=8,
                               unique=True))
    else:
        required = {"accounts": ["id"], "ledger": ["account", "at", "amount"],
                    "invoices": ["account", "id", "issued_at", "due_at", "amount"]}[kind]
        header = required + [f for f in fields if f not in required and draw(st.booleans())]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        row = []
        for column in header:
            strategy = FIELDS[kind].get(column, _TEXT)
            value = draw(st.one_of(strategy, st.just(_HUGE_CELL))) if draw(st.integers(0, 40)) == 0 else draw(strategy)
            row.append(_cell(value))
        if draw(st.integers(0, 10)) == 0:
            row.append("extra")
        writer.writerow(row)
    text = out.getvalue()
    if draw(st.integers(0, 10)) == 0:
        text += draw(st.sampled_from(['"unterminated\n', "a,b\x00c\n", "\ufeffx\n"]))
    return text


def text_file() -> st.SearchStrategy[str]:
    """Anything at all."""
    return st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
