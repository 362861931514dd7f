"""Ends of episodes: payment methods, manual resumption, future-dated input and in-flight stages."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from policy import evaluate, forecast
from policy.model import AccountSnapshot, Episode, LedgerEntry, StageTaken
from tests.policy.helpers import HSPHERE, Replay, at, charge, pay, resolve


def suspended(text: str = HSPHERE) -> Replay:
    r = Replay(resolve(text), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
    r.daily("2026-03-01 02:00", 12)
    assert [h.kind for h in r.snap.holds] == ["debt"]
    return r


def test_resume_on_payment_false_always_waits_for_an_admin() -> None:
    r = suspended(HSPHERE.replace("resume_on_payment: true", "resume_on_payment: false"))
    r.add(pay("2026-03-12 09:00", "50", method="card"))
    d = r.tick(at("2026-03-12 10:00"))
    assert d.end_episode is not None and not d.resume and d.release_holds == ()
    assert d.held_back is not None and "never" in d.held_back.text
    # the admin resumes: nothing more happens
    r.snap = replace(r.snap, holds=())
    quiet = r.tick(at("2026-03-13 10:00"))
    assert quiet.measures == () and quiet.held_back is None and not quiet.resume


def test_cheque_credited_as_an_admin_credit_is_not_an_automatic_resume() -> None:
    r = suspended(HSPHERE.replace("resume_on_payment: true", "resume_on_payment: [card]"))
    r.add(LedgerEntry(at("2026-03-12 09:00"), Decimal("50"), kind="credit", method=None, ref="cheque 1001"))
    d = r.tick(at("2026-03-12 10:00"))
    assert not d.resume and d.held_back is not None and d.held_back.inputs["payment_ref"] == "cheque 1001"


def test_a_future_dated_entry_is_the_next_check() -> None:
    snap = AccountSnapshot(id="42", ledger=(pay("2026-03-01 00:00", "10"), charge("2026-03-20 00:00", "50")))
    d = evaluate(snap, resolve(), at("2026-03-05 00:00"))
    assert d.trigger is None and d.next_check == at("2026-03-20 00:00")
    # while in an episode, a future payment is a moment to look again too
    debtor = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"), pay("2026-03-04 12:00", "50")),
                             episode=Episode(at("2026-03-02 10:00"), "over_limit",
                                             (StageTaken("outstanding_notice", at("2026-03-03 02:00")),)))
    d2 = evaluate(debtor, resolve(), at("2026-03-03 03:00"))
    assert d2.next_check == at("2026-03-04 12:00")


def test_forecast_assumes_in_flight_stages_take_effect_now() -> None:
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),),
                           episode=Episode(at("2026-03-02 10:00"), "over_limit"), in_flight=("outstanding_notice",))
    items = forecast(snap, resolve(), at("2026-03-04 12:00"), at("2026-03-10 00:00"))
    # pre-suspension counts 5 days from 4 March (local), not from the episode start
    assert [(i.stage, i.due_at) for i in items] == [("pre_suspension", at("2026-03-08 23:00"))]


def test_episode_ends_only_when_no_trigger_holds() -> None:
    text = HSPHERE.replace("max_delay: null", "max_delay: 10").replace("credit_limit: 0", "credit_limit: 5")
    r = suspended(text)
    # a partial payment leaving the account over its limit changes nothing
    r.add(pay("2026-03-12 08:00", "40"))
    assert r.tick(at("2026-03-12 08:30")).end_episode is None
    # paying back within the credit limit stops over_limit; max_delay is counted from this last payment
    r.add(pay("2026-03-12 09:00", "9"))
    d = r.tick(at("2026-03-12 10:00"))
    assert d.end_episode is not None and d.resume  # a payment restarts the DeltaSIB clock
    r.daily("2026-03-13 10:00", 12)
    assert r.taken()[-1] == ("outstanding_notice", "2026-03-22 10:00")  # 10 days after the last payment
    assert r.snap.holds == ()
