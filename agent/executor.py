"""The executor: drains the outbox the tick wrote.

1. Jobs claimed longer ago than the lease (their worker died) become pending again.
2. Due pending jobs are claimed (``claimed`` with the worker and the time) in one transaction.
3. Host jobs go to the fleet in one ``apply`` call (one batch per host, hosts in parallel). Jobs
   whose host was unreachable or whose connection was lost are retried inside the run with tenacity,
   then on later ticks with a durable back-off (``next_attempt_at``); such a failure is not counted
   as an attempt, so it never brings a job closer to ``max_attempts``. Facts the connectors return
   are saved on the placement.
4. Notices: the notice row (unique per account, episode and stage) is claimed before sending and
   marked ``sent`` (with its job done, in a transaction of its own) as soon as the mail server
   accepted that message, before the next message of the batch goes out; a failed send releases
   the claim. A notice whose row is ``sent`` is never sent again, so a crash in the middle of a
   batch can send again only the one message that was in flight: over SMTP it may arrive twice (same
   Message-ID); into the spool it cannot (an existing file is not written again). A notice the mail
   server refused for good (5xx, or no usable address) is recorded as failed for good: its notice
   stage becomes ``undelivered`` (the evaluator decides what follows) and, when
   ``notices.staff_email`` is set, one message about it goes to staff in the same transaction.
5. A transition whose jobs are all done is recorded as TAKEN at that moment (the next stage counts
   from it); only then are the hold and the account's state written (state last). A suspension's
   or deletion's own notice is queued at that point, after the hosts applied it.
Rounds repeat while the finished transitions queued new work that is due (at most ``max_rounds`` of them), and
while a claim took all it may take at once (:data:`agent.claims.CLAIM_LIMIT`): a run drains what is due.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from sqlalchemy import Table, bindparam, case, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key
from tenacity import RetryError, Retrying, retry_if_result, stop_after_attempt, wait_exponential

from agent import claims as claims_module
from agent import transitions
from agent.actions import finish_manual
from agent.claims import Claimed, Claims
from agent.config import AgentSettings
from agent.outbox import staff_notice_job
from agent.store import models as m
from agent.store.bulk import execute_many, write_rows
from agent.store.repo import audit, load_snapshots
from agent.tick import resolve_for
from agent.transitions import ACTOR
from connectors.fleet import Fleet, Job, JobResult, Progress
from policy.model import AccountSnapshot, StageTaken

if TYPE_CHECKING:
    from agent.notices import NoticeSettings, Notifier, OutgoingNotice, SendResult, Templates
    from policy.loader import PolicySet

__all__ = ["EventSink", "ExecSummary", "NoticeComposer", "PageComposer", "StaffAddress", "TemplateComposer",
           "event_sink", "execute", "jobs_by_host"]

log = logging.getLogger("arrears.executor")


class NoticeComposer(Protocol):
    """Turns a notice job into the message to send (recipient, Message-ID, rendered text)."""

    def compose(self, session: Session, account: m.Account, job: Claimed, now: datetime) -> OutgoingNotice: ...


EventSink = Callable[[Claimed, m.Account], dict[str, Any]]  # runs a hook; raises on failure


@runtime_checkable
class StaffAddress(Protocol):
    """A composer that also writes the message telling staff about a notice that failed for good
    (a notice job whose payload has ``staff``); ``staff_email`` None: staff are not told."""

    @property
    def staff_email(self) -> str | None: ...


def as_taken(snap: AccountSnapshot, stage: str, now: datetime) -> AccountSnapshot:
    """The snapshot as it will be once ``stage`` (in flight while its notice is composed) is taken at
    ``now``: what the notice says comes next, and when, is counted from this stage."""
    episode = snap.episode
    if episode is None or stage not in snap.in_flight:
        return snap
    taken = (*episode.stages_taken, StageTaken(stage, now))
    return replace(snap, in_flight=tuple(s for s in snap.in_flight if s != stage),
                   episode=replace(episode, stages_taken=taken))


@runtime_checkable
class BatchComposer(Protocol):
    """A composer that reads what a chunk's notices need at once (:meth:`TemplateComposer.batch`)."""

    def batch(self, session: Session,
              items: Sequence[tuple[m.Account, Claimed]]) -> contextlib.AbstractContextManager[None]: ...


@runtime_checkable
class PageComposer(Protocol):
    """Renders the suspended page for one account (web ``suspend`` and ``restore`` jobs carry it as
    ``page_html``; a web host in page mode serves it as that account's own page)."""

    def page(self, session: Session, account: m.Account, job: Claimed, now: datetime) -> str: ...


