"""Each backend's own reading of its status facts (``observe``): active, suspended, deleted, hand-made
changes and facts that do not tell. The facts are the ones each connector's status operation reports;
the real-server suites (test_web, test_mail, test_vpopmail, test_login, test_home) run the same
readings on facts from real hosts."""

from __future__ import annotations

import pytest

from connectors.base import Connector
from connectors.fleet import Job
from connectors.home import HomeConnector, HomeSettings
from connectors.login import LoginSettings, UnixLoginConnector
from connectors.mail.dovecot_postfix import DovecotPostfixConnector, DovecotPostfixSettings
from connectors.mail.vpopmail import VpopmailConnector, VpopmailSettings
from connectors.observed import Observed, combine
from connectors.testing import FakeFleet, FlagConnector, FlagSettings
from connectors.web.apache import ApacheConnector, ApacheSettings
from connectors.web.nginx import NginxConnector, NginxSettings

URL = "https://billing.example/suspended"


def _web(backend: str) -> Connector:
    if backend == "nginx":
        return NginxConnector(NginxSettings(suspended_url=URL), "web1")
    return ApacheConnector(ApacheSettings(suspended_url=URL), "web1")


def _mail(backend: str) -> Connector:
    if backend == "dovecot-postfix":
        return DovecotPostfixConnector(DovecotPostfixSettings(), "mail1")
    return VpopmailConnector(VpopmailSettings(), "mail1")


def _site(site: str, *, hook: str = "present", snippet: str = "no", vhost: str = "present") -> dict[str, str]:
    return {f"{site}.hook": hook, f"{site}.suspended": snippet, f"{site}.vhost": vhost}


def _box(box: str, *, record: str = "no", flags: str = "", added: str = "", maildir: str = "present",
         deleted: str = "no") -> dict[str, str]:
    facts = {f"maildir:{box}": maildir, f"deleted:{box}": deleted, f"flags:{box}": flags, f"suspended:{box}": record}
    if record == "yes":
        facts |= {f"before:{box}": "", f"added:{box}": added}
    return facts


@pytest.mark.parametrize("backend", ["nginx", "apache"])
@pytest.mark.parametrize(("facts", "state"), [
    (_site("a.example") | _site("b.example"), "active"),
    (_site("a.example", snippet="yes") | _site("b.example", snippet="yes"), "suspended"),
    # delete archived and removed the vhost and the snippet, and no vhost carries the hook any more
    (_site("a.example", hook="missing", vhost="absent"), "deleted"),
    (_site("a.example", hook="missing", snippet="yes", vhost="absent"), "deleted"),
    # the vhost lives under another name but carries the hook: served, not deleted
    (_site("a.example", vhost="absent"), "active"),
    # by hand: the hook line was taken out of the vhost, so the snippet is no longer included
    (_site("a.example", hook="missing", snippet="yes"), "active"),
    (_site("a.example", snippet="yes") | _site("b.example"), "partial"),
    ({"a.example.suspended": "yes"}, "unknown"),
    ({}, "unknown"),
])
def test_web_facts(backend: str, facts: dict[str, str], state: str) -> None:
    assert _web(backend).observe(facts).state == state


def test_a_web_resource_half_deleted_is_partial_and_gone() -> None:
    seen = _web("nginx").observe(_site("a.example", hook="missing", vhost="absent") | _site("b.example", snippet="yes"))
    assert (seen.state, seen.parts, seen.gone) == ("partial", ("suspended", "deleted"), True)
    assert "a.example: deleted" in seen.detail and "b.example: suspended" in seen.detail
    assert not seen.agrees("deleted") and not seen.agrees("suspended")


