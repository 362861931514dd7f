"""Queries on the store through the ORM session, and one account's snapshot for the purchase gate
(:func:`spend_snapshot`). The due accounts and the snapshots of many accounts are read on Core alone,
:mod:`agent.store.snapshots` (named here too).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine

from agent.store import models as m
from agent.store.bulk import begin_write
from agent.store.prepared import Prepared
from agent.store.snapshots import BATCH, DueAccount, assemble, due_chunks, load_snapshots, stage_into
from policy.model import (
    AccountSnapshot,
    Hold,
    Invoice,
    LedgerEntry,
    Override,
    StageTaken,
)

__all__ = [
    "BATCH",
    "DueAccount",
    "UnknownAccount",
    "audit",
    "due_accounts",
    "due_chunks",
    "due_select",
    "failed_notices",
    "get_account",
    "iter_accounts",
    "load_snapshots",
    "lock_account",
    "open_episode",
    "open_holds",
    "snapshot",
    "spend_snapshot",
]



class UnknownAccount(LookupError):
    def __init__(self, account: str) -> None:
        super().__init__(f"unknown account {account!r}")
        self.account = account


def get_account(session: Session, account_id: str) -> m.Account:
    acc = session.get(m.Account, account_id)
    if acc is None:
        raise UnknownAccount(account_id)
    return acc


def lock_account(session: Session, account_id: str) -> None:
    """Take the account's row for this transaction before anything is read for a change of it, so that a
    second change of the same account waits for this one's commit and then reads what it did: the
    database's write lock on SQLite (:func:`agent.store.bulk.begin_write`), the row read ``FOR UPDATE`` on
    PostgreSQL."""
    begin_write(session)
    session.execute(select(m.Account.id).where(m.Account.id == account_id).with_for_update())


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


# --- one account, cheaply: the purchase gate's read ----------------------------------------------------

_LEDGER, _INVOICE, _HOLD, _OVERRIDE, _STAGE = range(5)


def _typed(value: Any, type_: TypeEngine[Any]) -> ColumnElement[Any]:
    """A column of the inputs' union: ``value`` read as ``type_``, or a NULL of that type."""
    return cast(null(), type_) if value is None else type_coerce(value, type_)


def _inputs_row(tag: int, t1: Any, t2: Any, t3: Any, amount: Any, s1: Any, s2: Any, s3: Any,
                n: Any) -> list[ColumnElement[Any]]:
    time, money = m.LedgerEntry.at.type, m.LedgerEntry.amount.type
    return [literal_column(str(tag), Integer).label("tag"), _typed(t1, time).label("t1"),
            _typed(t2, time).label("t2"), _typed(t3, time).label("t3"), _typed(amount, money).label("amount"),
            _typed(s1, String()).label("s1"), _typed(s2, String()).label("s2"), _typed(s3, String()).label("s3"),
            _typed(n, Integer()).label("n")]


@cache
def _spend_statements() -> tuple[Select[Any], Any]:
    """The two statements of :func:`spend_snapshot`, built once (parameters ``account`` and ``episode``)."""
    A, E = m.Account, m.Episode
    L, Inv, H, Ov, S = m.LedgerEntry, m.Invoice, m.Hold, m.Override, m.StageTaken
    account, episode = bindparam("account", type_=String()), bindparam("episode", type_=Integer())
    row = (select(A.id, A.plan, A.reseller, A.policy, A.currency, A.trial_ends_at, A.has_billing_profile, A.state,
                  E.id.label("episode_id"), E.started_at.label("episode_started_at"),
                  E.trigger.label("episode_trigger"))
           .outerjoin(E, and_(E.account == A.id, E.ended_at.is_(None))).where(A.id == account)
           .order_by(E.id.desc()).limit(1))
    inputs = union_all(
        select(*_inputs_row(_LEDGER, L.at, None, None, L.amount, L.kind, L.method, L.ref, L.id))
        .where(L.account == account),
        select(*_inputs_row(_INVOICE, Inv.due_at, Inv.issued_at, Inv.paid_at, Inv.amount, Inv.invoice_id, None, None,
                            Inv.id)).where(Inv.account == account),
        select(*_inputs_row(_HOLD, H.since, None, None, None, H.kind, H.reason, H.actor, H.id))
        .where(H.account == account, H.released_at.is_(None)),
        select(*_inputs_row(_OVERRIDE, Ov.created_at, Ov.expires_at, Ov.at, Ov.amount, Ov.kind, Ov.actor, Ov.reason,
                            Ov.id)).where(Ov.account == account, Ov.revoked_at.is_(None)),
        select(*_inputs_row(_STAGE, S.at, None, None, None, S.stage, S.status, S.action, S.id))
        .where(S.episode == episode),  # no open episode: NULL, which matches no row
    )
    return row, inputs


