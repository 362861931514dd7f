"""Hostile and broken input through the CLI: amounts in the currency's precision, and the inputs that used to
end in "internal error" (huge JSON numbers, deep JSON, huge CSV cells, instants off the calendar, YAML alias
bombs, a template that overflows) each refused with ``file:line: field: ...``, exit 2, nothing written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.scenarios.harness import POLICY, Arrears, day

ACCOUNTS = [
    {"id": "acme-01", "billing_email": "billing@acme.example"},  # no currency: the policy's USD
    {"id": "yen-01", "billing_email": "billing@yen.example", "currency": "JPY"},
    {"id": "dinar-01", "billing_email": "billing@dinar.example", "currency": "BHD"},
]
OFF_CALENDAR = "0001-01-01T00:00:00+01:00"  # 31 December of year 0 in UTC


@pytest.fixture
def arrears(tmp_path: Path) -> Arrears:
    a = Arrears.create(tmp_path / "cfg", accounts=ACCOUNTS)
    a.charge("acme-01", 0, "30.00", "inv-1")
    a.run(0)
    return a


def ledger_line(account: str, amount: object, ref: str = "r1", at: str | None = None) -> dict[str, object]:
    return {"account": account, "at": at or day(1), "amount": amount, "ref": ref}


def refused(arrears: Arrears, *args: str) -> str:
    """The message of a refused command, after checking that it wrote nothing and gave no internal error."""
    before = arrears.dump()
    message = arrears.fails(*args)
    assert "internal error" not in message, message
    assert arrears.dump() == before
    return message


# --- point 4: money has the currency's precision ----------------------------------------------------


def test_a_charge_finer_than_a_cent_is_refused_and_starts_no_debt(arrears: Arrears) -> None:
    path = arrears.write("ledger.jsonl", [ledger_line("acme-01", "30.00", "pay"),
                                          ledger_line("acme-01", "-0.0001", "dust")])
    message = refused(arrears, "ledger", "import", str(path))
    assert f"{path}:2: amount: amount '-0.0001' is finer than USD allows (2 decimal places)" in message
    assert arrears.show("acme-01", 2)["in_debt"] is True  # still the first charge's debt, nothing else


@pytest.mark.parametrize("amount", ["-1e999999", "-1E+15", "NaN", "-Infinity", "-sNaN"])
def test_absurd_and_non_finite_amounts_are_refused(arrears: Arrears, amount: str) -> None:
    path = arrears.write("ledger.jsonl", [ledger_line("acme-01", amount)])
    assert f"{path}:1: amount: " in refused(arrears, "ledger", "import", str(path))


def test_huge_exponent_refused_in_invoices_and_payments(arrears: Arrears) -> None:
    path = arrears.write("invoices.jsonl", [{"account": "acme-01", "id": "i1", "issued_at": day(0),
                                             "due_at": day(5), "amount": "1e999999"}])
    assert f"{path}:1: amount: amount '1e999999' is out of range" in refused(arrears, "invoices", "import", str(path))
    assert "out of range" in refused(arrears, "payment", "acme-01", "1e999999", "--at", day(1))


def test_yen_have_no_minor_unit(arrears: Arrears) -> None:
    path = arrears.write("ledger.jsonl", [ledger_line("yen-01", "-0.5")])
    assert f"{path}:1: amount: amount '-0.5' is finer than JPY allows (whole units)" in refused(
        arrears, "ledger", "import", str(path))
    path = arrears.write("ledger.jsonl", [ledger_line("yen-01", "-1")])
    arrears.ok("ledger", "import", str(path))
    assert arrears.show("yen-01", 2)["balance"] == "-1"
    assert "finer than JPY" in refused(arrears, "payment", "yen-01", "0.5", "--at", day(2))
    arrears.ok("payment", "yen-01", "1", "--at", day(2))
    assert arrears.show("yen-01", 3)["balance"] == "0"


def test_dinars_have_three_decimals(arrears: Arrears) -> None:
    path = arrears.write("ledger.jsonl", [ledger_line("dinar-01", "-1.250", "a")])
    arrears.ok("ledger", "import", str(path))
    path = arrears.write("ledger.jsonl", [ledger_line("dinar-01", "-1.2505", "b")])
    assert "finer than BHD allows (3 decimal places)" in refused(arrears, "ledger", "import", str(path))


@pytest.mark.parametrize("args", [
    ("payment", "acme-01", "0.001"),
    ("can-spend", "acme-01", "0.001"),
    ("guarantee", "acme-01", "0.001"),
    ("can-spend", "yen-01", "0.5"),
])
def test_every_command_that_takes_an_amount_checks_its_precision(arrears: Arrears, args: tuple[str, ...]) -> None:
    assert "is finer than" in refused(arrears, *args, "--at", day(1))


def test_an_unknown_currency_and_a_policy_amount_finer_than_the_currency_are_refused(arrears: Arrears) -> None:
    path = arrears.write("accounts.jsonl", [{"id": "new-01", "currency": "XYZ"}])
    assert f"{path}:1: currency: 'XYZ' is not an ISO 4217 currency code" in refused(
        arrears, "accounts", "import", str(path))
    path = arrears.write("accounts.jsonl", [{"id": "new-02", "currency": "JPY", "policy": {"credit_limit": "0.5"}}])
    assert f"{path}:1: policy.credit_limit: the amount 0.5 is finer than JPY" in refused(
        arrears, "accounts", "import", str(path))


def test_the_currency_does_not_change_under_recorded_money(arrears: Arrears) -> None:
    path = arrears.write("accounts.jsonl", [{"id": "acme-01", "currency": "JPY"}])
    assert f"{path}:1: currency: account acme-01 has ledger entries or invoices in USD" in refused(
        arrears, "accounts", "import", str(path))


def test_the_policy_currency_is_the_default_for_new_accounts(tmp_path: Path) -> None:
    a = Arrears.create(tmp_path / "cfg", policy=POLICY.replace("currency: USD", "currency: JPY").replace(
        "{resume}", "true"), accounts=[{"id": "a1"}, {"id": "e1", "currency": "EUR"}])
    assert a.show("a1", 0)["currency"] == "JPY"
    assert a.show("e1", 0)["currency"] == "EUR"
    path = a.write("ledger.jsonl", [ledger_line("a1", "-0.50")])
    assert "finer than JPY" in a.fails("ledger", "import", str(path))


def test_a_policy_amount_finer_than_its_currency_is_a_policy_error(arrears: Arrears) -> None:
    (arrears.folder / "policy.yaml").write_text(POLICY.replace("{resume}", "true").replace(
        "credit_limit: 0", "credit_limit: 0.001"))
    message = refused(arrears, "plan", "--at", day(1))
    assert "policy.yaml:4: defaults.credit_limit: the amount 0.001 is finer than USD allows" in message


# --- point 5: no internal errors from input ---------------------------------------------------------


def test_a_json_integer_of_5000_digits(arrears: Arrears) -> None:
    path = arrears.folder / "ledger.jsonl"
    path.write_text(json.dumps(ledger_line("acme-01", "N")).replace('"N"', "-" + "9" * 5000) + "\n")
    assert f"{path}:1: line: has a number of 5001 characters" in refused(arrears, "ledger", "import", str(path))


def test_json_nested_too_deep(arrears: Arrears) -> None:
    path = arrears.folder / "accounts.jsonl"
    for depth in (40, 100_000):
        path.write_text('{"id": "deep-01", "resources": ' + "[" * depth + "]" * depth + "}\n")
        assert f"{path}:1: line: is nested deeper than 32 levels" in refused(arrears, "accounts", "import", str(path))


def test_a_csv_cell_over_128_kib(arrears: Arrears) -> None:
    path = arrears.folder / "ledger.csv"
    path.write_text(f"account,at,amount,ref\nacme-01,{day(1)},-1.00,ok\nacme-01,{day(1)},-1.00,{'x' * 200_000}\n")
    assert f"{path}:3: line: is not valid CSV (field larger than field limit (131072))" in refused(
        arrears, "ledger", "import", str(path))


def test_an_instant_that_leaves_the_calendar_in_utc(arrears: Arrears) -> None:
    path = arrears.write("ledger.jsonl", [ledger_line("acme-01", "-1.00", at=OFF_CALENDAR)])
    assert f"{path}:1: at: at '{OFF_CALENDAR}' is out of range" in refused(arrears, "ledger", "import", str(path))
    path = arrears.write("accounts.jsonl", [{"id": "acme-01", "trial_ends_at": "9999-12-31T23:59:59-01:00"}])
    assert f"{path}:1: trial_ends_at: " in refused(arrears, "accounts", "import", str(path))
    assert f"--at '{OFF_CALENDAR}' is out of range" in refused(arrears, "run", "--at", OFF_CALENDAR)
    assert "out of range" in refused(arrears, "set-debt-date", "acme-01", OFF_CALENDAR, "--at", day(1))
    assert "out of range" in refused(arrears, "set-debt-date", "acme-01", "0001-01-01", "--at", day(1))
    assert "out of range" in refused(arrears, "exempt", "acme-01", "--until", "9999-12-31", "--reason", "x",
                                     "--at", day(1))


def alias_bomb(width: int, depth: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("snippet", "problem"), [
    ("loop: &a [*a, *a]\n", "found the alias *a inside the node it refers to"),
    ("loop: &a {x: *a}\n", "found the alias *a inside the node it refers to"),
    (alias_bomb(8, 6), "aliases expand this document by more than 20000 nodes"),
    ("deep: " + "[" * 5000 + "]" * 5000 + "\n", "values are nested deeper than 64 levels"),
])
def test_recursive_deep_and_exploding_yaml_in_the_policy(arrears: Arrears, snippet: str, problem: str) -> None:
    text = POLICY.replace("{resume}", "true").replace("notices:", "web:\n  " + snippet.replace("\n", "\n  ")
                                                      + "\nnotices:")
    (arrears.folder / "policy.yaml").write_text(text)
    started = time.monotonic()
    message = refused(arrears, "plan", "--at", day(1))
    assert time.monotonic() - started < 10  # the eight-wide six-deep bomb took 16 s to be accepted
    assert "policy.yaml:" in message and problem in message, message


@pytest.mark.parametrize(("snippet", "problem"), [
    ("x-loop: &a [*a, *a]\n", "found the alias *a inside the node it refers to"),
    (alias_bomb(8, 6).replace("l", "x-l"), "aliases expand this document by more than 20000 nodes"),
    ("x: 1" + "0" * 5000 + "\n", "a number of more than 100 digits"),
    ("x: 2026-02-30\n", "cannot read this value"),
])
def test_recursive_and_exploding_yaml_in_the_inventory(arrears: Arrears, snippet: str, problem: str) -> None:
    path = arrears.folder / "inventory.yaml"
    path.write_text("defaults: {parallel: 4}\nhosts: {}\n" + snippet)
    result = arrears.invoke("hosts", "check", "--inventory", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}:" in result.stderr and problem in result.stderr, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_a_template_that_overflows_at_load_is_located(arrears: Arrears) -> None:
    templates = arrears.folder / "templates"
    templates.mkdir()
    (templates / "outstanding.txt.j2").write_text("Subject: you owe us\n\nPlease pay.\n"
                                                   "{% for i in range(10**9) %}{% endfor %}\n")
    message = refused(arrears, "run", "--at", day(1))
    assert f"{templates / 'outstanding.txt.j2'}:4: OverflowError: Range too big" in message


def test_a_json_line_with_nan_is_refused(arrears: Arrears) -> None:
    path = arrears.folder / "ledger.jsonl"
    path.write_text(json.dumps(ledger_line("acme-01", "x")).replace('"x"', "NaN") + "\n")
    assert f"{path}:1: line: has NaN, which is not a JSON value" in refused(arrears, "ledger", "import", str(path))


def test_an_account_whose_currency_the_policy_amounts_do_not_fit(arrears: Arrears) -> None:
    (arrears.folder / "policy.yaml").write_text(POLICY.replace("{resume}", "true").replace(
        "credit_limit: 0", "credit_limit: 0.50"))
    path = arrears.write("accounts.jsonl", [{"id": "yen-02", "currency": "JPY"}])
    message = refused(arrears, "accounts", "import", str(path))
    assert f"{path}:1: currency: JPY: " in message
    assert "policy.yaml:4: defaults.credit_limit: the amount 0.50 is finer than JPY allows" in message


def test_a_huge_exponent_in_a_resource_is_kept_as_text(arrears: Arrears) -> None:
    path = arrears.folder / "accounts.jsonl"
    path.write_text('{"id": "big-01", "resources": {"web": {"host": "web1", "sites": ["big.example"], '
                    '"weight": 1e999999}}}\n')
    started = time.monotonic()
    arrears.ok("accounts", "import", str(path))  # was: a million-digit int, minutes of CPU
    assert time.monotonic() - started < 10


def test_half_a_surrogate_pair_is_refused_wherever_text_comes_in(arrears: Arrears) -> None:
    """``"\\ud800"`` in JSON decodes to half of a UTF-16 pair, which no database stores, and so does an invalid
    UTF-8 word on the command line: each is refused with the field that holds it, nothing written."""
    from agent.imports import parse_instant
    from agent.service import Arrears as Service
    from agent.service import InvalidInput

    half = "half of a UTF-16 surrogate pair and no character"
    for kind, record in [("ledger", ledger_line("acme-01", "-5.00", ref="r\ud800")),
                         ("accounts", {"id": "new-01", "username": "n\udc00"}),
                         ("accounts", {"id": "new-02", "resources": {"note": ["x\ud800"]}}),
                         ("invoices", {"account": "acme-01", "id": "i\ud800", "amount": "5.00",
                                       "issued_at": day(1), "due_at": day(9)})]:
        path = arrears.write(f"{kind}.jsonl", [record])  # json.dumps writes the escape
        message = refused(arrears, kind, "import", str(path))
        assert message.startswith(f"error: {path}:1: line: holds \\u") and half in message, message
    assert half in refused(arrears, "payment", "acme-01", "5.00", "--ref", "inv-\udcff")
    assert half in refused(arrears, "show", "acme-\udcff")
    with Service.open(arrears.folder, db=arrears.db) as svc, pytest.raises(InvalidInput) as bad:
        svc.post_ledger({**ledger_line("acme-01", "-5.00"), "method": "card\ud800"},
                        now=parse_instant(day(1)))
    assert bad.value.field == "method"
