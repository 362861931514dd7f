"""Reconcile (agent.reconcile) on a FakeFleet: hand-made changes found, repaired through the outbox,
unreachable hosts and work in flight reported, not guessed. What each backend's facts mean is its
connector's ``observe`` (tests/connectors/test_observe.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent import actions
from agent.config import AgentSettings
from agent.executor import execute
from agent.imports import import_accounts
from agent.reconcile import reconcile
from agent.store import models as m
from agent.store.db import Store
from connectors.testing import FakeFleet
from policy.loader import PolicySet

NOW = datetime(2026, 3, 2, 10, tzinfo=UTC)
ACCOUNTS = [
    {"id": "a1", "resources": {"web": {"host": "web1", "sites": ["a1.example"]},
                               "mail": {"host": "mail1", "mailboxes": ["x@a1.example"]}}},
    {"id": "b2", "resources": {"web": {"host": "web1", "sites": ["b2.example"]}}},
]


@pytest.fixture
def store_with_accounts(store: Store, policy: PolicySet, tmp_path: Path) -> Store:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ACCOUNTS))
    with store.session() as s:
        import_accounts(s, tmp_path / "a.jsonl", NOW, policy)
    return store


def test_a_hand_made_change_is_found_and_fixed(store_with_accounts: Store) -> None:
    store, fleet = store_with_accounts, FakeFleet()
    with store.session() as s:
        actions.suspend(s, "a1", actor="alice", reason="abuse", now=NOW)
    with store.sessions() as s:
        execute(s, fleet, None, NOW, settings=AgentSettings())
    with store.session() as s:
        assert reconcile(s, fleet, NOW).differences == []
    fleet.set_state("mail1", "mail", "a1", "active")  # someone resumed the mailbox by hand
    with store.session() as s:
        report = reconcile(s, fleet, NOW)
    assert [(d.account, d.service, d.observed, d.fix) for d in report.differences] == [
        ("a1", "mail", "active", "suspend")]
    assert report.queued == []
    # every placement is read in one fleet call (the fleet runs one batch per host)
    last = fleet.batches[-1]
    assert sorted((j.action, j.host, j.service, j.account) for j in last) == [
        ("status", "mail1", "mail", "a1"), ("status", "web1", "web", "a1"), ("status", "web1", "web", "b2")]
    with store.session() as s:
        report = reconcile(s, fleet, NOW, fix=True, actor="carol")
    assert [(q["account"], q["service"], q["action"]) for q in report.queued] == [("a1", "mail", "suspend")]
    with store.session() as s:
        assert reconcile(s, fleet, NOW).busy == ["a1"]  # the repair is in flight: not compared meanwhile
    with store.sessions() as s:
        taken = execute(s, fleet, None, NOW, settings=AgentSettings()).taken
    assert [t["action"] for t in taken] == ["reconcile"]
    assert fleet.state("mail1", "mail", "a1") == "suspended"
    with store.session() as s:
        assert reconcile(s, fleet, NOW).differences == []
        acc = s.get(m.Account, "a1")
        assert acc is not None and acc.state == "suspended"


def test_a_deleted_host_is_reported_but_not_fixed_and_unreachable_hosts_are_errors(store_with_accounts: Store) -> None:
    store, fleet = store_with_accounts, FakeFleet()
    fleet.set_state("web1", "web", "b2", "deleted")
    fleet.fail_host("mail1")
    with store.session() as s:
        report = reconcile(s, fleet, NOW, fix=True)
    assert [(d.account, d.observed, d.fix) for d in report.differences] == [("b2", "deleted", None)]
    assert report.queued == []
    assert [(e["account"], e["host"]) for e in report.errors] == [("a1", "mail1")]
    assert report.checked == 2


def test_facts_that_do_not_tell_are_reported_not_guessed(store_with_accounts: Store) -> None:
    store, fleet = store_with_accounts, FakeFleet()
    fleet.set_facts("web1", "web", "b2", state="half-configured")
    with store.session() as s:
        report = reconcile(s, fleet, NOW, fix=True)
    assert report.differences == [] and report.queued == []
    assert [(e["account"], e["service"]) for e in report.errors] == [("b2", "web")]
    assert "do not tell the state" in report.errors[0]["error"] and "half-configured" in report.errors[0]["error"]
    assert report.checked == 2
