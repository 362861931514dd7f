"""The import's fast first steps decide exactly as the full rules do: the JSON decoder (msgspec where it can
decide, the exact standard-library decoder otherwise) and the UTC instant (``fromisoformat`` as it is).

Each property compares the two on the hostile values of the fuzz suite and on arbitrary text: the same
value of the same types (a Decimal with the same digits and exponent, keys in the same order), or the same
error with the same message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import agent.instants
from agent import imports
from tests.fuzz.strategies import instants, json_lines, json_values


def exact(value: Any) -> Any:
    """``value`` with every type spelt out: 1 and 1.0 and Decimal("1.00") differ, and so do key orders."""
    if isinstance(value, dict):
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [exact(v) for v in value])
    if isinstance(value, Decimal):
        return ("Decimal", value.as_tuple())
    if isinstance(value, datetime):  # equal instants in other zones are not the same value
        return ("datetime", value.isoformat(), value.tzinfo)
    return (type(value).__name__, value)


def outcome(decide: Any, text: str) -> tuple[Any, ...]:
    try:
        return ("value", exact(decide(text)))
    except Exception as exc:  # the message is part of what must not change
        return ("error", type(exc).__name__, str(exc))


def _stdlib(text: str) -> Any:
    return imports._DECODER.decode(text)


_NUMBERS = st.one_of(st.decimals(allow_nan=False, allow_infinity=False).map(str), st.integers().map(str),
                     st.sampled_from(["-0", "-0.0", "1e5", "1E+05", "1.0e-400", "01", ".5", "1.", "-", "1e",
                                      "9" * 100, "9" * 101, "-" + "9" * 99, "0." + "0" * 98 + "1", "NaN",
                                      "Infinity", "-Infinity", "18446744073709551616"]))
_PIECES = st.one_of(_NUMBERS, st.sampled_from(['"\\ud800"', '"\\ud83d\\ude00"', '"\x01"', '"\x7f"', '"\\x"', "\ufeff",
                                                "true", "null", "nul", ",", ":", "{", "}", "[", "]", " ", "\t",
                                                "\x0b", '"a"', '"a"', '{"a": 1, "a": 2}', "[" * 40 + "]" * 40]))


@st.composite
def json_like(draw: st.DrawFn) -> str:
    """Mostly JSON: a line of the fuzz suite's files, a value with numbers of every form, or either with a
    piece of JSON (or of almost JSON) put in somewhere."""
    base = draw(st.one_of(
        json_lines("ledger").map(lambda text: text.splitlines()[0]),
        json_lines("accounts").map(lambda text: text.splitlines()[0]),
        json_values().map(json.dumps),
        st.lists(_NUMBERS, max_size=4).map(lambda ns: '{"amount": ' + ", ".join(ns) + "}" if ns else "{}"),
        st.lists(_NUMBERS, max_size=4).map(lambda ns: "[" + ", ".join(ns) + "]"),
    ))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(base)))
        base = base[:at] + draw(_PIECES) + base[at:]
    return base


@given(st.one_of(json_like(), st.text(max_size=60)))
def test_the_fast_decoder_agrees_with_the_exact_one(text: str) -> None:
    assert outcome(imports._decode, text) == outcome(_stdlib, text)


_TEXTS = st.one_of(
    instants().filter(lambda v: isinstance(v, str)),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.sampled_from(["2026-03-01T09:00:00Z ", " 2026-03-01T09:00:00Z", "2026-03-01 09:00:00+00:00", "2026-03-01Z",
                     "1970-01-01T00:00:00+00:00", "1969-12-31T23:59:59.999999+00:00", "3000-01-01T00:00:00+00:00",
                     "2999-12-31T23:59:59.999999Z", "2026-03-01T09:00:00-00:00", "2026-03-01T09:00:00+00:00:01",
                     "20260301T090000Z", "2026-W09-1T09:00Z", "2026-03-01T24:00:00Z"]),
)


@given(_TEXTS)
def test_the_utc_instant_step_agrees_with_the_full_rules(text: str) -> None:
    full = outcome(lambda t: agent.instants._checked_instant(t, "at"), text)
    fast = outcome(lambda t: imports.parse_instant(t, what="at"), text)
    assert fast == full
