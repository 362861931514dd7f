"""The reads that evaluating accounts needs, on SQLAlchemy Core alone (plain rows, no ORM objects, and the
ORM not even loaded: the plan's path): the accounts due, a chunk at a time through the index, and the bridge
from rows to :class:`policy.model.AccountSnapshot`.

Snapshots are built in batches: one query per table for a whole batch of accounts (their ids bound as one
parameter), so a tick over N due accounts costs a handful of queries per batch and reads nothing of the
accounts not due. Each read takes a Core ``Connection`` or an ORM ``Session`` (whose statements it runs).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Select, bindparam, select, tuple_
from sqlalchemy.engine import Connection

from agent.store import tables
from agent.store.bulk import in_keys
from policy.model import (
    AccountSnapshot,
    Episode,
    Hold,
    Invoice,
    LedgerEntry,
    Override,
    StageTaken,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from agent.store.models import Account

__all__ = ["BATCH", "SNAPSHOT_BATCH", "DueAccount", "assemble", "due_chunks", "load_snapshots", "stage_into"]

BATCH = 500

ACCOUNTS = tables.ACCOUNTS


class DueAccount(NamedTuple):
    """What evaluating a due account needs of its row (read as a plain row, not an ORM object)."""

    id: str
    plan: str | None
    reseller: str | None
    currency: str
    trial_ends_at: datetime | None
    has_billing_profile: bool
    policy: dict[str, Any] | None
    state: str
    next_check_at: datetime | None
    changed_at: datetime | None


_DUE_COLUMNS = [ACCOUNTS.c[name] for name in DueAccount._fields]


def due_chunks(session: Session | Connection, now: datetime, *, size: int = BATCH,
               lock: bool = False) -> Iterator[list[DueAccount]]:
    """The accounts due at ``now`` (as :func:`agent.store.repo.due_accounts`), ``size`` at a time in the same
    order, each chunk read with a query of its own (through the index, after the last one seen) only once the
    caller asked for it, so that the caller can record a chunk before the next one is read. Recording
    moves an account's next check past ``now`` (or leaves it where it was), so no account comes twice.
    The rows are plain rows of the columns evaluating an account needs (no ORM objects).

    ``lock``: each chunk's rows are locked until the caller's commit, skipping the rows another agent
    locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL): a due account is evaluated and recorded by one
    agent at a time, and once recorded it is no longer due for the others."""
    due = ACCOUNTS.c.next_check_at
    after: tuple[datetime, str] | None = None
    while True:
        stmt = select(*_DUE_COLUMNS).where(due.is_not(None), due <= now)
        if after is not None:  # one range of the index on (next_check_at, id), however many share a time
            stmt = stmt.where(tuple_(due, ACCOUNTS.c.id) > after)
        stmt = stmt.order_by(due, ACCOUNTS.c.id).limit(size)
        if lock:
            stmt = stmt.with_for_update(skip_locked=True)
        chunk = [DueAccount._make(row) for row in session.execute(stmt)]
        if not chunk:
            return
        last = chunk[-1]
        assert last.next_check_at is not None
        after = (last.next_check_at, last.id)
        yield chunk
        if len(chunk) < size:
            return


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# Accounts whose snapshots are read with one statement per table (their ids bound as one parameter).
SNAPSHOT_BATCH = 4 * BATCH


@cache
def _snapshot_statements() -> tuple[Select[Any], ...]:
    """The statements of :func:`load_snapshots`, built once: each table's rows of the accounts bound to ``ids``
    (the stages: of the episodes bound to ``episodes``), in the order a snapshot holds them."""
    L, Inv, H, Ov, E, S = (t.c for t in (tables.LEDGER, tables.INVOICES, tables.HOLDS, tables.OVERRIDES,
                                          tables.EPISODES, tables.STAGES_TAKEN))
    return (
        select(L.account, L.at, L.amount, L.kind, L.method, L.ref)
        .where(in_keys(L.account, "ids")).order_by(L.at, L.id),
        select(Inv.account, Inv.invoice_id, Inv.issued_at, Inv.due_at, Inv.amount, Inv.paid_at)
        .where(in_keys(Inv.account, "ids")).order_by(Inv.due_at, Inv.id),
        select(H.account, H.kind, H.since, H.reason, H.actor)
        .where(in_keys(H.account, "ids"), H.released_at.is_(None)).order_by(H.id),
        select(Ov.account, Ov.kind, Ov.actor, Ov.reason, Ov.created_at, Ov.expires_at, Ov.amount, Ov.at)
        .where(in_keys(Ov.account, "ids"), Ov.revoked_at.is_(None)).order_by(Ov.id),
        select(E.id, E.account, E.started_at, E.trigger)
        .where(in_keys(E.account, "ids"), E.ended_at.is_(None)).order_by(E.id),
        select(S.episode, S.stage, S.action, S.status, S.at)
        .where(S.episode.in_(bindparam("episodes", expanding=True))).order_by(S.id),
    )


def load_snapshots(session: Session | Connection,
                   accounts: Sequence[Account | DueAccount]) -> dict[str, AccountSnapshot]:
    """Snapshots of ``accounts`` (already loaded rows), reading their ledger, invoices, holds, overrides,
    open episode and its stages with one query per table per batch (plain rows: no ORM objects)."""
    out: dict[str, AccountSnapshot] = {}
    by_id = {a.id: a for a in accounts}
    ledger_of, invoices_of, holds_of, overrides_of, episodes_of, stages_of = _snapshot_statements()
    for ids in _chunks(list(by_id), SNAPSHOT_BATCH):
        keys = {"ids": ids}
        ledger: dict[str, list[LedgerEntry]] = defaultdict(list)
        for account, at, amount, kind, method, ref in session.execute(ledger_of, keys):
            ledger[account].append(LedgerEntry(at=at, amount=amount, kind=kind, method=method, ref=ref))
        invoices: dict[str, list[Invoice]] = defaultdict(list)
        for account, invoice_id, issued_at, due_at, amount, paid_at in session.execute(invoices_of, keys):
            invoices[account].append(Invoice(id=invoice_id, issued_at=issued_at, due_at=due_at, amount=amount,
                                             paid_at=paid_at))
        holds: dict[str, list[Hold]] = defaultdict(list)
        for account, kind, since, reason, actor in session.execute(holds_of, keys):
            holds[account].append(Hold(kind=kind, since=since, reason=reason, actor=actor))
        overrides: dict[str, list[Override]] = defaultdict(list)
        for o in session.execute(overrides_of, keys):
            overrides[o.account].append(Override(kind=o.kind, actor=o.actor, reason=o.reason,
                                                 created_at=o.created_at, expires_at=o.expires_at, amount=o.amount,
                                                 at=o.at))
        episodes = {e.account: e for e in session.execute(episodes_of, keys)}
        taken: dict[int, list[StageTaken]] = defaultdict(list)
        in_flight: dict[int, list[str]] = defaultdict(list)
        if episodes:
            for st in session.execute(stages_of, {"episodes": [e.id for e in episodes.values()]}):
                stage_into(taken[st.episode], in_flight[st.episode], st.action, st.status, st.stage, st.at)
        for aid in ids:
            ep = episodes.get(aid)
            opened = None if ep is None else (ep.id, ep.started_at, ep.trigger)
            out[aid] = assemble(by_id[aid], ledger.get(aid, ()), invoices.get(aid, ()), holds.get(aid, ()),
                                 overrides.get(aid, ()), opened, taken[ep.id] if ep is not None else [],
                                 in_flight[ep.id] if ep is not None else [])
    return out


def stage_into(taken: list[StageTaken], in_flight: list[str], action: str, status: str, stage: str,
                at: datetime | None) -> None:
    """Add one row of ``stages_taken`` of the open episode to what the snapshot holds of it."""
    if action == "resume":
        return  # resumes are transitions of the account, not stages of the episode
    if status in ("taken", "undelivered") and at is not None:
        taken.append(StageTaken(stage=stage, at=at, undelivered=status == "undelivered"))
    elif status == "in_flight":
        in_flight.append(stage)


def assemble(acc: Any, ledger: Sequence[LedgerEntry], invoices: Sequence[Invoice], holds: Sequence[Hold],
              overrides: Sequence[Override], episode: tuple[int, datetime, str] | None,
              taken: Sequence[StageTaken], in_flight: Sequence[str]) -> AccountSnapshot:
    """The snapshot of one account (``acc``: an account row or an object with its columns) from its inputs."""
    opened = None
    if episode is not None:
        opened = Episode(started_at=episode[1], trigger=episode[2],
                         stages_taken=tuple(sorted(taken, key=lambda s: s.at)), id=episode[0])
    return AccountSnapshot(
        id=acc.id, plan=acc.plan, reseller=acc.reseller, currency=acc.currency,
        trial_ends_at=acc.trial_ends_at, has_billing_profile=acc.has_billing_profile,
        ledger=tuple(ledger), invoices=tuple(invoices), holds=tuple(holds), overrides=tuple(overrides),
        episode=opened, deleted=acc.state == "deleted", in_flight=tuple(in_flight) if opened is not None else (),
    )
