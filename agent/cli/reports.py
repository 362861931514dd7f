"""Reports over all accounts: ``accounts list``, ``debtors`` (the billing balance report), ``forecast``
(the measures to come) and ``status`` (counts per state and per job status)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.cli.app import (
    CliState,
    at_option,
    echo,
    emit_csv,
    emit_json,
    emit_json_array,
    get_state,
    iso,
    json_option,
    resolve,
    session,
    set_now,
    table,
)
from agent.imports import ASAP
from agent.store import models as m
from agent.store.repo import get_account, load_snapshots

__all__ = ["accounts_list", "debtors", "forecast_command", "status"]


@click.command("list")
@json_option
@click.pass_context
def accounts_list(ctx: click.Context, as_json: bool) -> None:
    """List accounts with their state."""
    state = get_state(ctx)
    with session(state, write=False) as s:
        rows = [{"id": a.id, "username": a.username, "plan": a.plan, "reseller": a.reseller, "state": a.state,
                 "next_check_at": iso(a.next_check_at) if a.next_check_at != ASAP else "next tick"}
                for a in s.scalars(select(m.Account).order_by(m.Account.id))]
    if as_json:
        emit_json(rows)
    else:
        table("accounts", ["id", "username", "plan", "reseller", "state", "next check"],
               [list(r.values()) for r in rows])



@click.command("forecast")
@click.argument("account", required=False)
@click.option("--days", type=click.IntRange(min=0, max=3650), default=30, show_default=True)
@at_option
@json_option
@click.pass_context
def forecast_command(ctx: click.Context, account: str | None, days: int, at: datetime | None, as_json: bool) -> None:
    """Every measure to come in the next DAYS days, assuming nothing is paid and each takes effect when due."""
    from agent.store.repo import due_select, iter_accounts
    from policy import forecast

    state = get_state(ctx)
    now = set_now(state, at)
    until = now + timedelta(days=days)
    # the accounts are read a chunk at a time; only the measures found are kept (small tuples), to sort them
    items: list[tuple[str, str, str, str, str]] = []  # due at, account, stage, action, reason
    with session(state, write=False) as s:
        chunks = [[get_account(s, account)]] if account else iter_accounts(s, due_select(until))
        for batch in chunks:
            snaps = load_snapshots(s, batch)
            for acc in batch:
                items += [(iso(f.due_at) or "", acc.id, f.stage, f.action, f.reason)
                          for f in forecast(snaps[acc.id], resolve(state.policy, acc), now, until)]
    items.sort(key=lambda x: (x[0], x[1]))
    if as_json:
        emit_json_array({"account": a, "stage": st, "action": ac, "due_at": d, "reason": r}
                        for d, a, st, ac, r in items)
        return
    if not items:
        echo(f"nothing due until {iso(until)}")
        return
    table(f"forecast {iso(now)} .. {iso(until)}", ["due at", "account", "stage", "action", "reason"],
           [list(i) for i in items])


def _debtors(s: Session, state: CliState, now: datetime) -> list[dict[str, Any]]:
    """The debtor rows, by balance: the accounts are read a chunk at a time, and only the debtors' rows
    (plain dicts) are kept, to sort them."""
    from agent.store.repo import iter_accounts
    from policy import balance_at, evaluate

    rows: list[dict[str, Any]] = []
    for batch in iter_accounts(s, select(m.Account).where(m.Account.state != "deleted")):
        snaps = load_snapshots(s, batch)
        for acc in batch:
            snap = snaps[acc.id]
            balance = balance_at(snap, now)
            if balance >= 0 and acc.state == "active" and snap.episode is None:
                continue
            resolved = resolve(state.policy, acc)
            d = evaluate(snap, resolved, now)
            ep = snap.episode
            tz = ZoneInfo(resolved.timezone)
            rows.append({
                "account": acc.id, "username": acc.username, "billing_email": acc.billing_email, "plan": acc.plan,
                "reseller": acc.reseller, "currency": acc.currency, "balance": str(balance),
                "credit_limit": str(resolved.credit_limit), "state": acc.state, "in_debt": d.in_debt,
                "holds": [h.kind for h in snap.holds],
                "debt_since": iso(ep.started_at) if ep else None,
                "days_in_debt": ((now.astimezone(tz).date() - ep.started_at.astimezone(tz).date()).days
                                 if ep else None),
                "last_stage": ep.stages_taken[-1].stage if ep and ep.stages_taken else None,
                "next_stage": d.upcoming.stage if d.upcoming else None,
                "next_due": iso(d.upcoming.due_at) if d.upcoming else None,
            })
    rows.sort(key=lambda r: (Decimal(r["balance"]), r["account"]))
    return rows


_NUMERIC = frozenset({"balance", "credit_limit", "days_in_debt"})  # CSV columns whose numbers stay numbers


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@at_option
@json_option
@click.pass_context
def debtors(ctx: click.Context, fmt: str, at: datetime | None, as_json: bool) -> None:
    """The billing balance report: every account with a negative balance or in a debt episode."""
    state = get_state(ctx)
    now = set_now(state, at)
    with session(state, write=False) as s:
        rows = _debtors(s, state, now)
    if as_json or fmt == "json":
        emit_json_array(rows)
        return
    columns = ["account", "username", "billing_email", "plan", "reseller", "currency", "balance", "credit_limit",
               "state", "in_debt", "holds", "debt_since", "days_in_debt", "last_stage", "next_stage", "next_due"]
    if fmt == "csv":
        emit_csv(columns, ([" ".join(r[c]) if c == "holds" else r[c] for c in columns] for r in rows),
                 numeric=_NUMERIC)
        return
    table(f"debtors at {iso(now)}", ["account", "balance", "limit", "state", "holds", "since", "days", "next", "due"],
           [[r["account"], f"{r['balance']} {r['currency']}", r["credit_limit"], r["state"], ",".join(r["holds"]),
             r["debt_since"], r["days_in_debt"], r["next_stage"], r["next_due"]] for r in rows])


def _failed_notice(n: m.Notice, at: datetime | None) -> dict[str, Any]:
    return {"account": n.account, "stage": n.stage, "to": n.to, "reply": n.error or "",
            "notice": "to staff" if n.key.endswith(":staff") else "to the billing address",
            "template": n.template, "failed_at": iso(at) if at else None, "message_id": n.message_id or None}


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Counts of accounts per state and of outbox jobs per status, and every notice that failed for good."""
    from agent.store.repo import failed_notices

    state = get_state(ctx)
    with session(state, write=False) as s:
        states = dict(s.execute(select(m.Account.state, func.count()).group_by(m.Account.state)).tuples().all())
        jobs = dict(s.execute(select(m.Job.status, func.count()).group_by(m.Job.status)).tuples().all())
        failed = [_failed_notice(n, at) for n, at in failed_notices(s)]
    info = {"accounts": states, "jobs": jobs, "database": state.config.db_url, "failed_notices": failed}
    if as_json:
        emit_json(info)
        return
    echo(f"accounts: {states}; jobs: {jobs}")
    if failed:
        echo(f"notices failed for good: {len(failed)}")
        for f in failed:
            echo(f"  {f['account']} {f['stage']} {f['notice']} {f['to']}: {f['reply']}")