class TemplateComposer:
    """Renders notice templates, and the suspended page, with the account's variables (``agent.notices``)."""

    def __init__(self, templates: Templates, settings: NoticeSettings, policy: PolicySet) -> None:
        self.templates = templates
        self.settings = settings
        self.policy = policy
        self._domain = settings.message_domain  # parsed out of from_addr once, not per notice
        self._facts: dict[str, _Facts] = {}

    @contextlib.contextmanager
    def batch(self, session: Session, items: Sequence[tuple[m.Account, Claimed]]) -> Iterator[None]:
        """While inside, :meth:`compose` reads what ``items``' notices say from facts loaded for all of
        them at once (a handful of queries for the whole chunk instead of about ten per notice)."""
        self._facts = self._load_facts(session, items)
        try:
            yield
        finally:
            self._facts = {}

    @staticmethod
    def _load_facts(session: Session, items: Sequence[tuple[m.Account, Claimed]]) -> dict[str, _Facts]:
        """Each account's snapshot, the episodes its jobs belong to and when it was last suspended."""
        accounts = list({a.id: a for a, _ in items}.values())
        ids = [a.id for a in accounts]
        snaps = load_snapshots(session, accounts)
        wanted = sorted({j.episode for _, j in items if j.episode is not None})
        episodes: dict[int, datetime] = {eid: at for eid, at in session.execute(  # when each began
            select(m.Episode.id, m.Episode.started_at).where(m.Episode.id.in_(wanted)))} if wanted else {}
        suspended: dict[str, datetime | None] = {}
        for aid, at in session.execute(select(m.StageTaken.account, m.StageTaken.at).where(
                m.StageTaken.account.in_(ids), m.StageTaken.action == "suspend", m.StageTaken.status == "taken")
                .order_by(m.StageTaken.id)):
            suspended[aid] = at  # the latest wins
        by_admin: dict[str, datetime | None] = {}  # a manual suspension (agent.actions)
        for aid, at in session.execute(select(m.Job.account, m.Job.finished_at).where(
                m.Job.account.in_(ids), m.Job.kind == "manual", m.Job.action == "suspend", m.Job.status == "done")
                .order_by(m.Job.id)):
            by_admin[aid] = at
        out: dict[str, _Facts] = {}
        for aid in ids:
            last, admin = suspended.get(aid), by_admin.get(aid)
            if admin is not None and (last is None or admin > last):
                last = admin
            out[aid] = _Facts(snaps[aid], episodes, last)
        return out

    def context(self, session: Session, account: m.Account, job: Claimed, now: datetime, *,
                suspended_now: bool = False) -> dict[str, Any]:
        """Every template variable for ``account`` at ``now``, with ``job``'s stage counted as taken.
        ``suspended_now``: the account is being suspended at ``now`` (``suspended_at`` is today)."""
        from agent.notices import build_context
        from policy import balance_at, evaluate

        facts = self._facts.get(account.id) or self._load_facts(session, [(account, job)])[account.id]
        snap = as_taken(facts.snapshot, job.stage, now)
        resolved = resolve_for(self.policy, account)
        decision = evaluate(snap, resolved, now)
        debt_start = facts.episodes.get(job.episode) if job.episode is not None else None
        if debt_start is None and job.episode is not None:
            episode = session.get(m.Episode, job.episode)
            debt_start = episode.started_at if episode is not None else None
        suspended = now if suspended_now else facts.suspended_at
        fields = {"id": account.id, "username": account.username, "billing_email": account.billing_email,
                  "plan": account.plan, "currency": account.currency, "suspended_at": suspended}
        nxt = decision.next
        return build_context(
            account=fields, balance=balance_at(snap, now), credit_limit=resolved.credit_limit,
            debt_start=debt_start, now=now, stage=job.stage,
            next_measure=nxt, next_due=nxt.due_at if nxt is not None else None, settings=self.settings,
            timezone=resolved.timezone)

    @property
    def staff_email(self) -> str | None:
        return self.settings.staff_email

    def compose(self, session: Session, account: m.Account, job: Claimed, now: datetime) -> OutgoingNotice:
        from agent.notices import OutgoingNotice, message_id

        template = str(job.payload.get("template") or job.stage)
        if job.payload.get("staff"):
            return self._compose_staff(session, account, job, now, template)
        if not account.billing_email:
            raise _Permanent(f"account {account.id} has no billing address")
        context = self.context(session, account, job, now)
        rendered = self.templates.render(template, context)
        return OutgoingNotice(key=job.key, to=account.billing_email,
                              message_id=message_id(account.id, job.episode, job.stage, self._domain),
                              rendered=rendered, date=now)

    def _compose_staff(self, session: Session, account: m.Account, job: Claimed, now: datetime,
                       template: str) -> OutgoingNotice:
        """The message to staff about the notice ``job.payload["notice"]`` that failed for good: the
        account, the stage, the address it went to and the server's reply."""
        from agent.notices import OutgoingNotice, message_id

        if not self.settings.staff_email:
            raise _Permanent("notices.staff_email is not set")
        failed = session.scalar(select(m.Notice).where(m.Notice.key == str(job.payload.get("notice"))))
        if failed is None:
            raise _Permanent(f"no notice {job.payload.get('notice')!r} to report")
        context = self.context(session, account, job, now)
        context.update(billing_email=failed.to, failure=failed.error or "")
        return OutgoingNotice(key=job.key, to=self.settings.staff_email,
                              message_id=message_id(account.id, job.episode, job.stage, self._domain,
                                                    copy="staff"),
                              rendered=self.templates.render(template, context), date=now)

    def page(self, session: Session, account: m.Account, job: Claimed, now: datetime) -> str:
        from agent.notices import render_page

        context = self.context(session, account, job, now, suspended_now=job.action == "suspend")
        return render_page(self.templates, context)


