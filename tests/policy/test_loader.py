"""policy.yaml loading: the contract format, layering, and one clear message per bad file."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policy import PolicyError, load_policy
from policy.model import After
from tests.policy.helpers import HSPHERE, resolve


def error(text: str, filename: str = "policy.yaml") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy(text, filename)
    return info.value


def test_contract_example_loads() -> None:
    text = HSPHERE + "resellers: {visp-a: {credit_limit: 20}}\nplans: {home: {credit_limit: 800000, " \
                     "triggers: {max_delay: 2592000s}}}\n"
    ps = load_policy(text, "policy.yaml")
    assert ps.timezone == "Europe/Amsterdam"
    p = ps.resolve("42", "home", "visp-a")
    assert p.credit_limit == Decimal(800000) and p.triggers.max_delay == 2592000
    assert [s.name for s in p.stages] == ["outstanding_notice", "pre_suspension", "suspension", "deletion_warning",
                                          "deletion"]
    assert p.stages[0].after == After() and p.stages[1].after == After(days=5)
    assert p.sources["credit_limit"] == "plan:home" and p.sources["currency"] == "defaults"


def test_money_is_decimal_from_the_text_never_float() -> None:
    p = resolve("defaults: {credit_limit: 0.1, financial_threshold: 1e2}\n")
    assert p.credit_limit == Decimal("0.1") and str(p.credit_limit) == "0.1"
    assert p.financial_threshold == Decimal("100")
    assert resolve("defaults: {}\n", account_layer={"credit_limit": 0.1}).credit_limit == Decimal("0.1")


def test_durations_and_day_counts() -> None:
    text = """\
defaults:
  triggers: {max_delay: 30}
  stages:
    - {name: a, action: notice, after: 36h}
    - {name: b, action: notice, after: 90m}
    - {name: c, action: notice, after: 2d12h}
    - {name: d, action: hook, hook: billing, after: 0}
