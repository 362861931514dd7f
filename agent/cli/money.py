"""Money commands: ``payment``, ``set-debt-date``, ``exempt``, ``guarantee`` (the admin's overrides) and
``can-spend`` (may an order be paid from the balance?)."""

from __future__ import annotations

from datetime import datetime

import click

from agent.cli.app import (
    CliError,
    actor_option,
    api,
    at_option,
    echo,
    emit_json,
    json_option,
    option_names,
)

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
    svc, now = api(ctx, at)
    paid = svc.payment(account, amount, method=method, ref=ref, now=now, actor=actor, apply_now=apply_now)
    if paid.repeated:  # the command records a new payment: a known ref is a mistake here
        raise CliError(f"account {account} already has a ledger entry with ref {paid.ref!r}; nothing recorded")
    result = paid.to_json()
    if as_json:
        emit_json(result)
    elif paid.applied is not None:
        echo(f"{account}: payment of {paid.amount} by {method} recorded (ref {paid.ref}); {paid.applied.message}")
    else:
        echo(f"{account}: payment of {paid.amount} by {method} recorded (ref {paid.ref}); it takes effect on the "
             "next run")


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
    svc, now = api(ctx, at)
    with option_names(when="DATE"):
        result = svc.set_debt_date(account, when, reason=reason, now=now, actor=actor)
    emit_json(result.to_json()) if as_json else echo(f"{account}: outstanding balance date set to "
                                                     f"{result.to_json()['at']}")


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
    svc, now = api(ctx, at)
    with option_names(until="--until"):
        result = svc.exempt(account, until, reason=reason, now=now, actor=actor)
    emit_json(result.to_json()) if as_json else echo(f"{account}: exempt from automatic measures until "
                                                     f"{result.to_json()['expires_at']}")


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
    svc, now = api(ctx, at)
    with option_names(days="--days"):
        result = svc.guarantee(account, amount, days=days, reason=reason, now=now, actor=actor)
    assert result.expires_at is not None
    emit_json(result.to_json()) if as_json else echo(f"{account}: guaranteed payment of {result.amount} for "
                                                     f"{(result.expires_at - now).days} days")


@click.command("can-spend")
@click.argument("account")
@click.argument("amount")
@at_option
@json_option
@click.pass_context
def can_spend_command(ctx: click.Context, account: str, amount: str, at: datetime | None, as_json: bool) -> None:
    """May ACCOUNT pay an order of AMOUNT from its balance? Exit 0 when allowed, 1 when not."""
    svc, now = api(ctx, at)
    verdict = svc.can_spend(account, amount, now=now)
    if as_json:
        emit_json(verdict.to_json())
    else:
        echo(f"{verdict.reason} (available {verdict.available})")
    ctx.exit(0 if verdict.allowed else 1)