@cache
def _spend_prepared(dialect: Dialect) -> tuple[Prepared, Prepared]:
    return Prepared(_spend_statements()[0], dialect), Prepared(_spend_statements()[1], dialect)


def spend_snapshot(session: Session | Connection, account_id: str) -> tuple[Any, AccountSnapshot]:
    """One account's row (the columns its policy is layered by) and its snapshot, read with two Core
    statements and no ORM objects: the account with its open episode, then its ledger, invoices, open holds,
    overrides in force and the episode's stages in one ``UNION ALL``. The snapshot is the one
    :func:`load_snapshots` builds (the same assembly); this is the read of a single-account request (the
    purchase gate's, on every request: both statements run prepared, :mod:`agent.store.prepared`)."""
    connection = session if isinstance(session, Connection) else session.connection()
    row_of, inputs_of = _spend_prepared(connection.dialect)
    found = row_of.rows(connection, {"account": account_id})
    if not found:
        raise UnknownAccount(account_id)
    acc = found[0]
    ledger: list[tuple[datetime, int, LedgerEntry]] = []
    invoices: list[tuple[datetime, int, Invoice]] = []
    holds: list[tuple[int, Hold]] = []
    overrides: list[tuple[int, Override]] = []
    stages: list[tuple[int, str, str, str, datetime | None]] = []
    for r in inputs_of.rows(connection, {"account": account_id, "episode": acc.episode_id}):
        if r.tag == _LEDGER:
            ledger.append((r.t1, r.n, LedgerEntry(at=r.t1, amount=r.amount, kind=r.s1, method=r.s2, ref=r.s3)))
        elif r.tag == _INVOICE:
            invoices.append((r.t1, r.n, Invoice(id=r.s1, issued_at=r.t2, due_at=r.t1, amount=r.amount, paid_at=r.t3)))
        elif r.tag == _HOLD:
            holds.append((r.n, Hold(kind=r.s1, since=r.t1, reason=r.s2, actor=r.s3)))
        elif r.tag == _OVERRIDE:
            overrides.append((r.n, Override(kind=r.s1, actor=r.s2, reason=r.s3, created_at=r.t1, expires_at=r.t2,
                                            amount=r.amount, at=r.t3)))
        else:
            stages.append((r.n, r.s3, r.s2, r.s1, r.t1))
    taken: list[StageTaken] = []
    in_flight: list[str] = []
    for _, action, status, stage, at in sorted(stages):
        stage_into(taken, in_flight, action, status, stage, at)
    episode = None if acc.episode_id is None else (acc.episode_id, acc.episode_started_at, acc.episode_trigger)
    return acc, assemble(acc, [e for *_, e in sorted(ledger, key=lambda x: x[:2])],
                          [i for *_, i in sorted(invoices, key=lambda x: x[:2])],
                          [h for _, h in sorted(holds, key=lambda x: x[0])],
                          [o for _, o in sorted(overrides, key=lambda x: x[0])], episode, taken, in_flight)


def snapshot(session: Session, account_id: str) -> AccountSnapshot:
    return load_snapshots(session, [get_account(session, account_id)])[account_id]
