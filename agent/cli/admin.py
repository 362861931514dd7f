"""The admin's manual actions: ``suspend``, ``resume``, ``delete``, ``restore``, ``mail`` (to debtors) and
``reconcile`` (the hosts' real state against the recorded one). Each runs in one transaction (none for
``--dry-run``) and takes effect on the next run, or at once with ``--now``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.cli.app import (
    CliError,
    CliState,
    actor_name,
    actor_option,
    all_resolved,
    at_option,
    echo,
    emit_json,
    get_state,
    iso,
    json_option,
    resolve,
    session,
    set_now,
    table,
)
from agent.cli.run import LazyFleet, apply_at_once
from agent.store import models as m
from agent.store.repo import get_account, load_snapshots

__all__ = ["ADMIN_TEMPLATES", "delete", "mail", "reconcile_command", "restore", "resume", "suspend"]


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


def _manual(state: CliState, dry_run: bool, action: Callable[[Session], Any], *, hosts: bool = True) -> Any:
    """Runs ``action`` in one transaction: committed, or rolled back for a dry run or a refusal.
    ``hosts``: the action works on hosts, so inventory.yaml is checked first (an invalid one refuses it)."""
    from agent.actions import ActionRefused

    if hosts:
        _ = state.inventory
    s = state.store.sessions()
    try:
        s.begin()
        try:
            result = action(s)
        except ActionRefused as exc:
            raise CliError(str(exc)) from None
        if dry_run:
            s.rollback()
        else:
            s.commit()
        return result
    finally:
        s.rollback()
        s.close()


ADMIN_TEMPLATES = {"suspend": "admin_suspended", "delete": "admin_deleted"}


def _stage_template(state: CliState, s: Session, acc: m.Account, action: str) -> str | None:
    """The notice sent when a manual ``action`` takes effect: while the account is in debt, the policy's
    own notice for that measure (its text speaks of the debt); otherwise ``admin_suspended`` /
    ``admin_deleted``, which say nothing of money. None without notices."""
    from policy import evaluate

    if state.notice_settings is None:
        return None
    resolved = resolve(state.policy, acc)
    if not evaluate(load_snapshots(s, [acc])[acc.id], resolved, state.now).in_debt:
        return ADMIN_TEMPLATES[action]
    stage = next((st for st in resolved.stages if st.enabled and st.action == action and st.template), None)
    return stage.template if stage is not None else {"suspend": "suspended", "delete": "deleted"}[action]


def _apply_now(state: CliState, now: datetime, info: dict[str, Any]) -> None:
    """``--now``: wake the daemon holding the database, else run the tick and the executor here."""
    got = apply_at_once(state, now)
    info["applied"] = got["message"]
    if "run" in got:
        info["run"] = got["run"]["executor"]
        info["errors"] = [*got["run"]["errors"], *got["run"]["executor"]["errors"]]


def _after_manual(state: CliState, info: dict[str, Any], now: datetime, run_now: bool, dry_run: bool,
                  account: str | None) -> dict[str, Any]:
    info = {**info, "dry_run": dry_run}
    if run_now and not dry_run:
        _apply_now(state, now, info)
    if account is not None and not dry_run:
        with session(state, write=False) as s:
            acc = get_account(s, account)
            info["state_after"] = acc.state
            info["waiting"] = len(list(s.scalars(select(m.Job.id).where(
                m.Job.account == acc.id, m.Job.status.in_(("pending", "claimed", "waiting"))))))
    return info


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
    from agent import actions

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)

    def act(s: Session) -> dict[str, Any]:
        template = _stage_template(state, s, get_account(s, account), "suspend")
        return actions.suspend(s, account, actor=who, reason=reason, now=now, notice_template=template).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"suspend by {who} ({reason})")


@click.command()
@click.argument("account")
@click.option("--reason", default=None, help="why (audited)")
@click.option("--grace", "grace", type=click.IntRange(1, 3650), default=None, metavar="DAYS",
              help="the account is still in debt: record a promise to pay within DAYS days (measures wait)")
@_admin_options
def resume(ctx: click.Context, account: str, reason: str | None, grace: int | None, actor: str | None,
           at: datetime | None, dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Lift the admin hold of ACCOUNT; refused while it is in debt unless --grace DAYS records a promise to pay."""
    from agent import actions

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)

    def act(s: Session) -> dict[str, Any]:
        return actions.resume(s, account, state.policy, actor=who, reason=reason, now=now,
                              grace_days=grace).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"resume by {who} ({info['reason']})")


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
    from agent import actions

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)
    if not yes and not dry_run:
        raise CliError(f"deleting {account} removes its sites, mail and home (after archiving them); "
                       "add --yes to confirm, or --dry-run to see what it would do")

    def act(s: Session) -> dict[str, Any]:
        template = _stage_template(state, s, get_account(s, account), "delete")
        return actions.delete(s, account, actor=who, reason=reason, now=now, notice_template=template).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"delete by {who} ({info['reason']})")


@click.command()
@click.argument("account")
@click.option("--reason", default=None, help="why (audited)")
@_admin_options
def restore(ctx: click.Context, account: str, reason: str | None, actor: str | None, at: datetime | None,
            dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Restore a deleted ACCOUNT from its archives; it comes back suspended (admin hold) until an admin resumes it."""
    from agent import actions

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)

    def act(s: Session) -> dict[str, Any]:
        return actions.restore(s, account, actor=who, reason=reason, now=now).as_dict()

    info = _after_manual(state, _manual(state, dry_run, act), now, run_now, dry_run, account)
    _say_manual(info, as_json, f"restore by {who} ({info['reason']})")


@click.command()
@click.option("--debtors", is_flag=True, required=True, help="send to every debtor (billing addresses only)")
@click.option("--stage", "stage", default=None, help="only debtors whose last measure taken is this stage")
@click.option("--template", "template", required=True, help="the notice template to send")
@_admin_options
def mail(ctx: click.Context, debtors: bool, stage: str | None, template: str, actor: str | None, at: datetime | None,
         dry_run: bool, run_now: bool, as_json: bool) -> None:
    """Mass mail to debtors through the notices outbox: once per account, template and day."""
    from agent import actions
    from agent.notices import Templates

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)
    if not debtors:
        raise CliError("say who receives it: --debtors")
    if state.notice_settings is None:
        raise CliError(f"{state.config.policy_path}: notices are not configured (notices: section)")
    if stage is not None:
        names = {st.name for layer in all_resolved(state) for st in layer.stages}
        if stage not in names:
            raise CliError(f"--stage {stage!r} is not a stage of the policy ({', '.join(sorted(names))})")
    tdir = state.config.templates_dir
    Templates.load(tdir if tdir.is_dir() else None).require([template])

    def act(s: Session) -> dict[str, Any]:
        return actions.mass_mail(s, state.policy, template=template, now=now, actor=who, stage=stage).as_dict()

    info: dict[str, Any] = {**_manual(state, dry_run, act, hosts=run_now), "dry_run": dry_run}
    if run_now and not dry_run:
        _apply_now(state, now, info)
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
    from agent.reconcile import reconcile

    state = get_state(ctx)
    now = set_now(state, at)
    who = actor_name(actor)
    fleet: Any = LazyFleet(state)
    try:
        report = _manual(state, dry_run, lambda s: reconcile(s, fleet, now, fix=fix, actor=who))
    finally:
        fleet.close()
    info: dict[str, Any] = {**report.as_dict(), "dry_run": dry_run, "fix": fix}
    if run_now and fix and not dry_run and report.queued:
        _apply_now(state, now, info)
    unrepaired = [d for d in report.differences if not fix or d.fix is None]
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

