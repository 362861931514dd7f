"""The plain-text match of ``parse_amount`` decides exactly as its full rules: on the fuzz suite's hostile
amounts and on arbitrary text, in currencies of 0, 2, 3 and 4 decimal places and in codes that are not
currencies, the same Decimal (digits and exponent) or the same error with the same message."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from policy import money
from tests.fuzz.strategies import amounts

_CURRENCIES = st.sampled_from(["USD", "JPY", "BHD", "CLF", "EUR", "XYZ", "usd", "", "US"])
_TEXTS = st.one_of(
    amounts().filter(lambda v: isinstance(v, str)),
    st.from_regex(r"[-+ ]?[0-9]{0,17}(\.[0-9]{0,6})?( |\n)?", fullmatch=True),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.text(alphabet="-+.0123456789eE_ ١", max_size=20),
    st.text(max_size=20),
)


def outcome(value: object, currency: str, *, full: bool) -> tuple[Any, ...]:
    try:
        number = (money._checked_amount(value, currency, "amount") if full
                  else money.parse_amount(value, currency=currency, what="amount"))
    except ValueError as exc:
        return ("error", str(exc))
    assert isinstance(number, Decimal)
    return ("value", number.as_tuple())


@given(_TEXTS, _CURRENCIES)
def test_the_plain_amount_match_agrees_with_the_full_rules(text: str, currency: str) -> None:
    assert outcome(text, currency, full=False) == outcome(text, currency, full=True)
