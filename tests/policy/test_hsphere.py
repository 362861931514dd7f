"""H-Sphere "Managing / Suspending Debtors" timelines replayed day by day (cron at 02:00 UTC)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from policy import evaluate
from policy.model import AccountSnapshot, Episode, Hold, Override, StageTaken
from tests.policy.helpers import HSPHERE, Replay, at, charge, pay, resolve

FULL = [
    ("outstanding_notice", "2026-03-03 02:00"),
    ("pre_suspension", "2026-03-08 02:00"),
    ("suspension", "2026-03-11 02:00"),
    ("deletion_warning", "2026-03-25 02:00"),
    ("deletion", "2026-04-01 02:00"),
]


def debtor() -> Replay:
    return Replay(resolve(), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))


def test_every_stage_in_order_on_its_day() -> None:
    r = debtor()
    r.daily("2026-03-01 02:00", 40)
    assert r.taken() == FULL
    assert r.snap.deleted
    assert [h.kind for h in r.snap.holds] == ["debt"]


def test_no_debtor_while_balance_within_credit_limit() -> None:
    text = HSPHERE.replace("credit_limit: 0", "credit_limit: 100")
    r = Replay(resolve(text), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "100"),)))
    r.daily("2026-03-01 02:00", 20)
    assert r.taken() == []
    r.add(charge("2026-03-25 10:00", "0.01"))
    r.daily("2026-03-21 02:00", 6)
    assert r.taken() == [("outstanding_notice", "2026-03-26 02:00")]


def test_each_stage_is_due_exactly_at_local_midnight_and_not_before() -> None:
    r = debtor()
    r.tick(at("2026-03-03 02:00"))
    # pre_suspension: local date 2026-03-03 + 5 = 2026-03-08 00:00 CET = 2026-03-07 23:00 UTC
    before = evaluate(r.snap, r.policy, at("2026-03-07 22:59:59"))
    assert before.measures == ()
    assert before.next is not None and before.next.due_at == at("2026-03-07 23:00")
    assert before.next_check == at("2026-03-07 23:00")
    due = evaluate(r.snap, r.policy, at("2026-03-07 23:00"))
    assert [m.stage for m in due.measures] == ["pre_suspension"]


def test_dst_spring_forward_counts_calendar_days_in_amsterdam() -> None:
    # suspension taken 2026-03-28 03:00 local (CET); +3 calendar days crosses the 29 March switch to CEST:
    # due at local midnight 2026-03-31 = 2026-03-30 22:00 UTC (not 23:00).
    policy = resolve()
    snap = AccountSnapshot(
        id="42", ledger=(charge("2026-03-10 10:00", "50"),), holds=(Hold("debt", at("2026-03-28 02:00")),),
        episode=Episode(at("2026-03-10 10:00"), "over_limit", (
            StageTaken("outstanding_notice", at("2026-03-10 10:00")),
            StageTaken("pre_suspension", at("2026-03-20 10:00")),
            StageTaken("suspension", at("2026-03-28 02:00")))),
    )
    text = HSPHERE.replace("after: 14", "after: 3")
    decision = evaluate(snap, resolve(text), at("2026-03-28 02:00"))
    assert decision.next is not None and decision.next.due_at == at("2026-03-30 22:00")
    assert decision.next.due_at.astimezone(ZoneInfo("Europe/Amsterdam")).hour == 0
    # And back in autumn (25 Oct 2026): local midnight 27 Oct is 23:00 UTC again.
    snap_autumn = AccountSnapshot(
        id="42", ledger=(charge("2026-10-20 10:00", "50"),),
        episode=Episode(at("2026-10-20 10:00"), "over_limit",
                        (StageTaken("outstanding_notice", at("2026-10-24 20:00")),)),
    )
    autumn = evaluate(snap_autumn, policy, at("2026-10-25 12:00"))
    assert autumn.next is not None and autumn.next.due_at == at("2026-10-28 23:00")


def test_exact_duration_after_is_counted_in_seconds() -> None:
    text = HSPHERE.replace("after: 5,   ", "after: 36h, ")
    r = Replay(resolve(text), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
    r.tick(at("2026-03-02 10:00"))
    assert evaluate(r.snap, r.policy, at("2026-03-03 21:59:59")).measures == ()
    assert [m.stage for m in evaluate(r.snap, r.policy, at("2026-03-03 22:00")).measures] == ["pre_suspension"]


def test_disabled_notice_counts_from_the_previous_stage_taken_or_the_episode_start() -> None:
    text = HSPHERE.replace("after: null, template: outstanding}", "after: null, template: outstanding, enabled: false}")
    r = Replay(resolve(text), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
    r.daily("2026-03-01 02:00", 14)
    # no outstanding notice; pre-suspension counts 5 days from the day the account entered debt (2 March)
    assert r.taken()[:2] == [("pre_suspension", "2026-03-07 02:00"), ("suspension", "2026-03-10 02:00")]

    text2 = HSPHERE.replace("after: 5,    template: pre_suspension}",
                            "after: 5, template: pre_suspension, enabled: false}")
    r2 = Replay(resolve(text2), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
    r2.daily("2026-03-01 02:00", 14)
    # the suspension count runs from the outstanding notice (3 March)
    assert r2.taken()[:2] == [("outstanding_notice", "2026-03-03 02:00"), ("suspension", "2026-03-06 02:00")]


def test_empty_days_apply_measures_immediately_in_one_run() -> None:
    text = (HSPHERE.replace("after: 5,   ", "after: null,").replace("after: 3,   ", "after: null,"))
    r = Replay(resolve(text), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
    d = r.tick(at("2026-03-03 02:00"))
    assert [m.stage for m in d.measures] == ["outstanding_notice", "pre_suspension", "suspension"]
    assert d.measures[2].hold == "debt"
    assert d.next is not None and d.next.stage == "deletion_warning"


def test_missed_ticks_catch_up_one_stage_per_run() -> None:
    r = debtor()
    r.tick(at("2026-03-03 02:00"))
    # the cron did not run for a month: one stage per run, each counted from when it is actually taken
    d = r.tick(at("2026-04-05 02:00"))
    assert [m.stage for m in d.measures] == ["pre_suspension"]
    assert d.measures[0].due_at == at("2026-03-07 23:00")
    assert evaluate(r.snap, r.policy, at("2026-04-05 03:00")).measures == ()
    r.daily("2026-04-06 02:00", 30)
    assert r.taken()[2:] == [("suspension", "2026-04-08 02:00"), ("deletion_warning", "2026-04-22 02:00"),
                             ("deletion", "2026-04-29 02:00")]


def test_outstanding_balance_date_overrides_the_start() -> None:
    debt_date = Override("debt_date", actor="admin", reason="agreed start", created_at=at("2026-03-04 09:00"),
                         at=at("2026-02-20 00:00"))
    snap = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),), overrides=(debt_date,))
    r = Replay(resolve(), snap)
    d = r.tick(at("2026-03-05 02:00"))
    assert d.start_episode is not None and d.start_episode.at == at("2026-02-20 00:00")
    assert "debt_date" in d.start_episode.reason.inputs
    # the outstanding notice is due immediately; the pre-suspension counts from when it was taken
    assert [m.stage for m in d.measures] == ["outstanding_notice"]
    # moving the date on a running episode with no stage taken moves the count too
    late = Override("debt_date", actor="admin", reason="later", created_at=at("2026-03-01 00:00"),
                    at=at("2026-03-20 00:00"))
    fresh = AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),), overrides=(late,),
                            episode=Episode(at("2026-03-02 10:00"), "over_limit"))
    d2 = evaluate(fresh, resolve(), at("2026-03-10 02:00"))
    assert d2.measures == () and d2.next is not None and d2.next.due_at == at("2026-03-20 00:00")


def test_card_payment_resumes_cheque_waits_for_admin() -> None:
    text = HSPHERE.replace("resume_on_payment: true", "resume_on_payment: [card]")
    for method, resumes in (("card", True), ("check", False)):
        r = Replay(resolve(text), AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "50"),)))
        r.daily("2026-03-01 02:00", 12)
        assert r.taken()[-1] == ("suspension", "2026-03-11 02:00")
        r.add(pay("2026-03-12 09:00", "50", method=method))
        d = r.tick(at("2026-03-12 10:00"))
        assert d.end_episode is not None
        assert d.resume is resumes
        assert r.snap.episode is None
        if resumes:
            assert d.release_holds == ("debt",) and d.held_back is None and r.snap.holds == ()
        else:
            assert d.release_holds == () and [h.kind for h in r.snap.holds] == ["debt"]
            assert d.held_back is not None and "admin must resume" in d.held_back.text
            assert d.held_back.inputs["payment_method"] == "check"
        r.daily("2026-03-13 02:00", 30)
        assert r.taken()[-1] == ("suspension", "2026-03-11 02:00")  # no new measures


def test_partial_payment_changes_nothing_and_full_payment_resets_counters() -> None:
    r = debtor()
    r.daily("2026-03-01 02:00", 12)
    r.add(pay("2026-03-12 09:00", "30"))
    r.daily("2026-03-12 10:00", 14)
    # the deletion warning still comes at the first run after local midnight of 25 March
    assert r.taken() == [*FULL[:3], ("deletion_warning", "2026-03-25 10:00")]
    r.add(pay("2026-03-26 09:00", "20"))
    d = r.tick(at("2026-03-26 10:00"))
    assert d.end_episode is not None and d.resume and r.snap.holds == ()
    # a new debt later starts a fresh episode from the first stage
    r.add(charge("2026-05-01 10:00", "5"))
    r.daily("2026-05-01 11:00", 2)
    assert r.taken()[-1] == ("outstanding_notice", "2026-05-01 11:00")


def test_admin_hold_survives_payment() -> None:
    r = debtor()
    r.daily("2026-03-01 02:00", 12)
    r.snap = AccountSnapshot(**{**r.snap.__dict__, "holds": (*r.snap.holds, Hold("admin", at("2026-03-11 12:00"),
                                                                              "abuse", "root"))})
    r.add(pay("2026-03-12 09:00", "50"))
    d = r.tick(at("2026-03-12 10:00"))
    assert d.release_holds == ("debt",) and not d.resume
    assert [h.kind for h in r.snap.holds] == ["admin"]


def test_in_flight_stage_is_not_repeated_and_blocks_the_next() -> None:
    r = debtor()
    r.tick(at("2026-03-03 02:00"))
    snap = AccountSnapshot(**{**r.snap.__dict__, "in_flight": ("pre_suspension",)})
    d = evaluate(snap, r.policy, at("2026-04-30 02:00"))
    assert d.measures == () and d.next is None
    assert d.held_back is not None and d.held_back.rule == "stage.in_flight"


def test_decisions_carry_reasons_with_rule_thresholds_and_inputs() -> None:
    r = debtor()
    d = r.tick(at("2026-03-03 02:00"))
    assert d.trigger is not None and d.trigger.trigger == "over_limit" and d.trigger.at == at("2026-03-02 10:00")
    assert d.trigger.reason.inputs["balance"] == "-50"
    assert d.trigger.reason.thresholds["credit_limit"] == "0"
    measure = d.measures[0]
    assert measure.reason.rule == "stage.outstanding_notice"
    assert measure.reason.thresholds["after"] == "immediately"
    assert measure.reason.inputs["counted_from"] == at("2026-03-02 10:00").isoformat()
    assert d.balance == Decimal("-50") and d.in_debt
    later = evaluate(r.snap, r.policy, at("2026-03-03 02:00") + timedelta(hours=1))
    assert later.measures == ()
