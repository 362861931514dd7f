"""Manual actions (agent.actions) through the outbox on a FakeFleet: state written only once every host
applied them, delete facts kept for restore, refusals write nothing, cancelled work, notices once."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from agent import actions
from agent.config import AgentSettings
from agent.executor import execute
from agent.imports import import_accounts, import_ledger
from agent.notices import OutgoingNotice, RenderedNotice, SendResult
from agent.store import models as m
from agent.store.db import Store
from agent.tick import tick
from connectors.testing import FakeFleet
from policy.loader import PolicySet

DAY0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
SETTINGS = AgentSettings(lease_seconds=600, backoff_seconds=60, max_attempts=3)
ACCOUNTS = [
    {"id": "a1", "billing_email": "a1@example.net",
     "resources": {"web": {"host": "web1", "sites": ["a1.example"]},
                   "mail": {"host": "mail1", "mailboxes": ["x@a1.example"]}}},
    {"id": "b2", "billing_email": "b2@example.net", "resources": {"web": {"host": "web1", "sites": ["b2.example"]}}},
]


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


@dataclass
class FakeNotifier:
    sent: list[OutgoingNotice] = field(default_factory=list)

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: Callable[[OutgoingNotice, SendResult], None] | None = None) -> dict[str, SendResult]:
        results = {}
        for n in notices:
            self.sent.append(n)
            results[n.key] = SendResult(ok=True)
            if on_result is not None:
                on_result(n, results[n.key])
        return results


class FakeComposer:
    def compose(self, session: Any, account: m.Account, job: m.Job, now: datetime) -> OutgoingNotice:
        return OutgoingNotice(key=job.key, to=account.billing_email or "", message_id=f"<{job.key}@example.net>",
                              rendered=RenderedNotice(subject=str(job.payload.get("template")), text="-"), date=now)


@dataclass
class World:
    store: Store
    policy: PolicySet
    fleet: FakeFleet = field(default_factory=FakeFleet)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)

    def run(self, n: float) -> dict[str, Any]:
        with self.store.sessions() as s:
            tick(s, self.policy, day(n), SETTINGS)
            x = execute(s, self.fleet, self.notifier, day(n), composer=FakeComposer(), settings=SETTINGS,
                        transient_tries=1, transient_wait=0)
        return x.as_dict()

    def state(self, account: str) -> str:
        with self.store.session() as s:
            acc = s.get(m.Account, account)
            assert acc is not None
            return acc.state

    def rows(self) -> dict[str, int]:
        with self.store.session() as s:
            return {t.__table__.name: s.scalar(select(func.count()).select_from(t)) or 0
                    for t in (m.Job, m.Hold, m.Override, m.AuditEntry, m.Notice, m.StageTaken)}


@pytest.fixture
def world(store: Store, policy: PolicySet, tmp_path: Path) -> World:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ACCOUNTS))
    with store.session() as s:
        import_accounts(s, tmp_path / "a.jsonl", DAY0, policy)
    return World(store, policy)


def charge(world: World, account: str, n: float, amount: str, tmp: Path) -> None:
    path = tmp / f"l-{account}-{n}.jsonl"
    path.write_text(json.dumps({"account": account, "at": day(n).isoformat(), "amount": f"-{amount}",
                                "ref": f"c-{n}"}) + "\n")
    with world.store.session() as s:
        import_ledger(s, path, day(n))


def test_state_is_written_only_when_every_host_applied_the_suspension(world: World) -> None:
    world.fleet.fail_host("mail1")
    with world.store.session() as s:
        actions.suspend(s, "a1", actor="alice", reason="abuse", now=day(0), notice_template="suspended")
    world.run(0)
    assert world.fleet.state("web1", "web", "a1") == "suspended"
    assert world.state("a1") == "active"
    assert world.notifier.sent == []  # the notice waits until the suspension took effect
    world.fleet.heal_host("mail1")
    taken = world.run(0.5)["taken"]
    assert [(t["account"], t["action"]) for t in taken] == [("a1", "suspend")]
    assert world.state("a1") == "suspended"
    assert [(n.to, n.rendered.subject) for n in world.notifier.sent] == [("a1@example.net", "suspended")]
    world.run(1)
    assert len(world.notifier.sent) == 1


def test_delete_keeps_the_archive_facts_and_restore_hands_them_back(world: World) -> None:
    with world.store.session() as s:
        actions.delete(s, "a1", actor="alice", reason=None, now=day(0))
    world.run(0)
    assert world.state("a1") == "deleted"
    with world.store.session() as s:
        rows = s.scalars(select(m.Placement).where(m.Placement.account == "a1"))
        saved = {p.service: p.state["delete"] for p in rows}
    assert saved["web"]["archive"] == "/var/backups/arrears/a1-web.tar.gz" and len(saved["web"]["sha256"]) == 64
    with world.store.session() as s:
        actions.restore(s, "a1", actor="alice", reason=None, now=day(1))
    world.run(1)
    restores = {j.service: dict(j.state) for j in world.fleet.applied(account="a1", action="restore")}
    assert restores == {"web": saved["web"], "mail": saved["mail"]}
    assert world.state("a1") == "suspended"
    assert world.fleet.state("web1", "web", "a1") == "suspended"
    assert world.fleet.state("mail1", "mail", "a1") == "suspended"


def test_a_refused_resume_writes_nothing(world: World, tmp_path: Path) -> None:
    charge(world, "a1", 0, "30", tmp_path)
    with world.store.session() as s:
        actions.suspend(s, "a1", actor="alice", reason="abuse", now=day(0))
    world.run(0)
    before = world.rows()
    with pytest.raises(actions.ActionRefused, match="still in debt"), world.store.session() as s:
        actions.resume(s, "a1", world.policy, actor="bob", reason=None, now=day(1))
    assert world.rows() == before
    with world.store.session() as s:
        res = actions.resume(s, "a1", world.policy, actor="bob", reason="cheque in the post", now=day(1),
                             grace_days=5)
    assert sorted(res.holds_released) == ["admin"] and res.overrides[0]["kind"] == "pause"
    world.run(1)
    assert world.fleet.state("web1", "web", "a1") == "active"
    assert world.state("a1") == "debtor"


def test_resume_before_the_suspension_ran_cancels_it(world: World) -> None:
    with world.store.session() as s:
        actions.suspend(s, "b2", actor="alice", reason="abuse", now=day(0))
        s.flush()
        res = actions.resume(s, "b2", world.policy, actor="alice", reason="mistake", now=day(0))
    assert res.cancelled == 1 and res.jobs == []
    world.run(0)
    assert world.fleet.applied(account="b2") == []
    assert world.state("b2") == "active"
    with world.store.session() as s:
        statuses = set(s.scalars(select(m.Job.status).where(m.Job.account == "b2")))
    assert statuses == {"cancelled"}


def test_an_admin_hold_keeps_the_account_suspended_after_the_debt_is_paid(world: World, tmp_path: Path) -> None:
    charge(world, "b2", 0, "30", tmp_path)
    for n in (0, 5, 8):
        world.run(n)
    assert world.state("b2") == "suspended"
    with world.store.session() as s:
        res = actions.suspend(s, "b2", actor="alice", reason="chargeback", now=day(9))
    assert res.jobs == [] and res.notes  # suspended already: only the hold
    path = tmp_path / "pay.jsonl"
    path.write_text(json.dumps({"account": "b2", "at": day(10).isoformat(), "amount": "30", "kind": "payment",
                                "method": "card", "ref": "p1"}) + "\n")
    with world.store.session() as s:
        import_ledger(s, path, day(10))
    world.run(10)
    world.run(11)
    assert world.state("b2") == "suspended"
    assert world.fleet.state("web1", "web", "b2") == "suspended"
    with world.store.session() as s:
        actions.resume(s, "b2", world.policy, actor="alice", reason="settled", now=day(12))
    world.run(12)
    assert world.state("b2") == "active"
    assert world.fleet.state("web1", "web", "b2") == "active"


def test_mass_mail_is_keyed_per_account_template_and_day(world: World, tmp_path: Path) -> None:
    charge(world, "a1", 0, "30", tmp_path)
    world.run(0)
    sent = len(world.notifier.sent)
    for when in (day(1), day(1) + timedelta(hours=5)):
        with world.store.session() as s:
            actions.mass_mail(s, world.policy, template="mass_mail", now=when, actor="alice")
        world.run((when - DAY0).total_seconds() / 86400)
    mails = world.notifier.sent[sent:]
    assert [(n.to, n.key) for n in mails] == [("a1@example.net", "a1:mail:mass_mail:2026-03-03")]
    with pytest.raises(actions.ActionRefused, match="not valid"), world.store.session() as s:
        actions.mass_mail(s, world.policy, template="../etc", now=day(1), actor="alice")
