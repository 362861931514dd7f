"""Expired trials, exemptions, promises to pay, naive times, explain and forecast."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from policy import balance_at, can_spend, evaluate, explain, forecast
from policy.model import AccountSnapshot, Hold, Override
from tests.policy.helpers import HSPHERE, Replay, at, charge, pay, resolve

TRIAL = """\
timezone: UTC
defaults:
  stages:
    - {name: trial_over, action: notice, template: trial_over}
    - {name: suspension, action: suspend, after: 1, template: suspended}
"""


def test_expired_trial_without_billing_profile_is_suspended_with_a_trial_hold() -> None:
    snap = AccountSnapshot(id="t", trial_ends_at=at("2026-05-10 12:00"), has_billing_profile=False)
    r = Replay(resolve(TRIAL), snap)
    first = r.tick(at("2026-05-01 00:00"))
    assert first.trigger is None and first.next_check == at("2026-05-10 12:00")
    r.daily("2026-05-10 12:00", 3)
    assert r.taken() == [("trial_over", "2026-05-10 12:00"), ("suspension", "2026-05-11 12:00")]
    assert [h.kind for h in r.snap.holds] == ["trial"]
    assert not r.decisions[-1].in_debt  # a trial is not a debt
    # a payment does not release a trial hold
    r.add(pay("2026-05-12 13:00", "10"))
    assert r.tick(at("2026-05-12 14:00")).release_holds == ()
    # an admin resumes by hand: it is suspended again at the next run
    r.snap = AccountSnapshot(**{**r.snap.__dict__, "holds": ()})
    again = r.tick(at("2026-05-12 15:00"))
    assert [(m.stage, m.action, m.hold) for m in again.measures] == [("trial_resuspend", "suspend", "trial")]
    r.snap = AccountSnapshot(**{**r.snap.__dict__, "holds": ()})
    twice = r.tick(at("2026-05-12 15:30"))
    assert [m.stage for m in twice.measures] == ["trial_resuspend-2"]
    flying = replace(r.snap, holds=(), in_flight=("trial_resuspend-3",))
    assert evaluate(flying, r.policy, at("2026-05-12 15:40")).measures == ()
    # a billing profile ends it: the trial hold goes and the account resumes
    r.snap = AccountSnapshot(**{**r.snap.__dict__, "has_billing_profile": True})
    done = r.tick(at("2026-05-12 16:00"))
    assert done.end_episode is not None and done.release_holds == ("trial",) and done.resume


def test_exemption_holds_measures_back_until_it_expires() -> None:
    exempt = Override("exempt", actor="alice", reason="key customer", created_at=at("2026-03-01 00:00"),
                      expires_at=at("2026-03-20 00:00"))
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),), overrides=(exempt,))
    r = Replay(resolve(), snap)
    d = r.tick(at("2026-03-03 02:00"))
    assert d.measures == () and d.start_episode is not None
    assert d.held_back is not None and d.held_back.rule == "override.exempt" and "alice" in d.held_back.text
    assert d.next_check == at("2026-03-20 00:00")
    r.daily("2026-03-04 02:00", 16)
    assert r.taken() == []
    r.daily("2026-03-20 02:00", 5)
    # after expiry the override is ignored: the first stage is taken at once, the next counts from it
    assert r.taken() == [("outstanding_notice", "2026-03-20 02:00")]


def test_pause_until_a_promised_date_then_catch_up() -> None:
    pause = Override("pause", actor="bob", reason="promised to pay on the 15th", created_at=at("2026-03-05 00:00"),
                     expires_at=at("2026-03-15 00:00"))
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),), overrides=(pause,))
    r = Replay(resolve(), snap)
    r.daily("2026-03-03 02:00", 20)
    assert r.taken() == [("outstanding_notice", "2026-03-03 02:00"), ("pre_suspension", "2026-03-15 02:00"),
                         ("suspension", "2026-03-18 02:00")]
    held = [d for d in r.decisions if d.held_back]
    assert held and all(d.next_check == at("2026-03-15 00:00") for d in held)


def test_expired_override_is_ignored() -> None:
    old = Override("exempt", actor="a", reason="r", created_at=at("2026-01-01 00:00"),
                   expires_at=at("2026-02-01 00:00"))
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),), overrides=(old,))
    assert [m.stage for m in evaluate(snap, resolve(), at("2026-03-03 00:00")).measures] == ["outstanding_notice"]


def test_naive_datetimes_are_refused() -> None:
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),))
    naive = datetime(2026, 3, 3)
    for call in (lambda: evaluate(snap, resolve(), naive), lambda: balance_at(snap, naive),
                 lambda: explain(snap, resolve(), naive), lambda: can_spend(snap, resolve(), naive, Decimal(1)),
                 lambda: forecast(snap, resolve(), at("2026-03-03 00:00"), naive)):
        with pytest.raises(ValueError, match="timezone-aware"):
            call()
    bad = AccountSnapshot(id="42", trial_ends_at=naive)
    with pytest.raises(ValueError):
        evaluate(bad, resolve(), at("2026-03-03 00:00"))


def test_balance_at_includes_entries_at_the_moment() -> None:
    snap = AccountSnapshot(id="1", ledger=(charge("2026-03-02 10:00", "50"), pay("2026-03-03 10:00", "20.25")))
    assert balance_at(snap, at("2026-03-02 09:59")) == 0
    assert balance_at(snap, at("2026-03-02 10:00")) == Decimal("-50")
    assert balance_at(snap, at("2026-03-03 10:00")) == Decimal("-29.75")


def test_forecast_lists_every_measure_to_come() -> None:
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),))
    items = forecast(snap, resolve(), at("2026-03-03 02:00"), at("2026-12-31 00:00"))
    assert [(i.stage, i.action, i.due_at) for i in items] == [
        ("outstanding_notice", "notice", at("2026-03-02 10:00")),
        ("pre_suspension", "notice", at("2026-03-07 23:00")),
        ("suspension", "suspend", at("2026-03-10 23:00")),
        ("deletion_warning", "notice", at("2026-03-24 23:00")),
        ("deletion", "delete", at("2026-03-31 22:00")),  # CEST from 29 March
    ]
    assert all(i.reason for i in items)
    short = forecast(snap, resolve(), at("2026-03-03 02:00"), at("2026-03-09 00:00"))
    assert [i.stage for i in short] == ["outstanding_notice", "pre_suspension"]
    paid = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"), pay("2026-03-02 11:00", "50")))
    assert forecast(paid, resolve(), at("2026-03-03 02:00"), at("2026-12-31 00:00")) == []


def test_explain_shows_sources_triggers_and_decision_as_json() -> None:
    text = HSPHERE + "resellers: {visp-a: {credit_limit: 20}}\nplans: {home: {triggers: {max_delay: 2592000s}}}\n"
    policy = resolve(text, plan="home", reseller="visp-a", account_layer={"pay_with_negative": True})
    snap = AccountSnapshot(id="42", plan="home", reseller="visp-a", ledger=(charge("2026-03-02 10:00", "50"),),
                           holds=(Hold("admin", at("2026-03-01 00:00"), "abuse", "root"),))
    out = explain(snap, policy, at("2026-03-03 02:00"))
    json.dumps(out)  # JSON-able
    assert out["policy"]["credit_limit"] == {"value": "20", "source": "reseller:visp-a"}
    assert out["policy"]["triggers.max_delay"]["source"] == "plan:home"
    assert out["policy"]["pay_with_negative"] == {"value": True, "source": "account:42"}
    assert out["policy"]["stages"]["source"] == "defaults"
    assert out["layers"] == ["defaults", "reseller:visp-a", "plan:home", "account:42"]
    fired = {t["trigger"]: t for t in out["triggers"]}
    assert fired["over_limit"]["fired"] and fired["over_limit"]["at"] == at("2026-03-02 10:00").isoformat()
    assert fired["over_limit"]["inputs"]["balance"] == "-50"
    assert not fired["max_delay"]["fired"] and fired["max_delay"]["upcoming"] == at("2026-04-01 10:00").isoformat()
    assert out["decision"]["measures"][0]["stage"] == "outstanding_notice"
    assert out["decision"]["next"]["stage"] == "pre_suspension"
    assert out["decision"]["next_check"] == at("2026-03-07 23:00").isoformat()


def test_same_inputs_same_decision_and_no_next_check_when_nothing_can_change() -> None:
    snap = AccountSnapshot(id="42", ledger=(pay("2026-03-02 10:00", "50"),))
    now = datetime(2026, 3, 3, tzinfo=UTC)
    d = evaluate(snap, resolve(), now)
    assert d == evaluate(snap, resolve(), now + timedelta(0))
    assert d.trigger is None and d.next_check is None and d.measures == ()


def test_deleted_account_gets_nothing() -> None:
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),), deleted=True)
    d = evaluate(snap, resolve(), at("2026-06-01 00:00"))
    assert d.measures == () and d.next_check is None and d.start_episode is None
