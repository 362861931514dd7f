"""The reads: one account (``show``, ``explain``, ``history``, the fields a notice sees), the reports over
all accounts (``accounts``, ``forecast``, ``debtors``, ``status``; the plan is :mod:`agent.service.plans`) and
the outbox's jobs. Each reads in one session that writes nothing; the long reports read the accounts a chunk at
a time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.service.errors import InvalidInput
from agent.service.paging import after as _after
from agent.service.paging import limited as _limit
from agent.service.paging import page as _page
from agent.service.results import (
    AccountRow,
    AccountView,
    AuditView,
    Backlog,
    DebtorRow,
    EpisodeHistory,
    EpisodeRef,
    Explanation,
    FailedNotice,
    FailedNoticeRow,
    ForecastItem,
    History,
    HoldView,
    JobCounts,
    JobView,
    LedgerLineView,
    ManualAction,
    NextMeasure,
    NoticeView,
    OverrideView,
    Page,
    PlacementRef,
    Record,
    StageHistory,
    StageMark,
    StatusReport,
    jsonable,
)
from agent.store import models as m
from agent.store.repo import get_account, load_snapshots, open_episode, open_holds

if TYPE_CHECKING:
    from agent.service.arrears import Arrears

__all__ = ["accounts", "backlog", "debtors", "explain", "forecast", "history", "iter_debtors", "jobs", "notice_fields",
           "show", "status"]

R = TypeVar("R", bound=Record)


# --- paging ---------------------------------------------------------------------------------------


# --- one account ----------------------------------------------------------------------------------


def _audit_reason(s: Session, entry_id: Any) -> str | None:
    """The reason recorded with the audit entry a manual transition names."""
    entry = s.get(m.AuditEntry, entry_id) if isinstance(entry_id, int) else None
    return entry.reason if entry is not None else None


def show(svc: Arrears, account: str, now: datetime) -> AccountView:
    from agent.actions import in_flight_manual
    from policy import balance_at, evaluate

    with svc.session(write=False) as s:
        acc = get_account(s, account)
        snap = load_snapshots(s, [acc])[acc.id]
        resolved = svc.resolve(acc)
        d = evaluate(snap, resolved, now)
        ep = open_episode(s, acc.id)
        stages: list[StageMark] = []
        in_flight: list[str] = []
        if ep is not None:
            for st in s.scalars(select(m.StageTaken).where(m.StageTaken.episode == ep.id,
                                                          m.StageTaken.action != "resume")
                                .order_by(m.StageTaken.id)):
                if st.status == "taken":
                    stages.append(StageMark(st.stage, st.at))
                elif st.status == "undelivered":  # its notice failed for good
                    stages.append(StageMark(st.stage, st.at, undelivered=True))
                elif st.status == "in_flight":
                    in_flight.append(st.stage)
        jobs: dict[str, dict[str, Any]] = {}
        for j in s.scalars(select(m.Job).where(m.Job.account == acc.id,
                                               m.Job.status.in_(("pending", "claimed", "failed")))
                           .order_by(m.Job.id)):
            where = j.host if j.kind == "host" and j.host else j.kind
            entry = jobs.setdefault(where, {"pending": 0, "claimed": 0, "failed": 0, "last_error": None,
                                            "next_attempt_at": None})
            entry[j.status] += 1
            if j.last_error:
                entry["last_error"] = j.last_error
            if j.status == "pending":
                entry["next_attempt_at"] = j.next_attempt_at
        manual = [ManualAction(j.action, j.created_at, _audit_reason(s, j.payload.get("audit")))
                  for j in in_flight_manual(s, acc.id)]
        failed = [FailedNotice(n.stage, n.error, n.permanent)
                  for n in s.scalars(select(m.Notice).where(m.Notice.account == acc.id, m.Notice.status == "failed"))]
        placements = [PlacementRef(p.service, p.host)
                      for p in s.scalars(select(m.Placement).where(m.Placement.account == acc.id)
                                         .order_by(m.Placement.service, m.Placement.host))]
        up = d.upcoming
        return AccountView(
            id=acc.id, username=acc.username, billing_email=acc.billing_email, plan=acc.plan,
            reseller=acc.reseller, currency=acc.currency, state=acc.state, balance=balance_at(snap, now),
            credit_limit=resolved.credit_limit, in_debt=d.in_debt, holds=[h.kind for h in open_holds(s, acc.id)],
            episode=EpisodeRef(ep.id, ep.started_at, ep.trigger) if ep else None, stages_taken=stages,
            in_flight=in_flight, next=NextMeasure(up.stage, up.action, up.due_at) if up else None,
            held_back=d.held_back.text if d.held_back else None, next_check_at=acc.next_check_at,
            jobs={where: JobCounts(**counts) for where, counts in jobs.items()}, manual_actions=manual,
            failed_notices=failed, placements=placements, at=now)


def explain(svc: Arrears, account: str, now: datetime) -> Explanation:
    from policy import explain as explain_account

    with svc.session(write=False) as s:
        acc = get_account(s, account)
        snap = load_snapshots(s, [acc])[acc.id]
        resolved = svc.resolve(acc)
        info = explain_account(snap, resolved, now)
    return Explanation(account=account, at=now, now=now, balance=Decimal(info["balance"]),
                       in_debt=info["in_debt"], layers=info["layers"], policy=info["policy"],
                       triggers=info["triggers"], episode=info["episode"], holds=info["holds"],
                       decision=info["decision"], sources=dict(resolved.sources))


def history(svc: Arrears, account: str) -> History:
    with svc.session(write=False) as s:
        acc = get_account(s, account)
        episodes = [
            EpisodeHistory(e.id, e.started_at, e.trigger, e.ended_at, (e.end_reason or {}).get("text"), [
                StageHistory(st.stage, st.action, st.status, st.queued_at, st.at, (st.reason or {}).get("text"))
                for st in s.scalars(select(m.StageTaken).where(m.StageTaken.episode == e.id)
                                    .order_by(m.StageTaken.id))])
            for e in s.scalars(select(m.Episode).where(m.Episode.account == acc.id).order_by(m.Episode.id))]
        return History(
            account=acc.id, state=acc.state, episodes=episodes,
            holds=[HoldView(h.kind, h.since, h.released_at, h.reason, h.actor)
                   for h in s.scalars(select(m.Hold).where(m.Hold.account == acc.id).order_by(m.Hold.id))],
            ledger=[LedgerLineView(e.at, e.amount, e.kind, e.method, e.ref)
                    for e in s.scalars(select(m.LedgerEntry).where(m.LedgerEntry.account == acc.id)
                                       .order_by(m.LedgerEntry.at, m.LedgerEntry.id))],
            overrides=[OverrideView(o.kind, o.actor, o.reason, o.created_at, o.expires_at, o.amount, o.at,
                                    o.revoked_at)
                       for o in s.scalars(select(m.Override).where(m.Override.account == acc.id)
                                          .order_by(m.Override.id))],
            notices=[NoticeView(n.stage, n.status, n.to, n.subject, n.message_id, n.sent_at, n.error)
                     for n in s.scalars(select(m.Notice).where(m.Notice.account == acc.id).order_by(m.Notice.id))],
            audit=[AuditView(a.at, a.actor, a.action, a.reason, a.details)
                   for a in s.scalars(select(m.AuditEntry).where(m.AuditEntry.account == acc.id)
                                      .order_by(m.AuditEntry.at, m.AuditEntry.id))])


def notice_fields(svc: Arrears, account: str, now: datetime) -> Mapping[str, Any] | None:
    from policy import balance_at, evaluate

    with svc.session(write=False) as s:
        acc = s.get(m.Account, account)
        if acc is None:
            return None
        snap = load_snapshots(s, [acc])[acc.id]
        resolved = svc.resolve(acc)
        d = evaluate(snap, resolved, now)
        ep = snap.episode
        return {"id": acc.id, "username": acc.username, "billing_email": acc.billing_email, "plan": acc.plan,
                "currency": acc.currency, "balance": balance_at(snap, now),
                "credit_limit": resolved.credit_limit, "debt_start": ep.started_at if ep else None,
                "stage": ep.stages_taken[-1].stage if ep and ep.stages_taken else None,
                "next_measure": d.next, "next_due": d.next.due_at if d.next else None,
                "timezone": resolved.timezone}


# --- reports --------------------------------------------------------------------------------------


def accounts(svc: Arrears) -> list[AccountRow]:
    from agent.imports import ASAP

    with svc.session(write=False) as s:
        return [AccountRow(a.id, a.username, a.plan, a.reseller, a.state,
                           "next tick" if a.next_check_at == ASAP else jsonable(a.next_check_at))
                for a in s.scalars(select(m.Account).order_by(m.Account.id))]


def forecast(svc: Arrears, account: str | None, days: int, now: datetime) -> list[ForecastItem]:
    from agent.store.repo import due_select, iter_accounts
    from policy import forecast as forecast_account

    if not 0 <= days <= 3650:
        raise InvalidInput(f"days must be from 0 to 3650, got {days}", "days")
    until = now + timedelta(days=days)
    # the accounts are read a chunk at a time; only the measures found are kept, to sort them
    items: list[ForecastItem] = []
    with svc.session(write=False) as s:
        chunks = [[get_account(s, account)]] if account else iter_accounts(s, due_select(until))
        for batch in chunks:
            snaps = load_snapshots(s, batch)
            for acc in batch:
                items += [ForecastItem(acc.id, f.stage, f.action, f.due_at, f.reason)
                          for f in forecast_account(snaps[acc.id], svc.resolve(acc), now, until)]
    items.sort(key=lambda i: (i.due_at, i.account))
    return items


def iter_debtors(svc: Arrears, now: datetime) -> Iterator[DebtorRow]:
    """The debtor rows, by balance then id: the accounts are read a chunk at a time, and only the debtors'
    rows are kept, to sort them."""
    from agent.store.repo import iter_accounts
    from policy import balance_at, evaluate

    rows: list[DebtorRow] = []
    with svc.session(write=False) as s:
        for batch in iter_accounts(s, select(m.Account).where(m.Account.state != "deleted")):
            snaps = load_snapshots(s, batch)
            for acc in batch:
                snap = snaps[acc.id]
                balance = balance_at(snap, now)
                if balance >= 0 and acc.state == "active" and snap.episode is None:
                    continue
                resolved = svc.resolve(acc)
                d = evaluate(snap, resolved, now)
                ep = snap.episode
                tz = ZoneInfo(resolved.timezone)
                rows.append(DebtorRow(
                    account=acc.id, username=acc.username, billing_email=acc.billing_email, plan=acc.plan,
                    reseller=acc.reseller, currency=acc.currency, balance=balance,
                    credit_limit=resolved.credit_limit, state=acc.state, in_debt=d.in_debt,
                    holds=[h.kind for h in snap.holds], debt_since=ep.started_at if ep else None,
                    days_in_debt=((now.astimezone(tz).date() - ep.started_at.astimezone(tz).date()).days
                                  if ep else None),
                    last_stage=ep.stages_taken[-1].stage if ep and ep.stages_taken else None,
                    next_stage=d.upcoming.stage if d.upcoming else None,
                    next_due=d.upcoming.due_at if d.upcoming else None))
    rows.sort(key=lambda r: (r.balance, r.account))
    yield from rows


def debtors(svc: Arrears, now: datetime, cursor: str | None, limit: int | None) -> Page[DebtorRow]:
    after = _after(cursor, 2)
    limit = _limit(limit)
    key = (Decimal(str(after[0])), str(after[1])) if after is not None else None
    rows = (((str(r.balance), r.account), r) for r in iter_debtors(svc, now)
            if key is None or (r.balance, r.account) > key)
    items, next_cursor = _page(rows, limit)
    return Page(items, next_cursor)


def _failed_notice(n: m.Notice, at: datetime | None) -> FailedNoticeRow:
    return FailedNoticeRow(n.account, n.stage, n.to, n.error or "",
                           "to staff" if n.key.endswith(":staff") else "to the billing address",
                           n.template, at, n.message_id or None)


def status(svc: Arrears) -> StatusReport:
    from agent.store.repo import failed_notices

    with svc.session(write=False) as s:
        states = dict(s.execute(select(m.Account.state, func.count()).group_by(m.Account.state)).all())
        jobs = dict(s.execute(select(m.Job.status, func.count()).group_by(m.Job.status)).all())
        failed = [_failed_notice(n, at) for n, at in failed_notices(s)]
    return StatusReport(states, jobs, svc.config.db_url, failed)


def backlog(svc: Arrears) -> Backlog:
    from agent.store.repo import failed_notices

    with svc.session(write=False) as s:
        pending = s.scalar(select(func.count()).select_from(m.Job).where(m.Job.status == "pending"))
        return Backlog(int(pending or 0), len(failed_notices(s)))


def jobs(svc: Arrears, status: str | None, account: str | None, cursor: str | None,
         limit: int | None) -> Page[JobView]:
    after = _after(cursor, 1)
    limit = _limit(limit)
    stmt = select(m.Job).order_by(m.Job.id)
    if status is not None:
        stmt = stmt.where(m.Job.status == status)
    if account is not None:
        stmt = stmt.where(m.Job.account == account)
    if after is not None:
        stmt = stmt.where(m.Job.id > int(after[0]))
    if limit is not None:
        stmt = stmt.limit(limit + 1)
    with svc.session(write=False) as s:
        if account is not None:
            get_account(s, account)
        found = [JobView(j.id, j.account, j.kind, j.stage, j.action, j.service, j.host, j.status, j.attempts,
                         j.next_attempt_at, j.last_error, j.created_at, j.finished_at) for j in s.scalars(stmt)]
    items, next_cursor = _page((((j.id,), j) for j in found), limit)
    return Page(items, next_cursor)
