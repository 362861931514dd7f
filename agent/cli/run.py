"""Planning and running: ``plan`` (what a run would do now, changing nothing) and ``run`` (one tick and one
executor pass, under the database's instance lock)."""

from __future__ import annotations

from datetime import datetime

import click

from agent.cli.app import (
    api,
    at_option,
    echo,
    emit_json,
    emit_json_array,
    iso,
    json_option,
    option_names,
    start_up,
    table,
)

__all__ = ["name_option", "plan_command", "run_command"]

name_option = click.option("--name", default=None, metavar="NAME",
                           help="this agent's name (default: ARREARS_AGENT, else one made of the machine's "
                                "name; see `arrears agents`)")


@click.command("plan")
@at_option
@json_option
@click.pass_context
def plan_command(ctx: click.Context, at: datetime | None, as_json: bool) -> None:
    """What `run` would do now (only the accounts that are due), changing nothing."""
    with start_up():
        svc, now = api(ctx, at)
        svc.warm_up()
    page = svc.plan(now=now)
    for e in page.errors:
        echo(f"warning: {e}", err=True)
    if as_json:
        emit_json_array(i.to_json() for i in page.items)
        return
    if not page.items:
        echo(f"nothing to do at {iso(now)}")
        return
    table(f"plan at {iso(now)}", ["account", "stage", "action", "due at", "reason"],
           [[i.account, i.stage, i.action, iso(i.due_at), i.reason] for i in page.items])


@click.command("run")
@at_option
@json_option
@name_option
@click.pass_context
def run_command(ctx: click.Context, at: datetime | None, as_json: bool, name: str | None) -> None:
    """Evaluate the due accounts, queue their measures and apply them (hosts, notices)."""
    svc, now = api(ctx, at)
    with option_names(name="--name"):
        result = svc.run(now=now, name=name).to_json()
    if as_json:
        emit_json(result)
        return
    x = result["executor"]
    echo(f"run at {result['now']}: {result['accounts']} accounts due, {result['episodes_started']} episodes "
               f"started, {result['episodes_ended']} ended, {len(result['measures'])} measures queued, "
               f"{len(result['resumes'])} resumes")
    if x["taken"]:
        table("taken", ["account", "stage", "action", "at"],
               [[t["account"], t["stage"], t["action"], t["at"]] for t in x["taken"]])
    echo(f"jobs: {x['done']} done, {x['retrying']} to retry, {x['failed']} failed; "
         f"{x['notices_sent']} notices sent"
         + (f", {x['notices_failed']} failed for good (see arrears status)" if x["notices_failed"] else ""))
    for e in [*result["errors"], *x["errors"]]:
        echo(f"warning: {e}", err=True)