@dataclass(frozen=True)
class _Facts:
    """What a notice says about an account beyond its row: read once per chunk."""

    snapshot: AccountSnapshot
    episodes: dict[int, datetime]  # the episodes of the chunk's jobs: when each began
    suspended_at: datetime | None


class _Permanent(Exception):
    """A notice that cannot be composed and never will be (no address, no such template)."""


@dataclass
class ExecSummary:
    claimed: int = 0
    done: int = 0
    retrying: int = 0
    failed: int = 0
    reclaimed: int = 0
    notices_sent: int = 0
    notices_failed: int = 0  # refused for good (5xx, no usable address): never retried
    taken: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "done": self.done, "retrying": self.retrying, "failed": self.failed,
                "reclaimed": self.reclaimed, "notices_sent": self.notices_sent,
                "notices_failed": self.notices_failed, "taken": self.taken, "errors": self.errors}


def _backoff(settings: AgentSettings, attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.backoff_seconds * 2 ** max(attempts - 1, 0), settings.backoff_max_seconds))


def execute(session: Session, fleet: Fleet | None, notifier: Notifier | None, now: datetime, *,
            composer: NoticeComposer | None = None, settings: AgentSettings | None = None,
            events: EventSink | None = None, worker: str | None = None, progress: Progress | None = None,
            transient_tries: int = 3, transient_wait: float = 0.5, max_rounds: int = 6,
            sole_worker: bool = False, stop: threading.Event | None = None,
            pages: PageComposer | None = None, claims: Claims | None = None) -> ExecSummary:
    """Drain the outbox at ``now``. ``session`` must not be inside a transaction block (this commits).

    ``sole_worker``: the caller holds the database's instance lock, so every job still claimed belongs
    to a run that died and is taken over at once (and so is a notice whose sending it claimed);
    otherwise only after its lease.
    ``stop``: once set (the daemon got SIGTERM), the round in flight finishes its host batches, notices
    and transitions, and nothing new is claimed; what is left stays pending for the next run.
    ``pages``: renders the suspended page each web ``suspend`` (and ``restore``) job carries as
    ``page_html``, once per account per run; default: the composer when it renders pages too
    (:class:`TemplateComposer`), so only when notices are configured.
    ``claims``: how this agent claims work beside others (:mod:`agent.claims`); default: as ``worker``,
    unregistered.
    """
    settings = settings or AgentSettings()
    if pages is None and isinstance(composer, PageComposer):
        pages = composer
    rendered: dict[str, str | None] = {}  # account -> its page, rendered once per run
    worker = worker or f"run-{uuid.uuid4().hex[:12]}"
    summary = ExecSummary()
    claims = claims or Claims(worker, settings, sole=sole_worker)
    summary.reclaimed = claims.reclaim(session, now)
    rounds = 0
    while rounds < max_rounds:
        if stop is not None and stop.is_set():
            break
        claimed, full = _round(session, fleet, notifier, composer, events, pages, rendered, now, claims, settings,
                               summary, progress, transient_tries, transient_wait)
        queued = _finish_transitions(session, now, summary)
        queued += finish_manual(session, now, summary.taken)
        if not claimed and not queued:
            break
        if not full:  # a claim cut at CLAIM_LIMIT left due work behind: that round does not count
            rounds += 1
    return summary


def _round(session: Session, fleet: Fleet | None, notifier: Notifier | None, composer: NoticeComposer | None,
           events: EventSink | None, pages: PageComposer | None, rendered: dict[str, str | None], now: datetime,
           claims: Claims, settings: AgentSettings, summary: ExecSummary, progress: Progress | None,
           transient_tries: int, transient_wait: float) -> tuple[int, bool]:
    """One round: claim what is due and run it; returns how many jobs it claimed, and whether the claim
    took as many notices and events as one claim takes (:data:`agent.claims.CLAIM_LIMIT`: more are due).
    The round's job rows are let go when it returns, so that the next round's claims have no stale rows
    to bring up to date."""
    claimed = claims.claim(session, now)
    summary.claimed += len(claimed)
    if claimed:
        host_jobs = [j for j in claimed if j.kind == "host"]
        if pages is not None:
            _render_pages(session, pages, host_jobs, now, rendered)
        _run_host_jobs(session, fleet, host_jobs, now, settings, summary, progress, transient_tries,
                       transient_wait, rendered)
        claims.release(session)  # the hosts' batches are over
        _run_notices(session, notifier, composer, [j for j in claimed if j.kind == "notice"], now, settings,
                     summary, sole_worker=claims.exclusive)
        _run_events(session, events, [j for j in claimed if j.kind == "event"], now, settings, summary)
    hostless = sum(1 for j in claimed if j.kind != "host" or not j.host)
    return len(claimed), hostless >= claims_module.CLAIM_LIMIT


# --- claiming ------------------------------------------------------------------------------------


def _claim(session: Session, now: datetime, worker: str) -> list[Claimed]:
    return Claims(worker, AgentSettings()).claim(session, now)


