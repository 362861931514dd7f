"""Bad input through the CLI: one clear message, a non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios.harness import POLICY, Arrears, day

ACCOUNT = {"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example"}


@pytest.fixture
def arrears(tmp_path: Path) -> Arrears:
    a = Arrears.create(tmp_path / "cfg", accounts=[ACCOUNT])
    a.charge("acme-01", 0, "30.00", "inv-1")
    a.run(0)
    return a


def test_malformed_policy_names_file_line_and_field(arrears: Arrears) -> None:
    before = arrears.dump()
    bad = POLICY.replace("resume_on_payment: {resume}", "resume_on_payment: true").replace(
        "after: 5,", "after: five,")
    (arrears.folder / "policy.yaml").write_text(bad)
    for args in (("run", "--at", day(5)), ("plan", "--at", day(5)), ("show", "acme-01")):
        message = arrears.fails(*args)
        assert "policy.yaml:9: defaults.stages[1].after:" in message, message
        assert message.count("\n") == 1
    assert arrears.dump() == before


def test_malformed_ledger_rejects_the_whole_file(arrears: Arrears) -> None:
    before = arrears.dump()
    path = arrears.folder / "bad-ledger.jsonl"
    path.write_text(
        '{"account": "acme-01", "at": "2026-03-03T10:00:00Z", "amount": "5.00", "kind": "payment", "ref": "a"}\n'
        '{"account": "acme-01", "at": "2026-03-03T10:00:00Z", "amount": "lots", "kind": "payment", "ref": "b"}\n')
    message = arrears.fails("ledger", "import", str(path))
    assert f"{path}:2: amount:" in message
    path.write_text('{"account": "acme-01", "at": "2026-03-03T10:00:00Z", "amount": "5.00", "ref": "c"}\n'
                    '{"account": "acme-01", "at": "2026-03-03 10:00", "amount": "5.00", "ref": "d"}\n')
    assert f"{path}:2: at:" in arrears.fails("ledger", "import", str(path))
    path.write_text('{"account": "acme-01", "at": "2026-03-03T10:00:00Z", "amount": 1.5e3, "ref": "e"}\n'
                    'not json\n')
    assert f"{path}:2: line: is not valid JSON" in arrears.fails("ledger", "import", str(path))
    assert arrears.dump() == before


def test_ledger_line_for_an_unknown_account(arrears: Arrears) -> None:
    before = arrears.dump()
    path = arrears.write("ledger.jsonl", [
        {"account": "acme-01", "at": day(1), "amount": "5.00", "ref": "ok"},
        {"account": "nobody", "at": day(1), "amount": "5.00", "ref": "x"},
    ])
    message = arrears.fails("ledger", "import", str(path))
    assert f"{path}:2: account: unknown account 'nobody'" in message
    assert arrears.dump() == before


def test_malformed_accounts_file(arrears: Arrears) -> None:
    before = arrears.dump()
    path = arrears.write("accounts.jsonl", [
        {"id": "new-01", "billing_email": "a@b.example"},
        {"id": "new-02", "billing_email": "a@b.example", "resources": {"web": {"sites": ["x.example"]}}},
    ])
    assert f"{path}:2: resources.web.host: is required" in arrears.fails("accounts", "import", str(path))
    path = arrears.write("accounts.jsonl", [{"id": "../etc", "billing_email": "a@b.example"}])
    assert f"{path}:1: id:" in arrears.fails("accounts", "import", str(path))
    path = arrears.write("accounts.jsonl", [{"id": "new-03", "policy": {"credit_limit": "ten"}}])
    assert f"{path}:1: policy.credit_limit:" in arrears.fails("accounts", "import", str(path))
    path = arrears.write("accounts.jsonl", [{"id": "new-04", "colour": "blue"}])
    assert f"{path}:1: colour: unknown field" in arrears.fails("accounts", "import", str(path))
    assert arrears.dump() == before


def test_missing_import_file(arrears: Arrears) -> None:
    message = arrears.fails("ledger", "import", str(arrears.folder / "nope.jsonl"))
    assert "nope.jsonl: file: no such file" in message


@pytest.mark.parametrize("args", [
    ("show", "nobody"),
    ("payment", "nobody", "10"),
    ("explain", "nobody"),
    ("history", "nobody"),
    ("can-spend", "nobody", "1"),
    ("exempt", "nobody", "--until", day(40)[:10], "--reason", "x", "--at", day(1)),  # never today's date
])
def test_unknown_account(arrears: Arrears, args: tuple[str, ...]) -> None:
    before = arrears.dump()
    assert "unknown account 'nobody'" in arrears.fails(*args)
    assert arrears.dump() == before


@pytest.mark.parametrize("amount", ["-5", "0", "abc", "NaN"])
def test_payment_must_be_a_positive_amount(arrears: Arrears, amount: str) -> None:
    before = arrears.dump()
    message = arrears.fails("payment", "acme-01", "--", amount) if amount.startswith("-") else \
        arrears.fails("payment", "acme-01", amount)
    assert message.startswith("error: ")
    assert arrears.dump() == before


def test_a_time_without_zone_is_refused(arrears: Arrears) -> None:
    before = arrears.dump()
    for args in (("run", "--at", "2026-03-05T10:00:00"), ("plan", "--at", "2026-03-05"),
                 ("payment", "acme-01", "5", "--at", "2026-03-05T10:00")):
        message = arrears.fails(*args)
        assert "has no zone" in message
    assert "has no zone" in arrears.fails("set-debt-date", "acme-01", "2026-03-01T10:00")
    assert arrears.dump() == before


def test_a_repeated_payment_ref_is_refused(arrears: Arrears) -> None:
    arrears.ok("payment", "acme-01", "5", "--ref", "r-1", "--at", day(1))
    before = arrears.dump()
    assert "already has a ledger entry with ref 'r-1'" in arrears.fails("payment", "acme-01", "5", "--ref", "r-1")
    assert arrears.dump() == before


def test_missing_config_folder_policy(tmp_path: Path) -> None:
    a = Arrears(tmp_path)
    assert "no policy file" in a.fails("plan", "--at", day(0))
