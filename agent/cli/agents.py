"""``arrears agents``: the agents working on this database, their heartbeats, last ticks and claims."""

from __future__ import annotations

import click

from agent.cli.app import api, echo, emit_json, json_option, table

__all__ = ["agents"]


@click.command()
@json_option
@click.pass_context
def agents(ctx: click.Context, as_json: bool) -> None:
    """The agents working on this database: their last heartbeat and tick, the jobs they hold claimed and the
    hosts whose batch they run.

    An agent is `working` while its lease lasts (its heartbeat renews it), `stopped` once it stopped
    cleanly, and `lease ended` when it stopped beating: the others then take its claims over.
    """
    svc, _ = api(ctx)
    rows = svc.agents()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        echo("no agent has worked on this database yet")
        return
    table("agents", ["name", "role", "machine", "pid", "state", "seen", "last tick", "ticks", "claims", "hosts"],
          [[r["name"], r["role"], r["machine"], r["pid"], r["state"], f"{r['seen_seconds_ago']} s ago",
            r["last_tick_at"], r["ticks"], r["claims"], len(r["hosts"])] for r in rows])