def _fail(job: Claimed, error: str, now: datetime, settings: AgentSettings, summary: ExecSummary, *,
          transient: bool, permanent: bool = False, counted: bool = True) -> None:
    """A failed try. ``counted=False`` (a host that could not be reached, a connection lost during the
    batch): the try is not counted in ``attempts``, so it never brings the job closer to
    ``max_attempts``, and the job waits about as long as it has waited so far (its back-off still
    doubles, between ``backoff_seconds`` and ``backoff_max_seconds``)."""
    job.dirty = True
    if counted:
        job.attempts += 1
    job.last_error = error
    job.claimed_by = None
    if permanent or (not transient and job.attempts >= settings.max_attempts):
        job.status = "failed"
        job.finished_at = now
        summary.failed += 1
    else:
        job.status = "pending"
        if counted:
            delay = _backoff(settings, job.attempts)
        else:
            waited = (now - job.created_at).total_seconds()
            delay = timedelta(seconds=min(max(waited, settings.backoff_seconds), settings.backoff_max_seconds))
        job.next_attempt_at = now + delay
        summary.retrying += 1
    summary.errors.append(f"{job.key}: {error}")


def _done(job: Claimed, now: datetime, summary: ExecSummary, result: dict[str, Any] | None = None) -> None:
    job.dirty = True
    job.status = "done"
    job.finished_at = now
    job.last_error = None
    job.result = result
    job.attempts += 1
    summary.done += 1


def _done_all(session: Session, done: Sequence[tuple[Claimed, dict[str, Any] | None]], now: datetime,
              summary: ExecSummary) -> None:
    """:func:`_done` for many jobs (each with its result) in one statement; the rows in the session are
    brought up to date without being flushed again."""
    if not done:
        return
    attempts = [j.attempts + 1 for j, _ in done]
    execute_many(session, update(JOBS).where(JOBS.c.id == bindparam("b_id")).values(
        status="done", finished_at=now, last_error=None, result=bindparam("b_result"),
        attempts=bindparam("b_attempts")),
        [{"b_id": j.id, "b_result": result, "b_attempts": n} for (j, result), n in zip(done, attempts, strict=True)])
    for (j, result), n in zip(done, attempts, strict=True):
        j.status, j.finished_at, j.last_error, j.result, j.attempts = "done", now, None, result, n
    summary.done += len(done)


JOBS = cast(Table, m.Job.__table__)
_SAVED = ("status", "attempts", "next_attempt_at", "claimed_by", "last_error", "result", "finished_at")


def _save(session: Session, jobs: Sequence[Claimed]) -> None:
    """Write what :func:`_fail` and :func:`_done` changed in ``jobs`` (those changed only) with one statement."""
    rows = [{"b_id": j.id, **{f"b_{c}": getattr(j, c) for c in _SAVED}} for j in jobs if j.dirty]
    execute_many(session, update(JOBS).where(JOBS.c.id == bindparam("b_id"))
                 .values({c: bindparam(f"b_{c}") for c in _SAVED}), rows)
    for j in jobs:
        j.dirty = False



# --- host jobs -----------------------------------------------------------------------------------


def jobs_by_host(jobs: Sequence[Claimed]) -> dict[str, list[Claimed]]:
    out: dict[str, list[Claimed]] = {}
    for j in jobs:
        out.setdefault(j.host or "", []).append(j)
    return out


