"""Amounts of money: the one parser every input goes through, and each currency's minor unit.

An amount is exact (a Decimal, an int or a decimal text; never a float), finite, of a sane size (below
:data:`MAX_AMOUNT`) and, when its currency is known, no finer than the currency's minor unit (ISO 4217 as
Babel/CLDR knows it: USD 2, JPY 0, BHD 3). A refused amount raises :class:`ValueError` saying what is wrong
and what to write instead; the caller adds the file, line and field.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, is_currency

__all__ = ["DEFAULT_CURRENCY", "MAX_AMOUNT", "check_currency", "minor_units", "parse_amount"]

DEFAULT_CURRENCY = "USD"  # the currency of an account when neither billing nor the policy names one
MAX_AMOUNT = Decimal(10) ** 15  # a quadrillion of anything: larger is a typo or an attack
_MAX_TEXT = 64  # characters of an amount's text (the longest sane amount is ~25)


@lru_cache(maxsize=512)
def check_currency(code: str) -> str:
    """``code`` itself when it is an ISO 4217 currency code, else ValueError."""
    if not isinstance(code, str) or len(code) != 3 or not code.isascii() or not code.isupper() or not is_currency(code):
        raise ValueError(f"{code!r} is not an ISO 4217 currency code; use one such as USD, EUR or JPY")
    return code


@lru_cache(maxsize=512)
def minor_units(currency: str) -> int:
    """The number of decimal places of ``currency`` (USD 2, JPY 0, BHD 3)."""
    return int(get_currency_precision(check_currency(currency)))


@lru_cache(maxsize=512)
def _plain_amount(currency: str) -> re.Pattern[str] | None:
    """The plain texts that are amounts in ``currency`` as they are (``-12.50``: a sign, at most 15 digits, at
    most the minor unit's places); None when ``currency`` is not one (the full check says why)."""
    try:
        places = minor_units(currency)
    except ValueError:
        return None
    return re.compile(r"-?[0-9]{1,15}" + (rf"(?:\.[0-9]{{1,{places}}})?" if places else ""))


def parse_amount(value: object, *, currency: str | None = None, what: str = "amount") -> Decimal:
    """An exact amount from a Decimal, an int or a decimal text, checked against ``currency``'s minor unit
    when given; ValueError for floats, non-numbers, non-finite values, absurd sizes and sub-minor-unit
    precision."""
    if type(value) is str and currency is not None:  # the common case, decided by one match
        plain = _plain_amount(currency)
        if plain is not None and plain.fullmatch(value):
            return Decimal(value)
    return _checked_amount(value, currency, what)


def _checked_amount(value: object, currency: str | None, what: str) -> Decimal:
    """:func:`parse_amount` for every value: the rules themselves, which the plain-text match agrees with
    (tests/policy/test_money_parse.py)."""
    if isinstance(value, bool | float):
        raise ValueError(f"{what} must be an exact decimal number such as 12.50, got {value!r}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        if abs(value) >= MAX_AMOUNT:
            raise ValueError(f"{what} is out of range: amounts must be below {MAX_AMOUNT:,}")
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT:
            raise ValueError(f"{what} is {len(text)} characters long; write an amount such as 12.50")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{what} {value!r} is not a number; write an amount such as 12.50") from None
    else:
        raise ValueError(f"{what} must be a number such as 12.50, got {type(value).__name__}")
    if not number.is_finite() or (number and number.adjusted() >= 15):
        shown = repr(value) if isinstance(value, str) else str(value)
        if not number.is_finite():
            raise ValueError(f"{what} {shown} is not a finite number; write an amount such as 12.50")
        raise ValueError(f"{what} {shown} is out of range: amounts must be below {MAX_AMOUNT:,}")
    if currency is not None:
        places = minor_units(currency)
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
        # below MAX_AMOUNT with at most 4 places, the quantized value fits the default 28-digit context
        if exponent < -places and number != number.quantize(Decimal(1).scaleb(-places)):
            shown = repr(value) if isinstance(value, str) else str(value)
            unit = "whole units" if places == 0 else f"{places} decimal place{'s' if places > 1 else ''}"
            raise ValueError(f"{what} {shown} is finer than {currency} allows ({unit}); "
                             f"round it to the {currency} minor unit")
    return number
