"""Planning and running: ``plan`` and ``run``, and what the daemon, the demo and the ``--now`` options share:
one tick plus one executor pass (:func:`run_once`), the instance lock, the configuration check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from agent.cli.app import (
    CliError,
    CliState,
    all_resolved,
    at_option,
    echo,
    emit_json,
    emit_json_array,
    get_state,
    iso,
    json_option,
    session,
    set_now,
    table,
)
from agent.config import ConfigError

if TYPE_CHECKING:
    import threading

    from agent.agents import AgentRegistration
    from agent.claims import Claims
    from agent.lock import AgentLock
    from agent.notices import Templates
    from connectors.fleet import Fleet, Job, JobResult, Progress

__all__ = [
    "LazyFleet",
    "Working",
    "agent_lock",
    "apply_at_once",
    "check_config",
    "checked_templates",
    "plan_command",
    "run_command",
    "run_once",
]


@click.command("plan")
@at_option
@json_option
@click.pass_context
def plan_command(ctx: click.Context, at: datetime | None, as_json: bool) -> None:
    """What `run` would do now (only the accounts that are due), changing nothing."""
    from agent.tick import plan

    state = get_state(ctx)
    now = set_now(state, at)
    with session(state, write=False) as s:
        items, errors = plan(s, state.policy, now)
    for e in errors:
        echo(f"warning: {e}", err=True)
    if as_json:
        emit_json_array(i.as_dict() for i in items)
        return
    if not items:
        echo(f"nothing to do at {iso(now)}")
        return
    table(f"plan at {iso(now)}", ["account", "stage", "action", "due at", "reason"],
           [[i.account, i.stage, i.action, iso(i.due_at), i.reason] for i in items])



class LazyFleet:
    """The fleet of inventory.yaml, built (connections and all) only when host jobs exist; the inventory
    itself is read and checked at once, so an invalid one stops the command before it changes anything."""

    def __init__(self, state: CliState) -> None:
        self.state = state
        self.inventory = state.inventory
        self._fleet: Fleet | None = None

    def _get(self) -> Fleet:
        if self._fleet is None:
            from connectors.runner import InventoryFleet

            if self.inventory is None:
                path = self.state.config.inventory_path
                raise ConfigError(f"{path}: no inventory; host jobs cannot run without it")
            self._fleet = InventoryFleet(self.inventory)
        return self._fleet

    def apply(self, jobs: list[Job], *, progress: Progress | None = None) -> dict[str, JobResult]:
        return self._get().apply(jobs, progress=progress)

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()


@dataclass
class Working:
    """The agent this process is while it works: its instance lock, its row in ``agents`` (heartbeat,
    lease; :mod:`agent.agents`) and how it claims work (:mod:`agent.claims`)."""

    name: str
    lock: AgentLock | None
    registration: AgentRegistration | None
    claims: Claims

    def verify(self) -> None:
        """Before a tick: the instance lock is still held (taken again after a lost database session)."""
        if self.lock is not None:
            self.lock.verify()

    def ticked(self, summary: dict[str, Any]) -> None:
        if self.registration is not None:
            x = summary["executor"]
            self.registration.ticked({"now": summary["now"], "accounts": summary["accounts"],
                                      "measures": len(summary["measures"]), "taken": len(x["taken"]),
                                      "claimed": x["claimed"], "done": x["done"], "reclaimed": x["reclaimed"],
                                      "notices_sent": x["notices_sent"]})


def run_once(state: CliState, now: datetime, *, fleet: Fleet | None = None,
             sole_worker: bool = False, stop: threading.Event | None = None,
             agent: Working | None = None) -> dict[str, Any]:
    """One tick and one executor pass at ``now`` (also used by the daemon and the demo).

    ``agent``: the agent this process is (:func:`agent_lock`); its claims are made under its name and
    its tick is recorded. Without one, ``sole_worker``: the caller holds the database's instance lock
    (see :mod:`agent.lock`).
    ``stop``: once set, the executor finishes the batches in flight and claims nothing new.
    """
    from agent.executor import TemplateComposer, execute
    from agent.notices import make_notifier
    from agent.tick import tick

    policy = state.policy
    settings = state.settings
    notice_settings = state.notice_settings
    notifier = composer = None
    templates = checked_templates(state)
    if notice_settings is not None and templates is not None:
        notifier = make_notifier(notice_settings, clock=lambda: now)
        composer = TemplateComposer(templates, notice_settings, policy)
    events = None
    section = policy.extra.get("events")
    if section is not None:
        from pydantic import ValidationError

        from agent.events import EventSettings, make_sink
        from agent.executor import event_sink

        try:
            sink = make_sink(EventSettings.model_validate(section))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{state.config.policy_path}: events.{where}: {err['msg']}") from None
        events = event_sink(sink) if sink is not None else None
    own_fleet = fleet is None
    active_fleet: Any = fleet if fleet is not None else LazyFleet(state)  # checks inventory.yaml up front
    try:
        with state.store.sessions() as s:
            t = tick(s, policy, now, settings)
            x = execute(s, active_fleet, notifier, now, composer=composer, settings=settings, events=events,
                        sole_worker=sole_worker, stop=stop, claims=agent.claims if agent is not None else None)
    finally:
        if own_fleet:
            active_fleet.close()
    summary = {**t.as_dict(), "executor": x.as_dict()}
    if agent is not None:
        agent.ticked(summary)
    return summary


def checked_templates(state: CliState) -> Templates | None:
    """The notice templates, each stage's template present and valid; None when notices are off."""
    from agent.notices import Templates

    if state.notice_settings is None:
        return None
    tdir = state.config.templates_dir
    templates = Templates.load(tdir if tdir.is_dir() else None)
    stage_templates = {st.template for layer in all_resolved(state) for st in layer.stages if st.template}
    if state.notice_settings.staff_email:
        from agent.outbox import STAFF_TEMPLATE

        stage_templates.add(STAFF_TEMPLATE)
    templates.require(sorted(stage_templates))
    return templates


