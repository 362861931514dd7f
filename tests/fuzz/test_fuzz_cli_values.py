"""Fuzzing the CLI's dates, amounts and durations as the commands parse them: ``--at`` and the day options
through click's own option parsing (``make_context``, no command run), ``DATE``/``--until`` and amounts
through the functions the commands' Python API calls. A value is either refused with a usage error /
:class:`InvalidInput`,
or it is one arrears can compute with: an aware UTC instant on the calendar window, an amount that fits
the currency, a whole number of days in range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import click
from hypothesis import given
from hypothesis import strategies as st

from agent.cli import cli
from agent.imports import EARLIEST, LATEST
from agent.service import InvalidInput
from agent.service.values import parse_moment, parse_money
from policy import load_policy
from policy.money import MAX_AMOUNT, minor_units
from tests.fuzz.strategies import amounts, instants
from tests.scenarios.harness import POLICY

PS = load_policy(POLICY.replace("{resume}", "true").replace("Europe/Amsterdam", "Pacific/Kiritimati"), "policy.yaml")


def _on_calendar(value: datetime) -> None:
    assert value.utcoffset() == timedelta(0)
    assert EARLIEST <= value < LATEST
    value + timedelta(days=36500 * 5)  # room for the policy's longest stages


def _parse(command: str, args: list[str]) -> click.Context | None:
    """The context click builds for ``arrears COMMAND ARGS`` (options parsed, callbacks run), or None when
    click refuses the arguments with a usage error."""
    try:
        return cli.commands[command].make_context(command, args)
    except click.UsageError:
        return None


_TEXTS = st.one_of(instants().map(str), st.text(max_size=30))
_DAYS = st.one_of(st.integers().map(str), st.sampled_from(["0", "-1", "1", "3650", "3651", "1e3", "inf", "nan",
                                                           "9" * 5000, " 5", "٣"]), st.text(max_size=6))


@given(text=_TEXTS)
def test_fuzz_at_option(text: str) -> None:
    ctx = _parse("run", ["--at", text])
    if ctx is not None:
        _on_calendar(ctx.params["at"])


@given(text=_TEXTS)
def test_fuzz_dates_of_set_debt_date_and_exempt(text: str) -> None:
    try:
        value = parse_moment(text, PS, "DATE")
    except InvalidInput as exc:
        assert exc.field == "DATE" and str(exc).startswith("DATE")
        return
    _on_calendar(value)


@given(text=amounts().map(str), currency=st.sampled_from(["USD", "JPY", "BHD", "EUR", "IRR", "KWD", "CLF"]))
def test_fuzz_amounts_of_payment_guarantee_and_can_spend(text: str, currency: str) -> None:
    try:
        value = parse_money(text, "amount", currency)
    except InvalidInput as exc:
        assert exc.field == "amount" and str(exc).startswith("amount")
        return
    assert value.is_finite() and abs(value) < MAX_AMOUNT
    assert value == value.quantize(Decimal(1).scaleb(-minor_units(currency)))


@given(text=_DAYS, command=st.sampled_from([("resume", ["acme", "--grace"]), ("guarantee", ["acme", "10", "--days"]),
                                            ("forecast", ["--days"])]))
def test_fuzz_day_counts(text: str, command: tuple[str, list[str]]) -> None:
    name, args = command
    ctx = _parse(name, [*args, text])
    if ctx is None:
        return
    days = ctx.params["grace" if name == "resume" else "days"]
    assert isinstance(days, int) and 0 <= days <= 36500
    datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=days)
