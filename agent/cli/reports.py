"""Reports over all accounts: ``accounts list``, ``debtors`` (the billing balance report), ``forecast``
(the measures to come) and ``status`` (counts per state and per job status)."""

from __future__ import annotations

from datetime import datetime, timedelta

import click

from agent.cli.app import (
    api,
    at_option,
    echo,
    emit_csv,
    emit_json,
    emit_json_array,
    iso,
    json_option,
    table,
)

__all__ = ["accounts_list", "debtors", "forecast_command", "status"]


@click.command("list")
@json_option
@click.pass_context
def accounts_list(ctx: click.Context, as_json: bool) -> None:
    """List accounts with their state."""
    svc, _ = api(ctx)
    rows = [a.to_json() for a in svc.accounts()]
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
    svc, now = api(ctx, at)
    until = now + timedelta(days=days)
    items = svc.forecast(account, days=days, now=now)
    if as_json:
        emit_json_array(i.to_json() for i in items)
        return
    if not items:
        echo(f"nothing due until {iso(until)}")
        return
    table(f"forecast {iso(now)} .. {iso(until)}", ["due at", "account", "stage", "action", "reason"],
           [[iso(i.due_at), i.account, i.stage, i.action, i.reason] for i in items])


_NUMERIC = frozenset({"balance", "credit_limit", "days_in_debt"})  # CSV columns whose numbers stay numbers


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@at_option
@json_option
@click.pass_context
def debtors(ctx: click.Context, fmt: str, at: datetime | None, as_json: bool) -> None:
    """The billing balance report: every account with a negative balance or in a debt episode."""
    svc, now = api(ctx, at)
    rows = (r.to_json() for r in svc.iter_debtors(now=now))
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


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Counts of accounts per state and of outbox jobs per status, and every notice that failed for good."""
    svc, _ = api(ctx)
    report = svc.status()
    info = report.to_json()
    if as_json:
        emit_json(info)
        return
    states, jobs, failed = info["accounts"], info["jobs"], info["failed_notices"]
    echo(f"accounts: {states}; jobs: {jobs}")
    if failed:
        echo(f"notices failed for good: {len(failed)}")
        for f in failed:
            echo(f"  {f['account']} {f['stage']} {f['notice']} {f['to']}: {f['reply']}")
