"""A notice that failed for good: the stages after it go ahead (or wait, when the policy says so), and a
deletion never goes ahead without a delivered deletion warning."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policy import PolicyError, evaluate, load_policy
from policy.model import AccountSnapshot, Episode, Hold, StageTaken
from tests.policy.helpers import HSPHERE, at, charge, resolve


def snapshot(*taken: StageTaken, suspended: bool = False) -> AccountSnapshot:
    holds = (Hold("debt", at("2026-03-10 10:00")),) if suspended else ()
    return AccountSnapshot(id="42", ledger=(charge("2026-03-02 10:00", "10"),), holds=holds,
                           episode=Episode(started_at=at("2026-03-02 10:00"), trigger="over_limit",
                                           stages_taken=taken, id=1))


def test_the_suspension_goes_ahead_on_its_day_after_a_notice_that_failed_for_good() -> None:
    snap = snapshot(StageTaken("outstanding_notice", at("2026-03-02 10:00")),
                    StageTaken("pre_suspension", at("2026-03-07 10:00"), undelivered=True))
    policy = resolve()
    before = evaluate(snap, policy, at("2026-03-09 10:00"))
    assert before.measures == () and before.next is not None
    assert (before.next.stage, before.next.due_at) == ("suspension", at("2026-03-09 23:00"))  # local midnight
    d = evaluate(snap, policy, at("2026-03-10 10:00"))
    assert [(ms.stage, ms.action) for ms in d.measures] == [("suspension", "suspend")]
    assert "its notice failed for good" in d.measures[0].reason.text


def test_the_next_stages_wait_when_the_policy_says_not_to_proceed() -> None:
    policy = resolve(HSPHERE + "notices: {proceed_after_failed_notice: false}\n")
    assert policy.proceed_after_failed_notice is False
    snap = snapshot(StageTaken("outstanding_notice", at("2026-03-02 10:00")),
                    StageTaken("pre_suspension", at("2026-03-07 10:00"), undelivered=True))
    d = evaluate(snap, policy, at("2026-04-30 10:00"))
    assert d.measures == () and d.next_check is None
    assert d.held_back is not None and d.held_back.rule == "stage.notice_undelivered"
    assert "pre_suspension" in d.held_back.text


def _suspended_with_warning(undelivered: bool) -> AccountSnapshot:
    return snapshot(StageTaken("outstanding_notice", at("2026-03-02 10:00")),
                    StageTaken("pre_suspension", at("2026-03-07 10:00")),
                    StageTaken("suspension", at("2026-03-10 10:00")),
                    StageTaken("deletion_warning", at("2026-03-24 10:00"), undelivered=undelivered),
                    suspended=True)


def test_deletion_waits_without_a_delivered_deletion_warning() -> None:
    policy = resolve()
    d = evaluate(_suspended_with_warning(undelivered=True), policy, at("2026-06-01 10:00"))
    assert d.measures == ()
    assert d.held_back is not None and d.held_back.rule == "stage.delete_needs_delivered_warning"
    assert d.next is not None and d.next.stage == "deletion" and d.next_check is None
    delivered = evaluate(_suspended_with_warning(undelivered=False), policy, at("2026-03-31 10:00"))
    assert [ms.stage for ms in delivered.measures] == ["deletion"]


def test_deletion_waits_even_when_its_warning_is_only_just_due() -> None:
    """A missed day catches up the warning, but the deletion due by its own rule waits for the warning
    to be delivered: it is never taken in the same breath as the warning it depends on."""
    snap = snapshot(StageTaken("outstanding_notice", at("2026-03-02 10:00")),
                    StageTaken("pre_suspension", at("2026-03-07 10:00")),
                    StageTaken("suspension", at("2026-03-10 10:00")), suspended=True)
    policy = resolve(HSPHERE.replace("after: 7,    template: deleted", "after: null, template: deleted"))
    d = evaluate(snap, policy, at("2026-04-30 10:00"))
    assert [ms.stage for ms in d.measures] == ["deletion_warning"]
    assert d.held_back is not None and d.held_back.rule == "stage.delete_needs_delivered_warning"


def test_without_a_deletion_warning_in_the_policy_deletion_is_not_held() -> None:
    warning = "    - {name: deletion_warning,   action: notice,  after: 14,   template: deletion_warning}\n"
    text = HSPHERE.replace(warning, "")
    snap = snapshot(StageTaken("outstanding_notice", at("2026-03-02 10:00")),
                    StageTaken("pre_suspension", at("2026-03-07 10:00"), undelivered=True),
                    StageTaken("suspension", at("2026-03-10 10:00")), suspended=True)
    d = evaluate(snap, resolve(text), at("2026-03-18 10:00"))
    assert [ms.stage for ms in d.measures] == ["deletion"]


def test_one_delivered_warning_of_several_is_enough() -> None:
    last = "    - {name: last_warning, action: notice, after: 3, template: deletion_warning}\n"
    text = HSPHERE.replace("    - {name: deletion,", last + "    - {name: deletion,")
    snap = _suspended_with_warning(undelivered=False)
    assert snap.episode is not None
    episode = replace(snap.episode, stages_taken=(
        *snap.episode.stages_taken, StageTaken("last_warning", at("2026-03-27 10:00"), undelivered=True)))
    d = evaluate(replace(snap, episode=episode), resolve(text), at("2026-04-04 10:00"))
    assert [ms.stage for ms in d.measures] == ["deletion"]


@pytest.mark.parametrize("value", ["yes please", "1", "[true]"])
def test_proceed_after_failed_notice_is_validated_with_its_line(value: str) -> None:
    text = HSPHERE + f"notices:\n  from_addr: billing@example.net\n  proceed_after_failed_notice: {value}\n"
    with pytest.raises(PolicyError) as info:
        load_policy(text, "conf/policy.yaml")
    line = text.splitlines().index(f"  proceed_after_failed_notice: {value}") + 1
    assert str(info.value).startswith(f"conf/policy.yaml:{line}: notices.proceed_after_failed_notice: expected "
                                      f"true or false")


def test_proceed_after_failed_notice_is_on_by_default() -> None:
    assert resolve().proceed_after_failed_notice is True
    assert resolve(HSPHERE + "notices: {from_addr: billing@example.net}\n").proceed_after_failed_notice is True
