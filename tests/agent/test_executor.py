"""The tick and the executor on a FakeFleet: outbox jobs per host, retries, crash recovery, notices once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.config import AgentSettings
from agent.executor import NoticeComposer, TemplateComposer, _claim, execute
from agent.imports import import_accounts, import_ledger
from agent.notices import NoticeSettings, OutgoingNotice, RenderedNotice, SendResult, SmtpNotifier, Templates
from agent.store import models as m
from agent.store.db import Store
from agent.tick import tick
from connectors.testing import FakeFleet
from policy import load_policy
from policy.loader import PolicySet
from tests.scenarios.harness import POLICY
from tests.servers.smtp import SmtpServer

DAY0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
SETTINGS = AgentSettings(lease_seconds=600, backoff_seconds=60, max_attempts=3)


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


class Crash(BaseException):
    """The process dies (nothing after it runs, no ``except Exception`` catches it)."""


@dataclass
class FakeNotifier:
    """Accepts every notice (or answers ``fail``), reporting each one at once like the real notifiers.
    ``crash_after``: the process dies once that many were accepted, while the next one is in flight."""

    sent: list[OutgoingNotice] = field(default_factory=list)
    fail: SendResult | None = None
    crash_after: int | None = None

    def send(self, notices: Sequence[OutgoingNotice], *,
             on_result: Callable[[OutgoingNotice, SendResult], None] | None = None) -> dict[str, SendResult]:
        results: dict[str, SendResult] = {}
        for n in notices:
            if self.fail is None and self.crash_after is not None and len(self.sent) >= self.crash_after:
                self.sent.append(n)  # the server has it, the agent never hears back
                raise Crash
            results[n.key] = self.fail or SendResult(ok=True)
            if self.fail is None:
                self.sent.append(n)
            if on_result is not None:
                on_result(n, results[n.key])
        return results


class FakeComposer:
    def compose(self, session, account, job, now):  # type: ignore[no-untyped-def]
        return OutgoingNotice(key=job.key, to=account.billing_email, message_id=f"<{job.key}@example.net>",
                              rendered=RenderedNotice(subject=job.stage, text="pay"), date=now)


ACCOUNTS = [
    {"id": "a1", "billing_email": "a1@example.net",
     "resources": {"web": {"host": "web1", "sites": ["a1.example"]},
                   "mail": {"host": "mail1", "mailboxes": ["x@a1.example"]}}},
    {"id": "b2", "billing_email": "b2@example.net", "resources": {"web": {"host": "web2", "sites": ["b2.example"]}}},
]


@pytest.fixture
def world(store: Store, policy: PolicySet, tmp_path: Path) -> World:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in ACCOUNTS))
    (tmp_path / "l.jsonl").write_text("".join(json.dumps({"account": a["id"], "at": day(0).isoformat(),
                                                          "amount": "-10", "ref": "c"}) + "\n" for a in ACCOUNTS))
    with store.session() as s:
        import_accounts(s, tmp_path / "a.jsonl", DAY0, policy)
        import_ledger(s, tmp_path / "l.jsonl", DAY0)
    return World(store, policy, FakeFleet(), FakeNotifier())


@dataclass
class World:
    store: Store
    policy: PolicySet
    fleet: FakeFleet
    notifier: FakeNotifier
    composer: NoticeComposer = field(default_factory=FakeComposer)

    def run(self, n: float, **kw: object):  # type: ignore[no-untyped-def]
        with self.store.sessions() as s:
            t = tick(s, self.policy, day(n), SETTINGS)
            x = execute(s, self.fleet, self.notifier, day(n), composer=self.composer, settings=SETTINGS,
                        transient_tries=1, **kw)  # type: ignore[arg-type]
        return t, x

    def state(self, account: str) -> str:
        with self.store.session() as s:
            acc = s.get(m.Account, account)
            assert acc is not None
            return acc.state

    def jobs(self, **where: str) -> list[m.Job]:
        with self.store.session() as s:
            stmt = select(m.Job).order_by(m.Job.id)
            for k, v in where.items():
                stmt = stmt.where(getattr(m.Job, k) == v)
            return list(s.scalars(stmt))


def suspend_day(w: World) -> None:
    for n in (0, 5):
        w.run(n)


def test_suspension_is_one_job_per_service_and_host_and_its_notice_follows(world: World) -> None:
    suspend_day(world)
    world.run(8)
    keys = sorted(j.key for j in world.jobs(action="suspend"))
    assert keys == ["a1:1:suspension:mail:mail1", "a1:1:suspension:web:web1", "b2:2:suspension:web:web2"]
    assert len(world.fleet.batches) == 1  # one apply for the whole tick
    assert world.state("a1") == "suspended" and world.state("b2") == "suspended"
    assert world.fleet.state("web1", "web", "a1") == "suspended"
    # the suspension notice went out after the hosts applied it, in a later round of the same run
    subjects = [n.rendered.subject for n in world.notifier.sent if n.to == "a1@example.net"]
    assert subjects == ["outstanding_notice", "pre_suspension", "suspension"]
    with world.store.session() as s:
        holds = [(h.account, h.kind) for h in s.scalars(select(m.Hold).order_by(m.Hold.account))]
    assert holds == [("a1", "debt"), ("b2", "debt")]
    # no templates configured (this composer renders no pages): the hosts use their own suspended page
    assert all("page_html" not in j.resource for j in world.fleet.jobs)


def test_unreachable_host_waits_while_other_hosts_finish(world: World) -> None:
    suspend_day(world)
    world.fleet.fail_host("mail1", error="mail1: connection refused")
    world.run(8)
    assert world.state("b2") == "suspended"
    assert world.state("a1") == "debtor"  # not every host applied it: the state is not written
    [mail_job] = world.jobs(host="mail1")
    assert (mail_job.status, mail_job.attempts) == ("pending", 0)  # an unreachable host is not an attempt
    assert mail_job.next_attempt_at == day(8) + timedelta(seconds=60)
    assert "connection refused" in (mail_job.last_error or "")
    # no suspension notice before the suspension took effect
    assert [n.rendered.subject for n in world.notifier.sent if n.to == "a1@example.net"][-1] == "pre_suspension"
    # still unreachable later: it keeps waiting, with a growing back-off, never given up; more tries than
    # max_attempts leave it pending with no attempt counted
    waits = []
    for _ in range(SETTINGS.max_attempts + 5):
        at = mail_job.next_attempt_at  # each run when the job is due again
        world.run((at - DAY0) / timedelta(days=1))
        [mail_job] = world.jobs(host="mail1")
        waits.append(mail_job.next_attempt_at - at)
    assert (mail_job.status, mail_job.attempts) == ("pending", 0)
    assert waits == sorted(waits) and waits[-1] == timedelta(seconds=SETTINGS.backoff_max_seconds)
    world.fleet.heal_host("mail1")
    _, x = world.run(9)
    assert world.state("a1") == "suspended"
    assert [t["stage"] for t in x.taken if t["account"] == "a1"] == ["suspension"]
    with world.store.session() as s:
        st = s.scalar(select(m.StageTaken).where(m.StageTaken.account == "a1", m.StageTaken.stage == "suspension"))
        assert st is not None and st.at == day(9)  # taken when the last host applied it


def test_a_crash_between_claim_and_finish_is_recovered(world: World) -> None:
    suspend_day(world)
    with world.store.sessions() as s:
        tick(s, world.policy, day(8), SETTINGS)
        claimed = _claim(s, day(8), "dead-worker")  # ... and the process dies here
    assert {j.status for j in claimed} == {"claimed"}
    # a run within the lease leaves them alone (their worker may still be alive)
    world.run(8)
    assert world.state("a1") == "debtor"
    assert world.fleet.jobs == []
    # after the lease they are taken over and applied
    _, x = world.run(8.01)
    assert x.reclaimed == 3
    assert world.state("a1") == "suspended" and world.state("b2") == "suspended"


def test_a_sent_notice_is_never_sent_again(world: World) -> None:
    world.run(0)
    assert len(world.notifier.sent) == 2
    # the job runs again (a crash after sending, before the job was marked done)
    with world.store.session() as s:
        for j in s.scalars(select(m.Job).where(m.Job.kind == "notice")):
            j.status = "pending"
    world.run(1)
    assert len(world.notifier.sent) == 2


def test_a_failed_send_releases_the_claim_and_retries(world: World) -> None:
    world.notifier.fail = SendResult(ok=False, permanent=False, error="421 try later")
    world.run(0)
    with world.store.session() as s:
        rows = list(s.scalars(select(m.Notice)))
        assert {(n.status, n.error) for n in rows} == {("failed", "421 try later")}
        stage = s.scalar(select(m.StageTaken.status).where(m.StageTaken.account == "a1"))
        assert stage == "in_flight"  # not taken until the mail server accepted it
    world.notifier.fail = None
    world.run(1)
    assert sorted(n.to for n in world.notifier.sent) == ["a1@example.net", "b2@example.net"]
    with world.store.session() as s:
        assert {n.status for n in s.scalars(select(m.Notice))} == {"sent"}
        st = s.scalar(select(m.StageTaken).where(m.StageTaken.account == "a1"))
        assert st is not None and (st.status, st.at) == ("taken", day(1))


def _stage(w: World, account: str, stage: str) -> tuple[str, datetime | None]:
    with w.store.session() as s:
        st = s.scalar(select(m.StageTaken).where(m.StageTaken.account == account, m.StageTaken.stage == stage))
        assert st is not None
        return st.status, st.at


def test_a_permanent_failure_is_recorded_and_the_next_stage_goes_ahead_on_its_day(world: World) -> None:
    world.notifier.fail = SendResult(ok=False, permanent=True, error="550 no such user")
    world.run(0)
    world.notifier.fail = None
    [job] = world.jobs(account="a1", kind="notice")
    assert (job.status, job.last_error) == ("failed", "550 no such user")
    assert _stage(world, "a1", "outstanding_notice") == ("undelivered", day(0))
    world.run(4)
    assert world.notifier.sent == []  # the pre-suspension counts 5 days from the notice that failed
    world.run(5)
    assert [(n.to, n.rendered.subject) for n in world.notifier.sent] == [
        ("a1@example.net", "pre_suspension"), ("b2@example.net", "pre_suspension")]


def test_a_permanent_failure_holds_the_next_stages_when_told_to(world: World) -> None:
    world.policy = load_policy(POLICY.replace("{resume}", "true") + "  proceed_after_failed_notice: false\n",
                               "policy.yaml")
    world.notifier.fail = SendResult(ok=False, permanent=True, error="550 no such user")
    world.run(0)
    world.notifier.fail = None
    world.run(6)
    assert world.notifier.sent == []  # the pre-suspension waits: the notice before it was never delivered
    assert _stage(world, "a1", "outstanding_notice") == ("undelivered", day(0))


def test_a_transient_failure_is_retried_with_back_off_and_never_fails_for_good(world: World) -> None:
    world.notifier.fail = SendResult(ok=False, permanent=False, error="451 try again later")
    for minutes in (0, 1, 3):
        world.run(minutes / 1440)
    [job] = world.jobs(account="a1", kind="notice")
    assert job.status == "pending" and job.attempts == 3 and job.last_error == "451 try again later"
    assert _stage(world, "a1", "outstanding_notice")[0] == "in_flight"
    world.notifier.fail = None
    world.run(1)
    assert [n.rendered.subject for n in world.notifier.sent if n.to == "a1@example.net"] == ["outstanding_notice"]
    assert _stage(world, "a1", "outstanding_notice") == ("taken", day(1))


def test_payment_resumes_with_the_saved_facts(world: World, tmp_path: Path) -> None:
    suspend_day(world)
    world.fleet.set_facts("web1", "web", "a1", vhost="/etc/nginx/sites-enabled/a1.conf")
    world.run(8)
    (tmp_path / "p.jsonl").write_text(json.dumps({"account": "a1", "at": day(9).isoformat(), "amount": "10",
                                                  "method": "card", "ref": "p"}) + "\n")
    with world.store.session() as s:
        import_ledger(s, tmp_path / "p.jsonl", day(9))
    t, _ = world.run(9)
    assert t.resumes == ["a1"]
    assert world.state("a1") == "active"
    resumed = [j for j in world.fleet.jobs if j.action == "resume"]
    assert sorted((j.service, j.host) for j in resumed) == [("mail", "mail1"), ("web", "web1")]
    web = next(j for j in resumed if j.service == "web")
    assert web.state.get("vhost") == "/etc/nginx/sites-enabled/a1.conf"
    assert world.fleet.state("web1", "web", "a1") == "active"
    with world.store.session() as s:
        assert [h.released_at for h in s.scalars(select(m.Hold).where(m.Hold.account == "a1"))] \
            == [day(9)]


def test_tick_reads_only_due_accounts_and_sets_the_next_check(world: World) -> None:
    t, _ = world.run(0)
    assert t.accounts == 2
    t, _ = world.run(1)
    assert t.accounts == 2  # stages were taken at day 0: looked at again once
    t, _ = world.run(2)
    assert t.accounts == 0  # nothing due before the pre-suspension notice
    with world.store.session() as s:
        assert s.scalar(select(m.Account.next_check_at).where(m.Account.id == "a1")) == \
            datetime(2026, 3, 6, 23, tzinfo=UTC)


@pytest.mark.parametrize("changed_at_the_same_instant", [False, True])
def test_a_payment_recorded_during_the_tick_is_not_overwritten(world: World, monkeypatch: pytest.MonkeyPatch,
                                                                changed_at_the_same_instant: bool) -> None:
    import agent.tick
    from agent.imports import touch

    suspend_day(world)
    if changed_at_the_same_instant:  # an earlier change carries the tick's own clock already (same --at)
        with world.store.session() as s:
            acc = s.get(m.Account, "a1")
            assert acc is not None
            touch(acc, day(8))
    original = agent.tick.evaluate_chunks
    # PostgreSQL: the tick holds its chunk's accounts (FOR UPDATE) until the chunk is recorded, so billing's
    # write, from another connection, waits for that commit; SQLite lets it in, and the tick finds it stale
    locked = world.store.engine.dialect.name == "postgresql"
    billing: list[threading.Thread] = []

    def pay() -> None:
        with world.store.session() as other:  # billing records a card payment meanwhile
            acc = other.get(m.Account, "a1")
            assert acc is not None
            other.add(m.LedgerEntry(account="a1", at=day(8), amount=Decimal(10), kind="payment", method="card",
                                    ref="racing"))
            touch(acc, day(8))

    def racing(session, policy, now, **kw):  # type: ignore[no-untyped-def]
        items = list(original(session, policy, now, **kw))
        if locked:
            billing.append(threading.Thread(target=pay))
            billing[-1].start()
        else:
            pay()
        yield from items

    monkeypatch.setattr(agent.tick, "evaluate_chunks", racing)
    t, _ = world.run(8)
    for thread in billing:
        thread.join(timeout=60)
        assert not thread.is_alive()
    if locked:  # the decision came first and was carried out; the payment, kept, resumes a1 on the next run
        assert t.stale == 0
        assert world.state("b2") == "suspended"
        monkeypatch.undo()
        world.run(8)
        assert world.state("a1") == "active"
        assert len(world.fleet.applied(account="a1", action="resume")) == len(
            world.fleet.applied(account="a1", action="suspend")) > 0
        return
    assert t.stale == 1
    assert world.state("a1") == "debtor"  # the stale "suspend" decision was not recorded
    assert world.state("b2") == "suspended"
    monkeypatch.undo()
    world.run(8)
    assert world.state("a1") == "active"
    assert world.fleet.applied(account="a1", action="suspend") == []


def test_transient_failures_are_retried_within_the_run(world: World) -> None:
    suspend_day(world)
    world.fleet.fail_job("a1:1:suspension:mail:mail1", "connection reset", transient=True, times=1)
    with world.store.sessions() as s:
        tick(s, world.policy, day(8), SETTINGS)
        x = execute(s, world.fleet, world.notifier, day(8), composer=FakeComposer(), settings=SETTINGS,
                    transient_tries=3, transient_wait=0.01)
    assert [len(b) for b in world.fleet.batches[-2:]] == [3, 1]  # only the failed job went again
    assert x.retrying == 0
    assert world.state("a1") == "suspended"


def test_a_crash_in_the_middle_of_a_batch_sends_again_only_the_notice_in_flight(world: World) -> None:
    world.notifier.crash_after = 1  # the first notice is accepted, the agent dies while the second is in flight
    with pytest.raises(Crash):
        world.run(0)
    first, second = world.notifier.sent
    with world.store.session() as s:
        rows = {n.key: n.status for n in s.scalars(select(m.Notice))}
        jobs = {j.key: j.status for j in s.scalars(select(m.Job).where(m.Job.kind == "notice"))}
    assert rows == {first.key: "sent", second.key: "claimed"}  # recorded the moment it was accepted
    assert jobs == {first.key: "claimed", second.key: "claimed"}  # the jobs are recorded with their chunk
    world.notifier.crash_after = None
    _, x = world.run(0, sole_worker=True)  # the next run takes the dead run's claims over at once
    assert x.notices_sent == 1
    assert [n.key for n in world.notifier.sent] == [first.key, second.key, second.key]
    assert world.notifier.sent[2].message_id == second.message_id  # the receiving side can tell
    with world.store.session() as s:
        assert {n.status for n in s.scalars(select(m.Notice))} == {"sent"}
        assert {j.status for j in s.scalars(select(m.Job).where(m.Job.kind == "notice"))} == {"done"}
    world.run(1, sole_worker=True)
    assert len(world.notifier.sent) == 3


# --- the suspended page --------------------------------------------------------------------------

NOTICES = NoticeSettings(from_addr="billing@hosting.example", company="Example Hosting",
                         payment_url="https://pay.hosting.example/account/{account_id}",
                         support_email="help@hosting.example", spool_dir=Path("unused-spool"))


class CountingComposer(TemplateComposer):
    def __init__(self, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kw)
        self.pages: list[str] = []

    def page(self, session, account, job, now):  # type: ignore[no-untyped-def]
        self.pages.append(account.id)
        return super().page(session, account, job, now)


def test_web_suspend_jobs_carry_the_suspended_page_rendered_for_the_account(world: World) -> None:
    composer = CountingComposer(Templates.load(None), NOTICES, world.policy)
    world.composer = composer
    suspend_day(world)
    world.fleet.fail_job("a1:1:suspension:web:web1", "connection reset", transient=True, times=1)
    world.run(8)
    assert sorted(composer.pages) == ["a1", "b2"]  # once per account in the run
    world.run(8.5)  # a1's web job again, in a later run
    assert sorted(composer.pages) == ["a1", "a1", "b2"]
    assert world.state("a1") == "suspended" and world.state("b2") == "suspended"
    for account in ("a1", "b2"):
        jobs = world.fleet.applied(account=account, action="suspend", service="web")
        assert jobs
        for job in jobs:
            page = job.resource["page_html"]
            assert page.startswith("<!DOCTYPE html>")
            assert f'<a href="https://pay.hosting.example/account/{account}">' in page
            assert "Example Hosting" in page and "mailto:help@hosting.example" in page
            other = "b2" if account == "a1" else "a1"
            assert f"/account/{other}" not in page
    assert [j.resource.get("page_html") for j in world.fleet.applied(service="mail")] == [None]
    # the suspension notices went out as well, rendered by the same composer
    suspension = {n.to: n.rendered.text for n in world.notifier.sent if n.key.endswith(":suspension")}
    assert sorted(suspension) == ["a1@example.net", "b2@example.net"]
    assert "https://pay.hosting.example/account/a1" in suspension["a1@example.net"]


class BrokenPages:
    def page(self, session, account, job, now):  # type: ignore[no-untyped-def]
        raise RuntimeError("template exploded")


def test_a_page_that_cannot_be_rendered_does_not_hold_the_suspension_up(world: World) -> None:
    suspend_day(world)
    _, x = world.run(8, pages=BrokenPages())
    assert x.errors == []
    assert world.state("a1") == "suspended" and world.state("b2") == "suspended"
    web = world.fleet.applied(action="suspend", service="web")
    assert len(web) == 2 and all("page_html" not in j.resource for j in web)


# --- chunks over SMTP ----------------------------------------------------------------------------


def _debtors(store: Store, policy: PolicySet, folder: Path, ids: list[str]) -> None:
    """Accounts ``ids``, each with a billing address and a charge of 10 at day 0."""
    (folder / "a.jsonl").write_text("".join(json.dumps({"id": a, "billing_email": f"{a}@example.net"}) + "\n"
                                            for a in ids))
    (folder / "l.jsonl").write_text("".join(json.dumps({"account": a, "at": day(0).isoformat(),
                                                        "amount": "-10", "ref": "c"}) + "\n" for a in ids))
    with store.session() as s:
        import_accounts(s, folder / "a.jsonl", DAY0, policy)
        import_ledger(s, folder / "l.jsonl", DAY0)


@pytest.mark.parametrize(("chunk", "connections"), [(500, 1), (2, 3)])
def test_one_smtp_connection_carries_a_whole_chunk(store: Store, policy: PolicySet, tmp_path: Path,
                                                   smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch,
                                                   chunk: int, connections: int) -> None:
    """Five due notices go out over one connection per chunk: all five in one chunk over one connection,
    in chunks of two over three; every notice once, each with its own Message-ID, each recorded sent."""
    import agent.executor

    smtp_server.reset()
    monkeypatch.setattr(agent.executor, "NOTICE_CHUNK", chunk)
    ids = [f"c{n}" for n in range(5)]
    _debtors(store, policy, tmp_path, ids)
    settings = NoticeSettings(from_addr="billing@hosting.example", company="Example Hosting",
                              payment_url="https://pay.hosting.example/{account_id}",
                              smtp={"host": smtp_server.host, "port": smtp_server.port})
    world = World(store, policy, FakeFleet(), FakeNotifier(),
                  composer=TemplateComposer(Templates.load(None), settings, policy))
    world.notifier = SmtpNotifier(settings, clock=lambda: DAY0)  # type: ignore[assignment]
    _, x = world.run(0)
    assert x.notices_sent == 5 and x.errors == []
    received = smtp_server.wait_messages(5)
    assert smtp_server.connections == connections
    assert sorted(r.rcpt_tos[0] for r in received) == [f"{a}@example.net" for a in ids]
    assert len({r.message["Message-ID"] for r in received}) == 5
    with store.session() as s:
        assert {n.status for n in s.scalars(select(m.Notice))} == {"sent"}
        assert {j.status for j in s.scalars(select(m.Job).where(m.Job.kind == "notice"))} == {"done"}


def test_one_run_sends_every_due_notice_however_many_claims_it_takes(store: Store, policy: PolicySet,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve due notices (and their events) and a claim that takes three jobs at a time: one run still
    sends all twelve, each once, and finishes every transition (the rounds a full claim leaves work
    behind do not count against ``max_rounds``)."""
    import agent.claims

    monkeypatch.setattr(agent.claims, "CLAIM_LIMIT", 3)
    ids = [f"d{n:02d}" for n in range(12)]
    _debtors(store, policy, tmp_path, ids)
    world = World(store, policy, FakeFleet(), FakeNotifier())
    _, x = world.run(0, max_rounds=2)
    assert sorted(n.to for n in world.notifier.sent) == [f"{a}@example.net" for a in ids]
    assert x.errors == []
    with store.session() as s:
        assert {j.status for j in s.scalars(select(m.Job))} == {"done"}
        assert {st.status for st in s.scalars(select(m.StageTaken))} == {"taken"}
