"""The admin's manual actions: ``suspend``, ``resume``, ``delete``, ``restore``, ``mail`` (to debtors) and
``reconcile`` (the hosts' real state against the recorded one). Each runs in one transaction (none for
``--dry-run``) and takes effect on the next run, or at once with ``--now``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from agent.cli.app import (
    CliError,
    actor_option,
    api,
    at_option,
    echo,
    emit_json,
    iso,
    json_option,
    option_names,
    table,
)

__all__ = ["delete", "mail", "reconcile_command", "restore", "resume", "suspend"]


def _admin_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every admin command shares: who, when, dry run, at once, JSON; and the context."""
    for option in (
        click.pass_context,
        json_option,
        click.option("--now", "run_now", is_flag=True,
                     help="apply it at once (as `arrears run` would) instead of on the next run"),
        click.option("--dry-run", is_flag=True, help="print what it would do; write nothing"),
        at_option,
        actor_option,
    ):
        f = option(f)
    return f


def _say_manual(info: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        emit_json(info)
        return
    prefix = "dry run: would " if info["dry_run"] else ""
    echo(f"{info['account']}: {prefix}{what}")
    for kind in info.get("holds_placed", []):
        echo(f"  {'would place' if info['dry_run'] else 'placed'} hold {kind}")
    for kind in info.get("holds_released", []):
        echo(f"  {'would release' if info['dry_run'] else 'released'} hold {kind}")
    for o in info.get("overrides", []):
        echo(f"  {'would record' if info['dry_run'] else 'recorded'} {o['kind']} until {o['expires_at']} "
                   f"({o['actor']}: {o['reason']})")
    for j in info.get("jobs", []):
        echo(f"  {'would queue' if info['dry_run'] else 'queued'} {j['action']} of {j['service']} on {j['host']}")
    if info.get("notice"):
        echo(f"  notice {info['notice']} to the billing address once it took effect")
    for note in info.get("notes", []):
        echo(f"  {note}")
    if info["dry_run"]:
        echo("nothing was written")
    elif "run" in info:
        echo(f"applied: state {info['state_after']}"
                   + (f", {info['waiting']} jobs still waiting (see arrears show {info['account']})"
                      if info["waiting"] else ""))
        for e in info.get("errors", []):
            echo(f"warning: {e}", err=True)
    elif "applied" in info:
        echo(f"{info['applied']}; state {info['state_after']}")
    elif info.get("waiting"):
        echo(f"state {info['state_after']}; it takes effect on the next run (arrears run)")
    else:
        echo(f"state {info['state_after']}")


@click.command()
@click.argument("account")
@click.option("--reason", required=True, help="why (audited)")
@_admin_options
def suspend(ctx: click.Context, account: str, reason: str, actor: str | None, at: datetime | None, dry_run: bool,
            run_now: bool, as_json: bool) -> None:
    """Suspend ACCOUNT by hand: an admin hold that payments do not lift, applied on every host.

    Once every host applied it, the billing address gets the policy's suspension notice while the account
    is in debt, else ``admin_suspended`` (which says nothing of money)."""
    svc, now = api(ctx, at)
    info = svc.suspend(account, reason=reason, now=now, actor=actor, dry_run=dry_run, apply_now=run_now).to_json()
    _say_manual(info, as_json, f"suspend by {info['actor']} ({reason})")


@click.command()
@click.argument("account")
@click.option("--reason", default=None, help="why (audited)")
@click.option("--grace", "grace", type=click.IntRange(1, 3650), default=None, metavar="DAYS",
              help="the account is still in debt: record a promise to pay within DAYS days (measures wait)")
@_admin_options
def resume(ctx: click.Context, account: str, reason: str | None, grace: int | None, actor: str | None,
           at: datetime | None, dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Lift the admin hold of ACCOUNT; refused while it is in debt unless --grace DAYS records a promise to pay."""
    svc, now = api(ctx, at)
    info = svc.resume(account, reason=reason, grace_days=grace, now=now, actor=actor, dry_run=dry_run,
                      apply_now=run_now).to_json()
    _say_manual(info, as_json, f"resume by {info['actor']} ({info['reason']})")


@click.command()
@click.argument("account")
@click.option("--yes", is_flag=True, help="confirm: the account's files are archived, verified, then removed")
@click.option("--reason", default=None, help="why (audited)")
@_admin_options
def delete(ctx: click.Context, account: str, yes: bool, reason: str | None, actor: str | None, at: datetime | None,
           dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Delete ACCOUNT on every host (archive -> verify -> remove); needs --yes.

    The account is recorded deleted once every host's deletion took effect; then the billing address gets
    the policy's deletion notice while the account is in debt, else ``admin_deleted``."""
    svc, now = api(ctx, at)
    if not yes and not dry_run:
        raise CliError(f"deleting {account} removes its sites, mail and home (after archiving them); "
                       "add --yes to confirm, or --dry-run to see what it would do")
    info = svc.delete(account, reason=reason, now=now, actor=actor, dry_run=dry_run, apply_now=run_now).to_json()
    _say_manual(info, as_json, f"delete by {info['actor']} ({info['reason']})")


@click.command()
@click.argument("account")
@click.option("--reason", default=None, help="why (audited)")
@_admin_options
def restore(ctx: click.Context, account: str, reason: str | None, actor: str | None, at: datetime | None,
            dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Restore a deleted ACCOUNT from its archives; it comes back suspended (admin hold) until an admin resumes it."""
    svc, now = api(ctx, at)
    info = svc.restore(account, reason=reason, now=now, actor=actor, dry_run=dry_run, apply_now=run_now).to_json()
    _say_manual(info, as_json, f"restore by {info['actor']} ({info['reason']})")


@click.command()
@click.option("--debtors", is_flag=True, required=True, help="send to every debtor (billing addresses only)")
@click.option("--stage", "stage", default=None, help="only debtors whose last measure taken is this stage")
@click.option("--template", "template", required=True, help="the notice template to send")
@_admin_options
def mail(ctx: click.Context, debtors: bool, stage: str | None, template: str, actor: str | None, at: datetime | None,
         dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Mass mail to debtors through the notices outbox: once per account, template and day."""
    svc, now = api(ctx, at)
    if not debtors:
        raise CliError("say who receives it: --debtors")
    with option_names(stage="--stage"):
        info = svc.mail(template=template, stage=stage, now=now, actor=actor, dry_run=dry_run,
                        apply_now=run_now).to_json()
    if as_json:
        emit_json(info)
        return
    verb = "would queue" if dry_run else "queued"
    echo(f"mass mail {template} ({info['date']}): {verb} {len(info['queued'])}, "
               f"{len(info['already'])} already queued today, {len(info['no_address'])} without a billing address")
    for q in info["queued"]:
        echo(f"  {q['account']} -> {q['to']}")
    if dry_run:
        echo("nothing was written")
    elif "run" in info:
        echo(f"{info['run']['notices_sent']} sent")
    elif "applied" in info:
        echo(info["applied"])
    else:
        echo("they are sent on the next run (arrears run)")


@click.command("reconcile")
@click.option("--fix", is_flag=True, help="queue the jobs that bring the hosts back to the recorded state")
@_admin_options
def reconcile_command(ctx: click.Context, fix: bool, actor: str | None, at: datetime | None, dry_run: bool,
                      run_now: bool, as_json: bool) -> None:
    """Read every host's facts and report accounts whose real state differs from the recorded one.

    Exit 0 when the hosts agree (or --fix queued the repairs), 1 when differences are left unrepaired."""
    svc, now = api(ctx, at)
    report = svc.reconcile(fix=fix, now=now, actor=actor, dry_run=dry_run, apply_now=run_now)
    info = report.to_json()
    unrepaired = report.unrepaired
    if as_json:
        emit_json(info)
    else:
        echo(f"reconcile at {iso(now)}: {report.checked} placements read, {len(report.differences)} differ"
                   + (f", {len(report.busy)} accounts with work in flight skipped" if report.busy else ""))
        if report.differences:
            table("differences", ["account", "service", "host", "recorded", "observed", "fix", "detail"],
                   [[d.account, d.service, d.host, d.recorded, d.observed, d.fix or "admin (restore?)", d.detail]
                    for d in report.differences])
        for e in report.errors:
            echo(f"warning: {e['account']} {e['service']} on {e['host']}: {e['error']}", err=True)
        if report.queued:
            verb = "would queue" if dry_run else "queued"
            echo(f"{verb} {len(report.queued)} repair jobs"
                       + ("" if dry_run else f"; {info['applied']}" if "applied" in info
                          else "; they run on the next run (arrears run)"))
        if dry_run:
            echo("nothing was written")
    if unrepaired:
        ctx.exit(1)

