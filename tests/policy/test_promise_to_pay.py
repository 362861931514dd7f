"""A debtor resumed with a promise to pay (``arrears resume --grace DAYS``): kept, it ends the episode;
broken, the account is suspended again and deletion follows, counted from the re-suspension."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from policy import evaluate, explain, forecast
from policy.model import AccountSnapshot, Override, UpcomingMeasure
from tests.policy.helpers import Replay, at, charge, pay, resolve

SUSPENDED = [("outstanding_notice", "2026-03-03 02:00"), ("pre_suspension", "2026-03-08 02:00"),
             ("suspension", "2026-03-11 02:00")]


def suspended_debtor() -> Replay:
    """Charged 50 on 2 March, suspended on 11 March (HSPHERE: 0, +5, +3 days), daily runs at 02:00 UTC."""
    r = Replay(resolve(), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
    r.daily("2026-03-03 02:00", 9)
    assert r.taken() == SUSPENDED and [h.kind for h in r.snap.holds] == ["debt"]
    return r


def test_a_promise_kept_ends_the_episode_without_a_new_suspension() -> None:
    r = suspended_debtor()
    r.promise("2026-03-12 10:00", 7)
    r.daily("2026-03-13 02:00", 3)
    r.add(pay("2026-03-16 09:00", "50"))
    r.daily("2026-03-16 02:00", 40)
    assert r.taken() == SUSPENDED
    ended = [d for d in r.decisions if d.end_episode is not None]
    assert [d.now for d in ended] == [at("2026-03-17 02:00")]
    assert r.snap.episode is None and r.snap.holds == () and not r.snap.deleted


def test_a_promise_broken_suspends_again_the_day_after_the_pause_then_deletion_follows() -> None:
    r = suspended_debtor()
    r.tick(at("2026-03-12 02:00"))
    r.promise("2026-03-12 10:00", 7, actor="carol", reason="pays on Friday")
    r.daily("2026-03-13 02:00", 7)  # up to 19 March 02:00, the pause runs until 19 March 10:00
    assert r.taken() == SUSPENDED
    assert all(d.held_back is not None and d.held_back.rule == "override.pause" for d in r.decisions[-7:])
    again = r.tick(at("2026-03-20 02:00"))
    assert [(m.stage, m.action, m.hold, m.template) for m in again.measures] == [
        ("debt_resuspend", "suspend", "debt", "suspended")]
    reason = again.measures[0].reason
    assert reason.rule == "debt.resuspend"
    assert "promise to pay (pause until 2026-03-19T10:00:00+00:00 by carol" in reason.text
    assert "expired unpaid" in reason.text
    assert reason.inputs["pause_actor"] == "carol" and reason.inputs["suspension_stage"] == "suspension"
    assert again.measures[0].due_at == at("2026-03-19 10:00")
    assert [h.kind for h in r.snap.holds] == ["debt"]
    # the stages after the suspension count again from the re-suspension (20 March): 14 days, then 7
    r.daily("2026-03-21 02:00", 40)
    assert r.taken() == [*SUSPENDED, ("debt_resuspend", "2026-03-20 02:00"),
                         ("deletion_warning", "2026-04-03 02:00"), ("deletion", "2026-04-10 02:00")]
    warning = next(m for d in r.decisions for m in d.measures if m.stage == "deletion_warning")
    assert "re-suspension at 2026-03-20T02:00:00+00:00" in warning.reason.text
    assert r.snap.deleted


def test_the_next_check_after_a_broken_promise_is_the_end_of_the_pause() -> None:
    r = suspended_debtor()
    r.promise("2026-03-12 10:00", 7)
    held = r.tick(at("2026-03-12 11:00"))
    assert held.measures == () and held.next_check == at("2026-03-19 10:00")
    assert held.next == UpcomingMeasure("debt_resuspend", "suspend", at("2026-03-19 10:00"))
    again = r.tick(at("2026-03-19 10:00"))
    assert [m.stage for m in again.measures] == ["debt_resuspend"]
    assert again.next is not None and again.next.stage == "deletion_warning"
    assert again.next_check == at("2026-04-01 22:00")  # 2 April local midnight (CEST), 14 days on
    # a re-suspension still being applied is neither queued twice nor followed by the next stage
    flying = replace(r.snap, holds=(), in_flight=("debt_resuspend-2",))
    waiting = evaluate(flying, r.policy, at("2026-05-01 00:00"))
    assert waiting.measures == () and waiting.held_back is not None and waiting.held_back.rule == "stage.in_flight"


def test_a_partial_payment_during_the_pause_changes_nothing() -> None:
    r = suspended_debtor()
    r.promise("2026-03-12 10:00", 7)
    r.add(pay("2026-03-15 09:00", "20"))
    r.daily("2026-03-13 02:00", 8)
    assert r.taken() == [*SUSPENDED, ("debt_resuspend", "2026-03-20 02:00")]


def test_a_warning_sent_before_the_promise_does_not_shorten_the_suspension() -> None:
    r = suspended_debtor()
    r.daily("2026-03-12 02:00", 14)
    assert r.taken()[-1] == ("deletion_warning", "2026-03-25 02:00")
    r.promise("2026-03-26 10:00", 10)
    r.daily("2026-03-27 02:00", 40)
    # deletion would be due on 1 April counted from the warning; the account must first be suspended
    # again for the 14 + 7 days from the re-suspension (6 April)
    assert r.taken()[3:] == [("deletion_warning", "2026-03-25 02:00"), ("debt_resuspend", "2026-04-06 02:00"),
                             ("deletion", "2026-04-27 02:00")]


def test_each_broken_promise_is_its_own_stage_record() -> None:
    r = suspended_debtor()
    r.promise("2026-03-12 10:00", 7)
    r.daily("2026-03-13 02:00", 8)
    r.promise("2026-03-21 10:00", 3, actor="dave", reason="second chance")
    r.daily("2026-03-22 02:00", 4)
    assert r.taken() == [*SUSPENDED, ("debt_resuspend", "2026-03-20 02:00"), ("debt_resuspend-2", "2026-03-25 02:00")]
    second = r.decisions[-1].measures[0]
    assert "by dave: second chance" in second.reason.text and "carol" not in second.reason.text
    # deletion counts from the last re-suspension: 25 March + 14 + 7 days
    r.daily("2026-03-26 02:00", 30)
    assert r.taken()[-2:] == [("deletion_warning", "2026-04-08 02:00"), ("deletion", "2026-04-15 02:00")]


def test_an_exemption_still_holds_the_re_suspension_back() -> None:
    r = suspended_debtor()
    r.promise("2026-03-12 10:00", 7)
    exempt = Override("exempt", actor="alice", reason="key customer", created_at=at("2026-03-18 00:00"),
                      expires_at=at("2026-03-25 00:00"))
    r.snap = replace(r.snap, overrides=(*r.snap.overrides, exempt))
    r.daily("2026-03-13 02:00", 13)
    assert r.taken() == [*SUSPENDED, ("debt_resuspend", "2026-03-25 02:00")]


def test_forecast_and_explain_show_the_re_suspension() -> None:
    r = suspended_debtor()
    r.promise("2026-03-12 10:00", 7)
    items = forecast(r.snap, r.policy, at("2026-03-12 11:00"), at("2026-12-31 00:00"))
    assert [(i.stage, i.due_at) for i in items] == [
        ("debt_resuspend", at("2026-03-19 10:00")),
        ("deletion_warning", at("2026-04-01 22:00")),
        ("deletion", at("2026-04-08 22:00")),
    ]
    out = explain(r.snap, r.policy, at("2026-03-19 12:00"))
    measure = out["decision"]["measures"][0]
    assert (measure["stage"], measure["hold"], measure["reason"]["rule"]) == ("debt_resuspend", "debt",
                                                                                 "debt.resuspend")
    assert measure["reason"]["inputs"]["pause_until"] == "2026-03-19T10:00:00+00:00"


def test_no_re_suspension_without_a_suspension_taken_or_for_a_debt_hold_in_place() -> None:
    # paused before the suspension stage: the schedule simply resumes after the pause
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),))
    r = Replay(resolve(), snap)
    r.daily("2026-03-03 02:00", 2)
    r.promise("2026-03-04 10:00", 3)
    r.daily("2026-03-05 02:00", 4)
    assert r.taken() == [("outstanding_notice", "2026-03-03 02:00"), ("pre_suspension", "2026-03-08 02:00")]
    # still suspended for its debt: nothing to suspend again
    s = suspended_debtor()
    s.daily("2026-03-12 02:00", 3)
    assert s.taken() == SUSPENDED
    assert evaluate(s.snap, s.policy, s.decisions[-1].now + timedelta(hours=1)).measures == ()
