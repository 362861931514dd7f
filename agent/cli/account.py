"""What one account looks like: ``show`` (its state now, with the work in flight) and ``history`` (everything
that happened to it, in time order); and ``accounts move-resource``, the one way a resource changes owner."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.cli.app import (
    CliError,
    CliState,
    InertTable,
    actor_name,
    actor_option,
    at_option,
    console,
    echo,
    emit_json,
    get_state,
    inert,
    iso,
    json_option,
    resolve,
    session,
    set_now,
    table,
)
from agent.store import models as m
from agent.store.repo import get_account, load_snapshots, open_episode, open_holds

__all__ = ["history", "move_resource", "show"]


def _audit_reason(s: Session, entry_id: Any) -> str | None:
    """The reason recorded with the audit entry a manual transition names."""
    entry = s.get(m.AuditEntry, entry_id) if isinstance(entry_id, int) else None
    return entry.reason if entry is not None else None


def _show(s: Session, state: CliState, acc: m.Account, now: datetime) -> dict[str, Any]:
    from agent.actions import in_flight_manual
    from policy import balance_at, evaluate

    snap = load_snapshots(s, [acc])[acc.id]
    resolved = resolve(state.policy, acc)
    d = evaluate(snap, resolved, now)
    ep = open_episode(s, acc.id)
    stages: list[dict[str, Any]] = []
    in_flight: list[str] = []
    if ep is not None:
        for st in s.scalars(select(m.StageTaken).where(m.StageTaken.episode == ep.id,
                                                      m.StageTaken.action != "resume").order_by(m.StageTaken.id)):
            if st.status == "taken":
                stages.append({"stage": st.stage, "at": iso(st.at)})
            elif st.status == "undelivered":  # its notice failed for good
                stages.append({"stage": st.stage, "at": iso(st.at), "undelivered": True})
            elif st.status == "in_flight":
                in_flight.append(st.stage)
    jobs: dict[str, dict[str, Any]] = {}
    for j in s.scalars(select(m.Job).where(m.Job.account == acc.id,
                                           m.Job.status.in_(("pending", "claimed", "failed"))).order_by(m.Job.id)):
        where = j.host if j.kind == "host" and j.host else j.kind
        entry = jobs.setdefault(where, {"pending": 0, "claimed": 0, "failed": 0, "last_error": None,
                                        "next_attempt_at": None})
        entry[j.status] += 1
        if j.last_error:
            entry["last_error"] = j.last_error
        if j.status == "pending":
            entry["next_attempt_at"] = iso(j.next_attempt_at)
    manual = [{"action": j.action, "since": iso(j.created_at), "reason": _audit_reason(s, j.payload.get("audit"))}
              for j in in_flight_manual(s, acc.id)]
    failed_notices = [{"stage": n.stage, "error": n.error, "permanent": n.permanent}
                      for n in s.scalars(select(m.Notice).where(m.Notice.account == acc.id,
                                                                m.Notice.status == "failed"))]
    return {
        "id": acc.id,
        "username": acc.username,
        "billing_email": acc.billing_email,
        "plan": acc.plan,
        "reseller": acc.reseller,
        "currency": acc.currency,
        "state": acc.state,
        "balance": str(balance_at(snap, now)),
        "credit_limit": str(resolved.credit_limit),
        "in_debt": d.in_debt,
        "holds": [h.kind for h in open_holds(s, acc.id)],
        "episode": ({"id": ep.id, "started_at": iso(ep.started_at), "trigger": ep.trigger} if ep else None),
        "stages_taken": stages,
        "in_flight": in_flight,
        "next": ({"stage": up.stage, "action": up.action, "due_at": iso(up.due_at)} if (up := d.upcoming) else None),
        "held_back": d.held_back.text if d.held_back else None,
        "next_check_at": iso(acc.next_check_at),
        "jobs": jobs,
        "manual_actions": manual,
        "failed_notices": failed_notices,
        "placements": [{"service": p.service, "host": p.host}
                       for p in s.scalars(select(m.Placement).where(m.Placement.account == acc.id)
                                          .order_by(m.Placement.service, m.Placement.host))],
        "at": iso(now),
    }


@click.command()
@click.argument("account")
@at_option
@json_option
@click.pass_context
def show(ctx: click.Context, account: str, at: datetime | None, as_json: bool) -> None:
    """An account's state, balance, holds, episode, stages taken, next measure and waiting host work."""
    state = get_state(ctx)
    now = set_now(state, at)
    with session(state, write=False) as s:
        info = _show(s, state, get_account(s, account), now)
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
    state = get_state(ctx)
    with session(state, write=False) as s:
        acc = get_account(s, account)
        eps = list(s.scalars(select(m.Episode).where(m.Episode.account == acc.id).order_by(m.Episode.id)))
        info: dict[str, Any] = {
            "account": acc.id,
            "state": acc.state,
            "episodes": [{
                "id": e.id, "started_at": iso(e.started_at), "trigger": e.trigger, "ended_at": iso(e.ended_at),
                "end_reason": (e.end_reason or {}).get("text"),
                "stages": [{"stage": st.stage, "action": st.action, "status": st.status,
                            "queued_at": iso(st.queued_at), "at": iso(st.at), "reason": (st.reason or {}).get("text")}
                           for st in s.scalars(select(m.StageTaken).where(m.StageTaken.episode == e.id)
                                               .order_by(m.StageTaken.id))],
            } for e in eps],
            "holds": [{"kind": h.kind, "since": iso(h.since), "released_at": iso(h.released_at), "reason": h.reason,
                       "actor": h.actor}
                      for h in s.scalars(select(m.Hold).where(m.Hold.account == acc.id).order_by(m.Hold.id))],
            "ledger": [{"at": iso(e.at), "amount": str(e.amount), "kind": e.kind, "method": e.method, "ref": e.ref}
                       for e in s.scalars(select(m.LedgerEntry).where(m.LedgerEntry.account == acc.id)
                                          .order_by(m.LedgerEntry.at, m.LedgerEntry.id))],
            "overrides": [{"kind": o.kind, "actor": o.actor, "reason": o.reason, "created_at": iso(o.created_at),
                           "expires_at": iso(o.expires_at), "amount": str(o.amount) if o.amount is not None else None,
                           "at": iso(o.at), "revoked_at": iso(o.revoked_at)}
                          for o in s.scalars(select(m.Override).where(m.Override.account == acc.id)
                                             .order_by(m.Override.id))],
            "notices": [{"stage": n.stage, "status": n.status, "to": n.to, "subject": n.subject,
                         "message_id": n.message_id, "sent_at": iso(n.sent_at), "error": n.error}
                        for n in s.scalars(select(m.Notice).where(m.Notice.account == acc.id).order_by(m.Notice.id))],
            "audit": [{"at": iso(a.at), "actor": a.actor, "action": a.action, "reason": a.reason,
                       "details": a.details}
                      for a in s.scalars(select(m.AuditEntry).where(m.AuditEntry.account == acc.id)
                                         .order_by(m.AuditEntry.at, m.AuditEntry.id))],
        }
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
    from agent.store.placements import MoveRefused, move_placement
    from agent.store.repo import audit

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)
    s = state.store.sessions()
    try:
        s.begin()
        try:
            moved = move_placement(s, source, target, service, host)
        except MoveRefused as exc:
            raise CliError(str(exc)) from None
        details = {**moved, "dry_run": dry_run}
        for aid in (source, target):
            audit(s, at=now, actor=who, action="accounts.move-resource", account=aid, reason=reason, details=details)
        if dry_run:
            s.rollback()
        else:
            s.commit()
    finally:
        s.rollback()
        s.close()
    if as_json:
        emit_json(details)
        return
    what = ", ".join(moved["keys"]) or service
    verb = "would move" if dry_run else "moved"
    echo(f"{verb} {service} on {host} ({what}) from {source} to {target}, by {who} ({reason})")
