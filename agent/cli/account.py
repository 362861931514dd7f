"""What one account looks like: ``show`` (its state now, with the work in flight) and ``history`` (everything
that happened to it, in time order); and ``accounts move-resource``, the one way a resource changes owner."""

from __future__ import annotations

from datetime import datetime

import click
from rich.text import Text

from agent.cli.app import (
    InertTable,
    actor_option,
    api,
    at_option,
    console,
    echo,
    emit_json,
    inert,
    json_option,
    table,
)

__all__ = ["history", "move_resource", "show"]


@click.command()
@click.argument("account")
@at_option
@json_option
@click.pass_context
def show(ctx: click.Context, account: str, at: datetime | None, as_json: bool) -> None:
    """An account's state, balance, holds, episode, stages taken, next measure and waiting host work."""
    svc, now = api(ctx, at)
    info = svc.show(account, now=now).to_json()
    if as_json:
        emit_json(info)
        return
    echo(inert(info["id"], "bold"), f" ({info['username'] or '-'}) state ", inert(info["state"], "bold"),
         f", balance {info['balance']} {info['currency']}, credit limit {info['credit_limit']}")
    echo(f"holds: {', '.join(info['holds']) or 'none'}")
    ep = info["episode"]
    echo(f"episode: since {ep['started_at']} ({ep['trigger']})" if ep else "episode: none")
    for st in info["stages_taken"]:
        undelivered = " (its notice failed for good)" if st.get("undelivered") else ""
        echo(f"  taken {st['stage']} at {st['at']}{undelivered}")
    for st in info["in_flight"]:
        echo(f"  in flight: {st}")
    nxt = info["next"]
    echo(f"next: {nxt['stage']} ({nxt['action']}) due {nxt['due_at']}" if nxt else "next: nothing scheduled")
    if info["held_back"]:
        echo(f"held back: {info['held_back']}")
    if info["manual_actions"]:
        admin = InertTable("admin actions in progress", ["action", "since", "reason"], title_justify="left")
        for a in info["manual_actions"]:
            admin.add_row(a["action"], a["since"], a["reason"])
        console().print(admin)
    for where, jobs in info["jobs"].items():
        echo(f"waiting work on {where}: {jobs['pending']} pending, {jobs['claimed']} running, "
             f"{jobs['failed']} failed" + (f"; last error: {jobs['last_error']}" if jobs["last_error"] else ""))
    for n in info["failed_notices"]:
        echo(inert(f"notice {n['stage']} failed", "red"), f": {n['error']}")


@click.command()
@click.argument("account")
@json_option
@click.pass_context
def history(ctx: click.Context, account: str, as_json: bool) -> None:
    """Episodes, stages, holds, payments, notices and the audit trail of an account."""
    svc, _ = api(ctx)
    info = svc.history(account).to_json()
    if as_json:
        emit_json(info)
        return
    echo(inert(info["account"], "bold"), f" state {info['state']}")
    events: list[tuple[str, Text | str]] = []
    for e in info["episodes"]:
        events.append((e["started_at"], f"episode {e['id']} starts ({e['trigger']})"))
        for st in e["stages"]:
            events.append((st["at"] or st["queued_at"], f"  {st['stage']} ({st['action']}) {st['status']}"))
        if e["ended_at"]:
            events.append((e["ended_at"], f"episode {e['id']} ends: {e['end_reason'] or ''}"))
    for h in info["holds"]:
        events.append((h["since"], f"hold {h['kind']} placed ({h['reason'] or ''})"))
        if h["released_at"]:
            events.append((h["released_at"], f"hold {h['kind']} released"))
    for le in info["ledger"]:
        events.append((le["at"], f"{le['kind']} {le['amount']}" + (f" by {le['method']}" if le["method"] else "")
                       + f" ref {le['ref']}"))
    for a in info["audit"]:
        events.append((a["at"], Text.assemble(inert("audit", "dim"), inert(f" {a['actor']}: {a['action']} "
                                                                            f"{a['reason'] or ''}"))))
    for n in info["notices"]:
        events.append((n["sent_at"] or "", f"notice {n['stage']} to {n['to']}: {n['status']}"
                       + (f" ({n['error']})" if n["error"] else "")))
    table(f"history of {info['account']}", ["at", "what"],
           [[at_, what] for at_, what in sorted(events, key=lambda x: x[0])])


@click.command("move-resource")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--service", required=True, type=click.Choice(["web", "mail", "login", "home"]),
              help="the service whose placement moves")
@click.option("--host", required=True, help="the inventory name of the host it is on")
@click.option("--reason", required=True, help="why (audited)")
@click.option("--dry-run", is_flag=True, help="print what would move; write nothing")
@actor_option
@at_option
@json_option
@click.pass_context
def move_resource(ctx: click.Context, source: str, target: str, service: str, host: str, reason: str,
                  dry_run: bool, actor: str | None, at: datetime | None, as_json: bool) -> None:
    """Give FROM's SERVICE on HOST (its sites, mailboxes, user or home, and the facts saved to restore it)
    to TO. Audited on both accounts; refused while either has an action in progress."""
    svc, now = api(ctx, at)
    moved = svc.move_resource(source, target, service=service, host=host, reason=reason, now=now, actor=actor,
                              dry_run=dry_run)
    details = moved.to_json()
    who = svc.actor_of(actor)
    if as_json:
        emit_json(details)
        return
    what = ", ".join(moved.keys) or service
    verb = "would move" if dry_run else "moved"
    echo(f"{verb} {service} on {host} ({what}) from {source} to {target}, by {who} ({reason})")
