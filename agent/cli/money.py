"""Money commands: ``payment``, ``set-debt-date``, ``exempt``, ``guarantee`` (the admin's overrides) and
``can-spend`` (may an order be paid from the balance?)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import click
from sqlalchemy import select

from agent.cli.app import (
    CliError,
    CliState,
    actor_name,
    actor_option,
    at_option,
    echo,
    emit_json,
    get_state,
    iso,
    json_option,
    parse_moment,
    parse_money,
    resolve,
    session,
    set_now,
)
from agent.cli.run import apply_at_once
from agent.imports import touch
from agent.store import models as m
from agent.store.repo import audit, get_account, load_snapshots

__all__ = ["can_spend_command", "exempt", "guarantee", "payment", "set_debt_date"]


@click.command()
@click.argument("account")
@click.argument("amount")
@click.option("--method", default="card", show_default=True, help="card, check, transfer ...")
@click.option("--ref", default=None, help="billing's reference (unique per account)")
@click.option("--now", "apply_now", is_flag=True, help="apply it at once (wakes a running daemon)")
@at_option
@actor_option
@json_option
@click.pass_context
def payment(ctx: click.Context, account: str, amount: str, method: str, ref: str | None, apply_now: bool,
            at: datetime | None, actor: str | None, as_json: bool) -> None:
    """Record a payment; it takes effect on the next run, or at once with --now."""
    import re
    import uuid

    state = get_state(ctx)
    now = set_now(state, at)
    if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", method):
        raise CliError(f"method {method!r} is not valid (lower-case letters, digits, - and _)")
    ref = ref or f"payment:{uuid.uuid4().hex}"
    if apply_now:
        _ = state.inventory  # applying it works on hosts: an invalid inventory refuses it before it is recorded
    with session(state) as s:
        acc = get_account(s, account)
        value = parse_money(amount, "amount", acc.currency)
        if value <= 0:
            raise CliError(f"amount must be positive, got {value}")
        if s.scalar(select(m.LedgerEntry.id).where(m.LedgerEntry.account == acc.id, m.LedgerEntry.ref == ref)):
            raise CliError(f"account {acc.id} already has a ledger entry with ref {ref!r}; nothing recorded")
        s.add(m.LedgerEntry(account=acc.id, at=now, amount=value, kind="payment", method=method, ref=ref,
                            imported_at=now))
        touch(acc, now)
        audit(s, at=now, actor=actor_name(actor), action="payment", account=acc.id, reason=f"{method} payment",
              details={"amount": str(value), "method": method, "ref": ref})
    result: dict[str, Any] = {"account": account, "amount": str(value), "method": method, "ref": ref,
                              "at": iso(now)}
    if apply_now:
        result["applied"] = apply_at_once(state, now)
    if as_json:
        emit_json(result)
    elif apply_now:
        echo(f"{account}: payment of {value} by {method} recorded (ref {ref}); {result['applied']['message']}")
    else:
        echo(f"{account}: payment of {value} by {method} recorded (ref {ref}); it takes effect on the next run")


def _add_override(state: CliState, account: str, *, kind: str, actor: str | None, reason: str, now: datetime,
                  expires_at: datetime | None = None, amount: Decimal | None = None,
                  at: datetime | None = None) -> dict[str, Any]:
    with session(state) as s:
        acc = get_account(s, account)
        if kind == "debt_date":
            # a new outstanding-balance date replaces the previous one
            for o in s.scalars(select(m.Override).where(m.Override.account == acc.id, m.Override.kind == kind,
                                                        m.Override.revoked_at.is_(None))):
                o.revoked_at = now
        o = m.Override(account=acc.id, kind=kind, actor=actor_name(actor), reason=reason, created_at=now,
                       expires_at=expires_at, amount=amount, at=at)
        s.add(o)
        touch(acc, now)
        details = {"expires_at": iso(expires_at), "amount": str(amount) if amount is not None else None,
                   "at": iso(at)}
        audit(s, at=now, actor=o.actor, action=f"override.{kind}", account=acc.id, reason=reason, details=details)
        return {"account": acc.id, "kind": kind, "actor": o.actor, "reason": reason, **details}


@click.command("set-debt-date")
@click.argument("account")
@click.argument("when", metavar="DATE")
@click.option("--reason", default="outstanding balance date set by an admin", show_default=True)
@at_option
@actor_option
@json_option
@click.pass_context
def set_debt_date(ctx: click.Context, account: str, when: str, reason: str, at: datetime | None,
                  actor: str | None, as_json: bool) -> None:
    """Set the outstanding-balance date: the debt episode counts from DATE (YYYY-MM-DD or a time with zone)."""
    state = get_state(ctx)
    now = set_now(state, at)
    moment = parse_moment(when, state.policy, "DATE")
    result = _add_override(state, account, kind="debt_date", actor=actor, reason=reason, now=now, at=moment)
    emit_json(result) if as_json else echo(f"{account}: outstanding balance date set to {iso(moment)}")


@click.command()
@click.argument("account")
@click.option("--until", "until", required=True, help="end of the exemption (YYYY-MM-DD or a time with zone)")
@click.option("--reason", required=True, help="why (audited)")
@at_option
@actor_option
@json_option
@click.pass_context
def exempt(ctx: click.Context, account: str, until: str, reason: str, at: datetime | None, actor: str | None,
           as_json: bool) -> None:
    """Exempt an account from automatic measures until a date."""
    state = get_state(ctx)
    now = set_now(state, at)
    end = parse_moment(until, state.policy, "--until")
    if end <= now:
        raise CliError(f"--until {until} is not in the future (now is {iso(now)})")
    result = _add_override(state, account, kind="exempt", actor=actor, reason=reason, now=now, expires_at=end)
    emit_json(result) if as_json else echo(f"{account}: exempt from automatic measures until {iso(end)}")


@click.command()
@click.argument("account")
@click.argument("amount")
@click.option("--days", type=click.IntRange(1, 36500), default=None, help="how long (default: the policy's maximum)")
@click.option("--reason", default="guaranteed payment", show_default=True)
@at_option
@actor_option
@json_option
@click.pass_context
def guarantee(ctx: click.Context, account: str, amount: str, days: int | None, reason: str, at: datetime | None,
              actor: str | None, as_json: bool) -> None:
    """Grant a guaranteed payment: temporary credit of AMOUNT for some days, within the policy's limits."""
    state = get_state(ctx)
    now = set_now(state, at)
    with session(state, write=False) as s:
        acc = get_account(s, account)
        value = parse_money(amount, "amount", acc.currency)
        if value <= 0:
            raise CliError(f"amount must be positive, got {value}")
        limit = resolve(state.policy, acc).guaranteed_payment
    if value > limit.limit:
        raise CliError(f"amount {value} is over the policy's guaranteed payment limit {limit.limit} for {account}")
    days = days if days is not None else limit.days
    if days <= 0 or days > limit.days:
        raise CliError(f"--days must be between 1 and the policy's {limit.days} days for {account}")
    result = _add_override(state, account, kind="guarantee", actor=actor, reason=reason, now=now,
                           expires_at=now + timedelta(days=days), amount=value)
    emit_json(result) if as_json else echo(f"{account}: guaranteed payment of {value} for {days} days")


@click.command("can-spend")
@click.argument("account")
@click.argument("amount")
@at_option
@json_option
@click.pass_context
def can_spend_command(ctx: click.Context, account: str, amount: str, at: datetime | None, as_json: bool) -> None:
    """May ACCOUNT pay an order of AMOUNT from its balance? Exit 0 when allowed, 1 when not."""
    from policy import can_spend

    state = get_state(ctx)
    now = set_now(state, at)
    with session(state, write=False) as s:
        acc = get_account(s, account)
        value = parse_money(amount, "amount", acc.currency)
        if value < 0:
            raise CliError(f"amount must not be negative, got {value}")
        snap = load_snapshots(s, [acc])[acc.id]
        verdict = can_spend(snap, resolve(state.policy, acc), now, value)
    if as_json:
        emit_json({"allowed": verdict.allowed, "available": str(verdict.available), "reason": verdict.reason})
    else:
        echo(f"{verdict.reason} (available {verdict.available})")
    ctx.exit(0 if verdict.allowed else 1)