def _flat_state(state: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for part in ("suspend", "delete"):
        for k, v in (state.get(part) or {}).items():
            flat[str(k)] = str(v)
    return flat


_PAGE_ACTIONS = ("suspend", "restore")  # the web jobs that leave a site suspended


def _render_pages(session: Session, pages: PageComposer, jobs: Sequence[Claimed], now: datetime,
                  rendered: dict[str, str | None]) -> None:
    """The suspended page of every account with a web job in ``jobs`` that suspends a site, unless
    rendered already in this run; what the pages say is read for all of them at once when ``pages`` can
    (:class:`BatchComposer`). A page that cannot be rendered is left out (the host then serves its
    generic page): a suspension never waits for a page."""
    wanted: dict[str, Claimed] = {}
    for j in jobs:
        if j.service == "web" and j.action in _PAGE_ACTIONS and j.account not in rendered:
            wanted.setdefault(j.account, j)
    if not wanted:
        return
    accounts = _accounts(session, set(wanted))
    items = [(accounts[a], j) for a, j in wanted.items() if a in accounts]
    scope = pages.batch(session, items) if isinstance(pages, BatchComposer) else contextlib.nullcontext()
    with scope:
        for acc, j in items:
            try:
                rendered[j.account] = pages.page(session, acc, j, now)
            except Exception as exc:
                log.warning("suspended page of account %s not rendered (the host's generic page is used): %s",
                            j.account, exc)
                rendered[j.account] = None


def _run_host_jobs(session: Session, fleet: Fleet | None, jobs: list[Claimed], now: datetime, settings: AgentSettings,
                   summary: ExecSummary, progress: Progress | None, tries: int, wait: float,
                   pages: dict[str, str | None] | None = None) -> None:
    if not jobs:
        return
    placements: dict[tuple[str, str, str], m.Placement] = {}
    for row in session.scalars(select(m.Placement).where(m.Placement.account.in_({j.account for j in jobs}))):
        placements[(row.account, row.service, row.host)] = row
    work: dict[str, Job] = {}
    for j in jobs:
        p = placements.get((j.account, j.service or "", j.host or ""))
        if p is None:
            _fail(j, f"the account no longer has {j.service} on {j.host}", now, settings, summary,
                  transient=False, permanent=True)
            continue
        resource = {**p.resource, "host": p.host}
        page = (pages or {}).get(j.account) if p.service == "web" and j.action in _PAGE_ACTIONS else None
        if page:
            resource["page_html"] = page  # served in page mode, ignored in redirect mode
        work[j.key] = Job(key=j.key, account=j.account, action=j.action, service=p.service,  # type: ignore[arg-type]
                          host=p.host, resource=resource, state=_flat_state(p.state))
    if fleet is None and work:
        for j in jobs:
            if j.key in work:
                _fail(j, "no fleet configured (inventory.yaml missing)", now, settings, summary, transient=True)
        _save(session, jobs)
        session.commit()
        return
    results: dict[str, JobResult] = {}
    pending = dict(work)

    def attempt() -> dict[str, JobResult]:
        assert fleet is not None
        try:
            got = fleet.apply(list(pending.values()), progress=progress)
        except Exception as exc:
            got = {k: JobResult(key=k, host=job.host, ok=False, error=f"fleet error: {exc}", transient=True)
                   for k, job in pending.items()}
        for k, r in got.items():
            results[k] = r
        for k in [k for k, r in got.items() if r.ok or not r.transient]:
            pending.pop(k, None)
        missing = [k for k in pending if k not in got]
        for k in missing:
            results[k] = JobResult(key=k, host=pending[k].host, ok=False, error="no result from the fleet",
                                   transient=True)
        return {k: results[k] for k in pending}

    with contextlib.suppress(RetryError):
        Retrying(stop=stop_after_attempt(max(1, tries)), wait=wait_exponential(multiplier=wait, max=10),
                 retry=retry_if_result(bool))(attempt)
    for j in jobs:
        if j.key not in work:
            continue
        r = results.get(j.key)
        if r is None:
            _fail(j, "no result from the fleet", now, settings, summary, transient=True)
            continue
        detail = {"host": r.host, "changed": r.changed, "facts": dict(r.facts), "operations": list(r.operations)}
        if r.ok:
            p = placements[(j.account, j.service or "", j.host or "")]
            state = dict(p.state or {})
            if j.action in ("suspend", "delete"):
                state[j.action] = {**(state.get(j.action) or {}), **r.facts}
            elif j.action == "resume":
                state.pop("suspend", None)
            p.state = state
            _done(j, now, summary, detail)
        else:
            j.result = detail
            _fail(j, r.error or "failed", now, settings, summary, transient=r.transient, counted=not r.transient)
    _save(session, jobs)
    session.commit()


# --- notices -------------------------------------------------------------------------------------


NOTICE_CHUNK = 500  # notices composed, sent over one connection (or fsynced together) and recorded at once


def _run_notices(session: Session, notifier: Notifier | None, composer: NoticeComposer | None, jobs: list[Claimed],
                 now: datetime, settings: AgentSettings, summary: ExecSummary, *, sole_worker: bool = False) -> None:
    for i in range(0, len(jobs), NOTICE_CHUNK):
        _notice_chunk(session, notifier, composer, jobs[i:i + NOTICE_CHUNK], now, settings, summary,
                      sole_worker=sole_worker)


def _notice_chunk(session: Session, notifier: Notifier | None, composer: NoticeComposer | None, jobs: list[Claimed],
                  now: datetime, settings: AgentSettings, summary: ExecSummary, *, sole_worker: bool) -> None:
    """One chunk: its notice rows, accounts and facts read at once; the chunk's claims written with one
    statement (one commit); the chunk sent in one ``notifier.send`` (one SMTP connection); each accepted
    message recorded as sent in its own tiny commit the moment the server accepted it (so a crash can
    send again only the message in flight); then every job's result, and each failure, recorded with
    one statement per table in one commit."""
    lease = now - timedelta(seconds=settings.lease_seconds)
    staff = composer.staff_email if isinstance(composer, StaffAddress) else None
    rows = {r.key: r for r in _chunked_rows(session, select(NOTICES.c.key, NOTICES.c.status, NOTICES.c.claimed_at,
                                                                   NOTICES.c.message_id),
                                                NOTICES.c.key, [j.key for j in jobs])}
    accounts = _accounts(session, {j.account for j in jobs})
    todo: list[Claimed] = []
    for j in jobs:
        row = rows.get(j.key)
        if row is not None and row.status == "sent":
            _done(j, now, summary, {"notice": "already sent", "message_id": row.message_id})
            continue
        if (not sole_worker and row is not None and row.status == "claimed" and row.claimed_at is not None
                and row.claimed_at > lease):
            # another worker is sending it right now; look again later (the sole worker knows that the
            # worker which claimed it died while sending: it sends it now, with the same Message-ID)
            j.status, j.claimed_by, j.dirty = "pending", None, True
            j.next_attempt_at = now + timedelta(seconds=settings.backoff_seconds)
            continue
        if notifier is None or composer is None:
            _fail(j, "notices are not configured (policy.yaml notices: section)", now, settings, summary,
                  transient=True)
            continue
        todo.append(j)
    outgoing: list[OutgoingNotice] = []
    by_key: dict[str, Claimed] = {}
    claims = _NoticeRows(rows)
    failed_for_good: list[tuple[Claimed, str]] = []
    if todo and composer is not None:
        items = [(accounts[j.account], j) for j in todo]
        scope = composer.batch(session, items) if isinstance(composer, BatchComposer) else contextlib.nullcontext()
        with scope, session.no_autoflush:
            for acc, j in items:
                try:
                    out = composer.compose(session, acc, j, now)
                except Exception as exc:
                    error = str(exc)
                    claims.add(j, now, message_id="", to=acc.billing_email or "", subject=None, status="failed",
                               error=error, permanent=True)
                    _fail(j, error, now, settings, summary, transient=False, permanent=True)
                    failed_for_good.append((j, error))
                    continue
                claims.add(j, now, message_id=out.message_id, to=out.to, subject=out.rendered.subject,
                           status="claimed", error=None, permanent=False)
                outgoing.append(out)
                by_key[out.key] = j
    claims.write(session)
    for j, error in failed_for_good:
        _failed_for_good(session, j, accounts[j.account], error, now, staff, summary)
    _save(session, jobs)
    session.commit()  # the claims are durable before anything is sent
    if not outgoing or notifier is None:
        return
    from agent.notices import SendResult

    results: dict[str, SendResult] = {}
    mark_sent = (update(NOTICES).where(NOTICES.c.key == bindparam("k"))
                 .values(status="sent", sent_at=now, error=None))
    at_once = None if getattr(notifier, "resends_nothing", False) else _SentMarks(session, mark_sent)

    def on_result(out: OutgoingNotice, res: SendResult) -> None:
        """Runs between two messages: an accepted one is durable before the next goes out."""
        if out.key in by_key and out.key not in results:
            results[out.key] = res
            if res.ok and at_once is not None:
                at_once.sent(out.key)

    try:
        notifier.send(outgoing, on_result=on_result)
    except Exception as exc:
        session.rollback()
        broken = SendResult(ok=False, permanent=False, error=f"notifier error: {exc}")
        for out in outgoing:
            results.setdefault(out.key, broken)
    finally:
        if at_once is not None:
            at_once.close()
    sent: list[dict[str, Any]] = []
    unsent: list[dict[str, Any]] = []
    done: list[tuple[Claimed, dict[str, Any] | None]] = []
    for out in outgoing:  # the chunk's results, in one commit
        j = by_key[out.key]
        res = results.get(out.key) or SendResult(ok=False, error="not sent")
        if res.ok:
            sent.append({"k": out.key})
            done.append((j, {"message_id": out.message_id, "to": out.to}))
            summary.notices_sent += 1
        else:
            error = res.error or "not sent"
            unsent.append({"k": out.key, "b_error": error, "b_permanent": res.permanent})
            _fail(j, error, now, settings, summary, transient=not res.permanent, permanent=res.permanent)
            if res.permanent:
                _failed_for_good(session, j, accounts[j.account], error, now, staff, summary)
    _done_all(session, done, now, summary)
    execute_many(session, mark_sent, sent)
    if unsent:
        session.execute(update(NOTICES).where(NOTICES.c.key == bindparam("k"))
                        .values(status="failed", error=bindparam("b_error"), permanent=bindparam("b_permanent"),
                                claimed_at=None), unsent)
    _save(session, jobs)
    session.commit()


NOTICES = cast(Table, m.Notice.__table__)


def _chunked_rows(session: Session, stmt: Any, column: Any, values: Sequence[Any]) -> Iterator[Any]:
    """The rows of ``stmt`` whose ``column`` is one of ``values``, read 500 values at a time."""
    for i in range(0, len(values), 500):
        yield from session.execute(stmt.where(column.in_(values[i:i + 500])))


def _accounts(session: Session, ids: set[str], *, lock: bool = False) -> dict[str, m.Account]:
    """The accounts ``ids``, with one query per 500. ``lock``: locked for this transaction, skipping (and
    leaving out) those another agent holds (``FOR UPDATE SKIP LOCKED``; nothing on SQLite)."""
    wanted = sorted(ids)
    out: dict[str, m.Account] = {}
    for i in range(0, len(wanted), 500):
        query = select(m.Account).where(m.Account.id.in_(wanted[i:i + 500]))
        if lock:
            query = query.with_for_update(skip_locked=True)
        out.update((a.id, a) for a in session.scalars(query))
    return out


class _SentMarks:
    """Records one accepted message as sent in its own commit, the moment the server accepted it: the
    statement compiled once per chunk and run with a cursor of the session's own connection's driver,
    committed by the driver (no session commit, which looks at every object the session holds, and no
    SQLAlchemy statement execution per message). On SQLite (WAL, ``synchronous=NORMAL``) and PostgreSQL
    alike that commit is what keeps the in-flight window at one message."""

    def __init__(self, session: Session, stmt: Any) -> None:
        self.conn = session.connection()  # held for the whole send: one connection, no pool round trip
        dialect = self.conn.dialect
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in compiled.binds.items()}
        self.fixed: dict[str, Any] = {}
        for name, value in compiled.construct_params({"k": ""}).items():
            proc = processors.get(name)
            self.fixed[name] = proc(value) if proc is not None else value
        self.key = processors.get("k")
        self.order = list(compiled.positiontup or []) if dialect.positional else None
        dbapi = self.conn.connection.dbapi_connection
        assert dbapi is not None
        self.dbapi = dbapi
        self.cursor = dbapi.cursor()

    def sent(self, key: str) -> None:
        params = dict(self.fixed, k=self.key(key) if self.key is not None else key)
        self.cursor.execute(self.sql, tuple(params[n] for n in self.order) if self.order is not None else params)
        self.dbapi.commit()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the connection may be gone with the error that ended the send
            self.cursor.close()