def check_config(state: CliState) -> None:
    """Load and check policy.yaml, the notice templates and inventory.yaml; raise on the first mistake."""
    _ = state.policy, state.settings
    checked_templates(state)
    _ = state.inventory


@contextmanager
def agent_lock(state: CliState, role: str = "run", name: str | None = None) -> Iterator[Working]:
    """Be an agent of the database while inside: hold its instance lock (SQLite: the one agent; PostgreSQL:
    the agent's name, see :mod:`agent.lock`), heartbeat in ``agents`` and claim work under the name.
    ``role`` ``daemon`` marks a holder that ``payment --now`` may wake with SIGUSR1."""
    from agent.agents import AgentRegistration, agent_name
    from agent.claims import Claims
    from agent.lock import AlreadyRunning, instance_lock

    try:
        me = agent_name(role, name)
    except ValueError as exc:
        raise CliError(f"--name: {exc}") from None
    lock = instance_lock(state.config.db_url, role, me)
    if lock is None:  # an in-memory database: this process is all there is
        yield Working(me, None, None, Claims(me, state.settings, sole=True))
        return
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    try:
        registration = AgentRegistration(state.store, me, role, state.settings.lease_seconds).start()
        try:
            yield Working(me, lock, registration, Claims(me, state.settings, sole=lock.sole, registered=True))
        finally:
            registration.stop()
    finally:
        lock.release()


def apply_at_once(state: CliState, now: datetime) -> dict[str, Any]:
    """Make recorded money take effect now: wake the daemon holding the database, else run here."""
    from agent.lock import AlreadyRunning, wake_holder

    try:
        pid = wake_holder(state.config.db_url)
    except AlreadyRunning as busy:  # an agent that cannot be woken is working on the database
        who = f"pid {busy.holder}" if busy.holder else "another agent"
        return {"busy": busy.holder, "message": f"another arrears run ({who}) is working on the database; "
                                                "it takes effect on the next run"}
    if pid is not None:
        return {"daemon": pid, "message": f"the daemon (pid {pid}) runs a tick now"}
    with agent_lock(state) as agent:
        result = run_once(state, now, agent=agent)
    taken = result["executor"]["taken"]
    return {"run": result, "message": f"applied now: {len(taken)} measures taken"
            + "".join(f"; {t['account']} {t['stage']}" for t in taken)}



name_option = click.option("--name", default=None, metavar="NAME",
                           help="this agent's name (default: ARREARS_AGENT, else one made of the machine's "
                                "name; see `arrears agents`)")


@click.command("run")
@at_option
@json_option
@name_option
@click.pass_context
def run_command(ctx: click.Context, at: datetime | None, as_json: bool, name: str | None) -> None:
    """Evaluate the due accounts, queue their measures and apply them (hosts, notices)."""
    state = get_state(ctx)
    now = set_now(state, at)
    with agent_lock(state, name=name) as agent:
        result = run_once(state, now, agent=agent)
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

