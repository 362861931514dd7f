"""Queries on the store, and the bridge from rows to :class:`policy.model.AccountSnapshot`.

Snapshots are built in batches: one query per table for a whole batch of accounts (``IN``), so a tick
over N due accounts costs a handful of queries per batch and reads nothing of the accounts not due.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from agent.store import models as m
from policy.model import (
    AccountSnapshot,
    Episode,
    Hold,
    Invoice,
    LedgerEntry,
    Override,
    StageTaken,
)

__all__ = [
    "BATCH",
    "UnknownAccount",
    "audit",
    "due_accounts",
    "due_chunks",
    "due_select",
    "failed_notices",
    "get_account",
    "iter_accounts",
    "load_snapshots",
    "open_episode",
    "open_holds",
    "snapshot",
]

BATCH = 500


class UnknownAccount(LookupError):
    def __init__(self, account: str) -> None:
        super().__init__(f"unknown account {account!r}")
        self.account = account


def get_account(session: Session, account_id: str) -> m.Account:
    acc = session.get(m.Account, account_id)
    if acc is None:
        raise UnknownAccount(account_id)
    return acc


def due_select(until: datetime) -> Select[Any]:
    """The accounts whose next check is at or before ``until`` (a statement, unordered)."""
    return select(m.Account).where(m.Account.next_check_at.is_not(None)).where(m.Account.next_check_at <= until)


def due_accounts(session: Session, now: datetime, *, until: datetime | None = None,
                 limit: int | None = None) -> list[m.Account]:
    """The accounts whose next check is at or before ``until`` (default ``now``), through the index."""
    stmt = due_select(until or now).order_by(m.Account.next_check_at, m.Account.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def due_chunks(session: Session, now: datetime, *, size: int = BATCH,
               lock: bool = False) -> Iterator[list[m.Account]]:
    """The accounts due at ``now`` (as :func:`due_accounts`), ``size`` at a time in the same order, each
    chunk read with a query of its own (through the index, after the last one seen) only once the
    caller asked for it, so that the caller can record a chunk before the next one is read. Recording
    moves an account's next check past ``now`` (or leaves it where it was), so no account comes twice.

    ``lock``: each chunk's rows are locked until the caller's commit, skipping the rows another agent
    locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL): a due account is evaluated and recorded by one
    agent at a time, and once recorded it is no longer due for the others."""
    due = m.Account.next_check_at
    after: tuple[datetime, str] | None = None
    while True:
        stmt = due_select(now)
        if after is not None:
            stmt = stmt.where(or_(due > after[0], and_(due == after[0], m.Account.id > after[1])))
        stmt = stmt.order_by(due, m.Account.id).limit(size)
        if lock:
            stmt = stmt.with_for_update(skip_locked=True)
        chunk = list(session.scalars(stmt.execution_options(populate_existing=lock)))
        if not chunk:
            return
        last = chunk[-1]
        assert last.next_check_at is not None
        after = (last.next_check_at, last.id)  # read before the caller changes the rows
        yield chunk
        if len(chunk) < size:
            return


def iter_accounts(session: Session, stmt: Select[Any] | None = None, *,
                  chunk: int = BATCH) -> Iterator[list[m.Account]]:
    """The accounts ``stmt`` selects (default: all), in chunks of ``chunk`` in the order of their id, read by
    keyset pagination (``id > last`` through the primary key): one query per chunk, and no more than one
    chunk of accounts held at a time, so a report over every account reads in memory flat in their number.
    ``stmt`` is a ``select(m.Account)`` with filters only; its own ordering and limit are replaced."""
    base = (select(m.Account) if stmt is None else stmt).order_by(None).limit(None)
    last: str | None = None
    while True:
        page = base if last is None else base.where(m.Account.id > last)
        accounts = list(session.scalars(page.order_by(m.Account.id).limit(chunk)))
        if not accounts:
            return
        last = accounts[-1].id
        yield accounts  # the session's identity map holds rows weakly: a chunk is freed once the caller drops it
        if len(accounts) < chunk:
            return


def open_episode(session: Session, account_id: str) -> m.Episode | None:
    return session.scalars(select(m.Episode).where(m.Episode.account == account_id, m.Episode.ended_at.is_(None))
                           .order_by(m.Episode.id.desc()).limit(1)).first()


def open_holds(session: Session, account_id: str) -> list[m.Hold]:
    return list(session.scalars(select(m.Hold).where(m.Hold.account == account_id, m.Hold.released_at.is_(None))
                                .order_by(m.Hold.id)))


def failed_notices(session: Session) -> list[tuple[m.Notice, datetime | None]]:
    """Every notice that failed for good (refused permanently by the mail server, or no usable address),
    oldest first, with when it failed."""
    rows = session.execute(select(m.Notice, m.Job.finished_at).outerjoin(m.Job, m.Job.key == m.Notice.key)
                           .where(m.Notice.status == "failed", m.Notice.permanent.is_(True)).order_by(m.Notice.id))
    return [(n, at) for n, at in rows]


def audit(session: Session, *, at: datetime, actor: str, action: str, account: str | None = None,
          reason: str | None = None, details: dict[str, Any] | None = None) -> m.AuditEntry:
    entry = m.AuditEntry(at=at, actor=actor, action=action, account=account, reason=reason, details=details)
    session.add(entry)
    return entry


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def load_snapshots(session: Session, accounts: Sequence[m.Account]) -> dict[str, AccountSnapshot]:
    """Snapshots of ``accounts`` (already loaded rows), reading their ledger, invoices, holds, overrides,
    open episode and its stages with one query per table per batch."""
    out: dict[str, AccountSnapshot] = {}
    by_id = {a.id: a for a in accounts}
    for ids in _chunks(list(by_id), BATCH):
        ledger: dict[str, list[LedgerEntry]] = defaultdict(list)
        for row in session.execute(
            select(m.LedgerEntry.account, m.LedgerEntry.at, m.LedgerEntry.amount, m.LedgerEntry.kind,
                   m.LedgerEntry.method, m.LedgerEntry.ref)
            .where(m.LedgerEntry.account.in_(ids)).order_by(m.LedgerEntry.at, m.LedgerEntry.id)
        ):
            ledger[row.account].append(LedgerEntry(at=row.at, amount=row.amount, kind=row.kind, method=row.method,
                                                   ref=row.ref))
        invoices: dict[str, list[Invoice]] = defaultdict(list)
        for inv in session.scalars(select(m.Invoice).where(m.Invoice.account.in_(ids))
                                   .order_by(m.Invoice.due_at, m.Invoice.id)):
            invoices[inv.account].append(Invoice(id=inv.invoice_id, issued_at=inv.issued_at, due_at=inv.due_at,
                                                 amount=inv.amount, paid_at=inv.paid_at))
        holds: dict[str, list[Hold]] = defaultdict(list)
        for h in session.scalars(select(m.Hold).where(m.Hold.account.in_(ids), m.Hold.released_at.is_(None))
                                 .order_by(m.Hold.id)):
            holds[h.account].append(Hold(kind=h.kind, since=h.since, reason=h.reason, actor=h.actor))  # type: ignore[arg-type]
        overrides: dict[str, list[Override]] = defaultdict(list)
        for o in session.scalars(select(m.Override).where(m.Override.account.in_(ids),
                                                          m.Override.revoked_at.is_(None)).order_by(m.Override.id)):
            overrides[o.account].append(Override(kind=o.kind, actor=o.actor, reason=o.reason,  # type: ignore[arg-type]
                                                 created_at=o.created_at, expires_at=o.expires_at, amount=o.amount,
                                                 at=o.at))
        episodes = {e.account: e for e in session.scalars(
            select(m.Episode).where(m.Episode.account.in_(ids), m.Episode.ended_at.is_(None)).order_by(m.Episode.id))}
        taken: dict[int, list[StageTaken]] = defaultdict(list)
        in_flight: dict[int, list[str]] = defaultdict(list)
        if episodes:
            for st in session.scalars(select(m.StageTaken).where(m.StageTaken.episode.in_([e.id for e in
                                                                                             episodes.values()]))
                                      .order_by(m.StageTaken.id)):
                if st.action == "resume":
                    continue  # resumes are transitions of the account, not stages of the episode
                if st.status in ("taken", "undelivered") and st.at is not None:
                    taken[st.episode].append(StageTaken(stage=st.stage, at=st.at,
                                                        undelivered=st.status == "undelivered"))
                elif st.status == "in_flight":
                    in_flight[st.episode].append(st.stage)
        for aid in ids:
            acc = by_id[aid]
            ep = episodes.get(aid)
            episode = None
            flying: tuple[str, ...] = ()
            if ep is not None:
                episode = Episode(started_at=ep.started_at, trigger=ep.trigger,
                                  stages_taken=tuple(sorted(taken[ep.id], key=lambda s: s.at)), id=ep.id)
                flying = tuple(in_flight[ep.id])
            out[aid] = AccountSnapshot(
                id=acc.id, plan=acc.plan, reseller=acc.reseller, currency=acc.currency,
                trial_ends_at=acc.trial_ends_at, has_billing_profile=acc.has_billing_profile,
                ledger=tuple(ledger[aid]), invoices=tuple(invoices[aid]), holds=tuple(holds[aid]),
                overrides=tuple(overrides[aid]), episode=episode, deleted=acc.state == "deleted", in_flight=flying,
            )
    return out


def snapshot(session: Session, account_id: str) -> AccountSnapshot:
    return load_snapshots(session, [get_account(session, account_id)])[account_id]