@pytest.mark.parametrize("backend", ["dovecot-postfix", "vpopmail"])
@pytest.mark.parametrize(("facts", "state"), [
    (_box("x@a.example"), "active"),
    (_box("x@a.example", flags="p"), "active"),  # the owner's own flag, no suspension recorded
    (_box("x@a.example", record="yes", flags="dpwibr", added="dpwibr"), "suspended"),
    # flags set before the suspension count: it only added the rest
    (_box("x@a.example", record="yes", flags="dpw", added="pw"), "suspended"),
    (_box("x@a.example", record="yes", flags="dpwibr", added="dpwibr", maildir="absent", deleted="yes"), "deleted"),
    # restored by hand from the archive: there again, still suspended
    (_box("x@a.example", record="yes", flags="dpwibr", added="dpwibr", deleted="yes"), "suspended"),
    # by hand: some of the suspension's flags cleared (IMAP open again), or all of them after deletion
    (_box("x@a.example", record="yes", flags="wi", added="pwib"), "active"),
    (_box("x@a.example", record="yes", flags="", added="dpwibr", maildir="absent", deleted="yes"), "active"),
    # a mailbox that never received mail has no maildir yet: nothing was deleted
    (_box("x@a.example", maildir="absent"), "active"),
    (_box("x@a.example", record="yes", flags="dpwibr", added="dpwibr", maildir="absent"), "suspended"),
    (_box("x@a.example", record="yes", flags="dpwibr", added="dpwibr") | _box("y@a.example"), "partial"),
    ({"suspended:x@a.example": "yes"}, "unknown"),
    ({}, "unknown"),
])
def test_mail_facts(backend: str, facts: dict[str, str], state: str) -> None:
    assert _mail(backend).observe(facts).state == state


def test_mail_detail_names_the_flags_cleared_by_hand() -> None:
    seen = _mail("vpopmail").observe(_box("x@a.example", record="yes", flags="wi", added="pwib"))
    assert "flags pb of the suspension were cleared by hand" in seen.detail


@pytest.mark.parametrize(("facts", "state", "agrees"), [
    ({"suspended": "no", "expire": "", "crontab_saved": "no"}, "active", {"active"}),
    # delete keeps the login locked and removes nothing: locked agrees with suspended and deleted
    ({"suspended": "yes", "expire": "1", "crontab_saved": "yes"}, "suspended", {"suspended", "deleted"}),
    ({"suspended": "no", "expire": "1", "crontab_saved": "no"}, "suspended", {"suspended", "deleted"}),
    # by hand: usermod -e '' while the agent's record says locked
    ({"suspended": "yes", "expire": "", "crontab_saved": "yes"}, "active", {"active"}),
    ({"suspended": "yes"}, "unknown", set()),
])
def test_login_facts(facts: dict[str, str], state: str, agrees: set[str]) -> None:
    seen = UnixLoginConnector(LoginSettings(), "web1").observe(facts)
    assert seen.state == state
    assert {s for s in ("active", "suspended", "deleted") if seen.agrees(s)} == agrees


@pytest.mark.parametrize(("facts", "state", "agrees"), [
    ({"exists": "yes"}, "active", {"active", "suspended"}),  # the home connector does not suspend
    ({"exists": "no"}, "deleted", {"deleted"}),
    ({}, "unknown", set()),
])
def test_home_facts(facts: dict[str, str], state: str, agrees: set[str]) -> None:
    seen = HomeConnector(HomeSettings(), "web1").observe(facts)
    assert seen.state == state
    assert {s for s in ("active", "suspended", "deleted") if seen.agrees(s)} == agrees


@pytest.mark.parametrize("state", ["active", "suspended", "deleted"])
def test_flag_facts_and_the_fake_fleet_agree(state: str) -> None:
    assert FlagConnector(FlagSettings(root="/tmp/flags"), "h").observe({"state": state}).state == state
    fleet = FakeFleet()
    if state != "active":
        fleet.set_state("h", "web", "a1", state)
    job = Job("k", "a1", "status", "web", "h", {"sites": ["a1.example"]})
    observed = fleet.apply([job])["k"].observed
    assert observed is not None and observed.state == state
    assert FlagConnector(FlagSettings(root="/tmp/flags"), "h").observe({}).state == "unknown"


def test_combine_keeps_what_every_part_cannot_tell_apart() -> None:
    locked = Observed("suspended", "expired", also=frozenset({"deleted"}))
    assert combine({"u1": locked, "u2": locked}).agrees("deleted")
    assert not combine({"u1": locked, "u2": Observed("suspended")}).agrees("deleted")
    assert combine({}).state == "unknown"