"""
    p = resolve(text)
    assert p.triggers.max_delay == 30 * 86400
    assert [s.after for s in p.stages] == [After(seconds=129600), After(seconds=5400), After(seconds=216000),
                                           After(days=0)]


def test_extra_sections_pass_through_and_resume_methods() -> None:
    text = "defaults: {resume_on_payment: [card, paypal]}\nnotices: {from: billing@example.net}\nagent: {x: 1}\n"
    ps = load_policy(text, "p.yaml")
    assert ps.extra == {"notices": {"from": "billing@example.net"}, "agent": {"x": 1}}
    assert ps.resolve("1", None, None).resume_on_payment == frozenset({"card", "paypal"})


def test_error_str_format() -> None:
    err = PolicyError("policy.yaml", 7, "defaults.stages[2].after", "bad")
    assert str(err) == "policy.yaml:7: defaults.stages[2].after: bad"
    assert (err.filename, err.line, err.field, err.message) == ("policy.yaml", 7, "defaults.stages[2].after", "bad")


def test_malformed_yaml() -> None:
    err = error("timezone: UTC\ndefaults:\n  credit_limit: [1, 2\n", "conf/policy.yaml")
    assert err.filename == "conf/policy.yaml" and err.line is not None and err.line >= 3
    assert err.field == "(syntax)" and "not valid YAML" in err.message
    assert str(err).startswith(f"conf/policy.yaml:{err.line}: (syntax): ")


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("timezone: UTC\ndefault:\n  credit_limit: 1\n", 2, "default", "did you mean 'defaults'"),
        ("defaults:\n  credit_limt: 1\n", 2, "defaults.credit_limt", "did you mean 'credit_limit'"),
        ("defaults:\n  triggers:\n    subzero: 3\n", 3, "defaults.triggers.subzero", "did you mean 'subzero_period'"),
        ("defaults:\n  stages:\n    - {name: a, action: notice}\n    - {name: b, action: notice, afer: 3}\n", 4,
         "defaults.stages[1].afer", "did you mean 'after'"),
        ("mail: {}\n", 1, "mail", "unknown key"),
        ("defaults:\n  credit_limit: lots\n", 2, "defaults.credit_limit", "amount of money"),
        ("defaults:\n  credit_limit: -5\n", 2, "defaults.credit_limit", ">= 0"),
        ("defaults:\n  pay_with_negative: sometimes\n", 2, "defaults.pay_with_negative", "true or false"),
        ("defaults:\n  triggers: {subzero_period: -2}\n", 2, "defaults.triggers.subzero_period", "from -1"),
        ("defaults:\n  triggers: {subzero_period: null}\n", 2, "defaults.triggers.subzero_period", "-1 for never"),
        ("defaults:\n  stages:\n    - {name: a, action: notice, after: 99999999}\n", 3, "defaults.stages[0].after",
         "from 0 to 36500"),
        ("defaults:\n  guaranteed_payment: {limit: 10, days: 1.5}\n", 2, "defaults.guaranteed_payment.days",
         "whole number"),
        ("defaults:\n  triggers: {max_delay: 30 days}\n", 2, "defaults.triggers.max_delay", "36h"),
        ("defaults:\n  stages:\n    - {name: a, action: notice}\n    - {name: b, action: notice}\n"
         "    - {name: c, action: notice, after: 3x}\n", 5, "defaults.stages[2].after", "bad duration"),
        ("defaults:\n  stages:\n    - {name: a, action: notice, after: 1.5}\n", 3, "defaults.stages[0].after",
         "bad duration"),
        ("defaults:\n  stages:\n    - {name: a, action: notice}\n    - {name: a, action: notice}\n", 4,
         "defaults.stages[1].name", "unique"),
        ("defaults:\n  stages:\n    - {name: a, action: suspnd}\n", 3, "defaults.stages[0].action",
         "did you mean 'suspend'"),
        ("defaults:\n  stages:\n    - {name: gone, action: delete}\n    - {name: s, action: suspend}\n", 3,
         "defaults.stages[0].action", "after an enabled suspend"),
        ("defaults:\n  stages:\n    - {name: h, action: hook}\n", 3, "defaults.stages[0].hook", "hook: NAME"),
        ("defaults:\n  stages:\n    - {action: notice}\n", 3, "defaults.stages[0].name", "needs a name"),
        ("defaults:\n  stages:\n    - {name: debt_resuspend-2, action: notice}\n", 3, "defaults.stages[0].name",
         "reserved"),
        ("defaults:\n  stages:\n    - {name: resume, action: notice}\n", 3, "defaults.stages[0].name", "reserved"),
        ("defaults:\n  stages: {name: a}\n", 2, "defaults.stages", "list of stages"),
        ("timezone: Mars/Olympus\n", 1, "timezone", "IANA"),
        ("defaults:\n  currency: dollars\n", 2, "defaults.currency", "ISO 4217"),
        ("defaults:\n  currency: XYZ\n", 2, "defaults.currency", "ISO 4217"),
        ("defaults:\n  credit_limit: 1.0e+999999\n", 2, "defaults.credit_limit", "out of range"),
        ("defaults:\n  credit_limit: 0.001\n", 2, "defaults.credit_limit", "finer than USD"),
        ("defaults:\n  currency: JPY\n  credit_limit: 0.5\n", 3, "defaults.credit_limit", "finer than JPY"),
        ("defaults:\n  stages:\n    - {name: a, action: notice, after: 99999999999999999s}\n", 3,
         "defaults.stages[0].after", "bad duration"),
        ("plans:\n  home:\n    credit_limit: 1\n    credit_limit: 2\n", 4, "plans.home.credit_limit", "twice"),
        ("resellers:\n  visp-a:\n    stages: 3\n", 3, "resellers.visp-a.stages", "list of stages"),
        ("defaults:\n  resume_on_payment: card\n", 2, "defaults.resume_on_payment", "[card]"),
        ("", 1, "(document)", "empty"),
    ],
)
def test_bad_policies_name_file_line_and_field(text: str, line: int, field: str, words: str) -> None:
    err = error(text)
    assert (err.filename, err.line, err.field) == ("policy.yaml", line, field), str(err)
    assert words in err.message, str(err)
    assert str(err) == f"policy.yaml:{line}: {field}: {err.message}"


def test_account_layer_is_validated_like_the_file() -> None:
    ps = load_policy(HSPHERE, "policy.yaml")
    with pytest.raises(PolicyError) as info:
        ps.resolve("42", None, None, {"credit_limit": "abc"})
    assert info.value.filename == "account 42" and info.value.field == "credit_limit" and info.value.line is None
    assert str(info.value).startswith("account 42: credit_limit: ")
    with pytest.raises(PolicyError, match="did you mean 'triggers'"):
        ps.resolve("42", None, None, {"trigers": {}})
    with pytest.raises(PolicyError, match=r"stages\[0\]\.after"):
        ps.resolve("42", None, None, {"stages": [{"name": "x", "action": "notice", "after": "soon"}]})


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
x-base: &base {credit_limit: 5}
"""
    err = error(text)
    assert err.field == "x-base"
    text2 = """\
plans:
  a: &a {credit_limit: 5, pay_with_negative: true}
  b: {<<: *a, credit_limit: 9}
"""
    ps = load_policy(text2, "p.yaml")
    b = ps.resolve("1", "b", None)
    assert b.credit_limit == Decimal(9) and b.pay_with_negative is True