class _NoticeRows:
    """A chunk's notice rows as they are claimed (or fail to compose): the new ones inserted and the
    stored ones updated, one statement each."""

    def __init__(self, stored: dict[str, Any]) -> None:
        self.stored = stored
        self.new: list[dict[str, Any]] = []
        self.changed: list[dict[str, Any]] = []

    def add(self, job: Claimed, now: datetime, *, message_id: str, to: str, subject: str | None, status: str,
            error: str | None, permanent: bool) -> None:
        old = self.stored.get(job.key)
        if old is None:
            self.new.append({"key": job.key, "account": job.account, "episode": job.episode, "stage": job.stage,
                             "template": str(job.payload.get("template") or job.stage), "message_id": message_id,
                             "to": to, "subject": subject, "status": status, "claimed_at": now, "sent_at": None,
                             "error": error, "permanent": permanent})
        else:
            self.changed.append({"k": job.key, "b_message_id": message_id or old.message_id, "b_to": to,
                                 "b_subject": subject, "b_status": status, "b_error": error,
                                 "b_permanent": permanent, "b_claimed_at": now})

    def write(self, session: Session) -> None:
        write_rows(session, NOTICES, self.new)
        if self.changed:
            session.execute(update(NOTICES).where(NOTICES.c.key == bindparam("k")).values(
                message_id=bindparam("b_message_id"), to=bindparam("b_to"), subject=bindparam("b_subject"),
                status=bindparam("b_status"), error=bindparam("b_error"), permanent=bindparam("b_permanent"),
                claimed_at=bindparam("b_claimed_at")), self.changed)


def _failed_for_good(session: Session, job: Claimed, acc: m.Account, error: str, now: datetime, staff: str | None,
                     summary: ExecSummary) -> None:
    """``job``'s notice failed for good: a notice stage waiting for it is recorded as ``undelivered`` at
    ``now`` (the evaluator decides whether the stages after it go ahead), the account is looked at
    again, and staff get one message about it (never about a staff message)."""
    summary.notices_failed += 1
    if job.episode is not None:
        st = session.scalar(select(m.StageTaken).where(
            m.StageTaken.episode == job.episode, m.StageTaken.stage == job.stage, m.StageTaken.action == "notice",
            m.StageTaken.status == "in_flight"))
        if st is not None:
            st.status, st.at = "undelivered", now
            acc.next_check_at = now
    audit(session, at=now, actor=ACTOR, action="notice.failed", account=acc.id, reason=error,
          details={"notice": job.key, "stage": job.stage, "staff": bool(job.payload.get("staff"))})
    if staff and not job.payload.get("staff"):
        staff_notice_job(session, job, now)


# --- events --------------------------------------------------------------------------------------


def _run_events(session: Session, events: EventSink | None, jobs: list[Claimed], now: datetime,
                settings: AgentSettings, summary: ExecSummary) -> None:
    if not jobs:
        return
    done: list[tuple[Claimed, dict[str, Any] | None]] = []
    if events is None:
        done = [(j, {"event": "no events configured"}) for j in jobs]
    else:
        accounts = _accounts(session, {j.account for j in jobs})
        for j in jobs:
            try:
                result = events(j, accounts[j.account])
            except _Permanent as exc:
                _fail(j, str(exc), now, settings, summary, transient=False, permanent=True)
                continue
            except Exception as exc:
                _fail(j, str(exc), now, settings, summary, transient=False)
                continue
            done.append((j, result))
    _done_all(session, done, now, summary)
    _save(session, jobs)
    session.commit()


def event_sink(sink: Any) -> EventSink:
    """Adapts an :class:`agent.events.EventSink` to the executor: hook stages and events both emit the
    job's payload (``event``, or a built one for a hook); a failure raises so the job is retried."""

    def run(job: Claimed, account: m.Account) -> dict[str, Any]:
        event = job.payload.get("event")
        if event is None:
            return {"event": f"hook {job.payload.get('hook')!r} recorded; no runner for hooks"}
        result = sink.emit(event)
        if result.ok:
            return {"event": event.get("type"), "attempts": result.attempts, "skipped": result.skipped}
        if result.permanent:
            raise _Permanent(result.error or "event refused")
        raise RuntimeError(result.error or "event not delivered")

    return run


# --- finishing transitions -----------------------------------------------------------------------

_REQUIRED = {"notice": "notice", "hook": "event"}  # the kind of job a transition waits for; any other: "host"


TRANSITION_CHUNK = 500  # in-flight transitions looked at, and recorded, in one commit


def _finish_transitions(session: Session, now: datetime, summary: ExecSummary) -> int:
    """Record every in-flight transition whose jobs are all done as taken; returns the jobs it queued.
    Transitions are read in chunks: their jobs' statuses, accounts and open holds with one query each
    per chunk, and each chunk committed at once (a crash leaves the chunk in flight, done again next run)."""
    queued = 0
    st, job = m.StageTaken, m.Job
    required = case(_REQUIRED, value=st.action, else_="host")
    unfinished = select(job.id).where(job.account == st.account, job.episode.is_not_distinct_from(st.episode),
                                      job.stage == st.stage, job.kind == required, job.status != "done")
    # only those whose jobs are all done (each is looked at again below, locked): a transition still
    # waiting for its jobs is not read at all, however many rounds the run has
    ids = list(session.scalars(select(st.id).where(st.status == "in_flight", ~unfinished.exists())
                               .order_by(st.id)))
    for i in range(0, len(ids), TRANSITION_CHUNK):
        queued += _finish_chunk(session, ids[i:i + TRANSITION_CHUNK], now, summary)
    return queued


def _finish_chunk(session: Session, ids: list[int], now: datetime, summary: ExecSummary) -> int:
    """Take the chunk's transitions whose jobs are all done: read and written as plain rows (Core), the
    stages and the accounts each with one statement, the accounts' states last."""
    # locked, skipping what another agent is finishing (or recording: its account), so each is taken once
    chunk = list(session.execute(select(STAGES.c.id, STAGES.c.account, STAGES.c.episode, STAGES.c.stage,
                                        STAGES.c.action, STAGES.c.reason, STAGES.c.template, STAGES.c.hold)
                                 .where(STAGES.c.id.in_(ids), STAGES.c.status == "in_flight")
                                 .order_by(STAGES.c.id).with_for_update(skip_locked=True)))
    statuses: dict[tuple[str, int | None, str, str], list[str]] = {}
    for account, episode, stage, kind, status in session.execute(
            select(JOBS.c.account, JOBS.c.episode, JOBS.c.stage, JOBS.c.kind, JOBS.c.status)
            .where(JOBS.c.account.in_({st.account for st in chunk}))):
        statuses.setdefault((account, episode, stage, kind), []).append(status)
    ready = [st for st in chunk
             if all(s == "done" for s in statuses.get((st.account, st.episode, st.stage,
                                                       _REQUIRED.get(st.action, "host")), []))]
    if not ready:
        session.commit()  # let go of the locks
        return 0
    # locked, skipping an account another agent is recording or finishing
    accounts = _account_rows(session, {st.account for st in ready}, lock=True)
    ready = [st for st in ready if st.account in accounts]
    facts = transitions.accounts_now(session, list(accounts.values()),
                                     suspensions=any(st.action == "resume" for st in ready))
    effects = transitions.Effects()
    states: dict[str, str] = {}
    for st in ready:
        t = transitions.Transition(account=st.account, stage=st.stage, action=st.action, episode=st.episode,
                                   reason=(st.reason or {}).get("text"), template=st.template, hold=st.hold)
        states[st.account] = transitions.take(t, facts[st.account], now, effects)
        summary.taken.append({"account": st.account, "stage": st.stage, "action": st.action,
                              "at": now.isoformat()})
    queued = transitions.write(session, effects)
    taken = [st.id for st in ready]
    for i in range(0, len(taken), 500):
        session.execute(update(STAGES).where(STAGES.c.id.in_(taken[i:i + 500])).values(status="taken", at=now))
    # the state last; the next stage counts from now: evaluated again on the next tick
    execute_many(session, update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("b_id"))
                 .values(state=bindparam("b_state"), next_check_at=now),
                 [{"b_id": a, "b_state": state} for a, state in states.items()])
    _expire_accounts(session, states)
    session.commit()
    return queued


STAGES = cast(Table, m.StageTaken.__table__)
ACCOUNTS = cast(Table, m.Account.__table__)


def _expire_accounts(session: Session, ids: Iterable[str]) -> None:
    """An account row of ``ids`` that the session still holds (loaded earlier in the run) reads its state
    and next check again, as just written with Core statements."""
    held = session.identity_map
    for aid in ids:
        obj = held.get(identity_key(m.Account, aid))
        if obj is not None:
            session.expire(obj, ["state", "next_check_at"])


def _account_rows(session: Session, ids: set[str], *, lock: bool = False) -> dict[str, Any]:
    """:func:`_accounts` as plain rows (id, state, billing_email): what taking a transition reads."""
    wanted = sorted(ids)
    out: dict[str, Any] = {}
    for i in range(0, len(wanted), 500):
        query = (select(ACCOUNTS.c.id, ACCOUNTS.c.state, ACCOUNTS.c.billing_email)
                 .where(ACCOUNTS.c.id.in_(wanted[i:i + 500])))
        if lock:
            query = query.with_for_update(skip_locked=True)
        out.update((a.id, a) for a in session.execute(query))
    return out
