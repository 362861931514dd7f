"""Running: one tick plus one executor pass (:func:`run_once`), wired from the configuration (notices,
templates, events, the fleet); the database's instance lock; and making recorded changes take effect at
once (:func:`apply_at_once`: wake the daemon, else run here). The daemon, the demo, ``run`` and every
``--now`` go through these."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.config import ConfigError
from agent.service.errors import Busy, InvalidInput

if TYPE_CHECKING:
    import threading

    from agent.agents import AgentRegistration
    from agent.claims import Claims
    from agent.lock import AgentLock
    from agent.notices import Templates
    from agent.service.arrears import Arrears
    from agent.service.results import Applied, RunSummary
    from connectors.fleet import Fleet, Job, JobResult, Progress

__all__ = ["LazyFleet", "Working", "apply_at_once", "check_config", "checked_templates", "instance_lock",
           "run_once", "run_summary"]


class LazyFleet:
    """The fleet of inventory.yaml, built (connections and all) only when host jobs exist; the inventory
    itself is read and checked at once, so an invalid one stops the call before it changes anything."""

    def __init__(self, svc: Arrears) -> None:
        self.svc = svc
        self.inventory = svc.inventory
        self._fleet: Fleet | None = None

    def _get(self) -> Fleet:
        if self._fleet is None:
            from connectors.runner import InventoryFleet

            if self.inventory is None:
                path = self.svc.config.inventory_path
                raise ConfigError(f"{path}: no inventory; host jobs cannot run without it")
            self._fleet = InventoryFleet(self.inventory)
        return self._fleet

    def apply(self, jobs: list[Job], *, progress: Progress | None = None) -> dict[str, JobResult]:
        return self._get().apply(jobs, progress=progress)

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()


def checked_templates(svc: Arrears) -> Templates | None:
    """The notice templates, each stage's template present and valid; None when notices are off. Loaded
    and checked once per service, as policy.yaml is: an agent checks them before it starts and each of its
    runs uses them as checked."""
    if svc._templates is None:
        svc._templates = (_load_templates(svc),)
    return svc._templates[0]


def _load_templates(svc: Arrears) -> Templates | None:
    from agent.notices import Templates

    if svc.notice_settings is None:
        return None
    tdir = svc.config.templates_dir
    templates = Templates.load(tdir if tdir.is_dir() else None)
    stage_templates = {st.template for layer in svc.all_resolved() for st in layer.stages if st.template}
    if svc.notice_settings.staff_email:
        from agent.outbox import STAFF_TEMPLATE

        stage_templates.add(STAFF_TEMPLATE)
    templates.require(sorted(stage_templates))
    return templates


def check_config(svc: Arrears) -> None:
    """Load and check policy.yaml, the notice templates and inventory.yaml; raise on the first mistake."""
    _ = svc.policy, svc.settings
    checked_templates(svc)
    _ = svc.inventory


def _events(svc: Arrears) -> Any:
    section = svc.policy.extra.get("events")
    if section is None:
        return None
    from pydantic import ValidationError

    from agent.events import EventSettings, make_sink
    from agent.executor import event_sink

    try:
        sink = make_sink(EventSettings.model_validate(section))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{svc.config.policy_path}: events.{where}: {err['msg']}") from None
    return event_sink(sink) if sink is not None else None


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


YOUNG_COLLECTION_EVERY = 50_000  # allocations between two collections of the youngest generation, during a run


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The cyclic collector's youngest generation collected every :data:`YOUNG_COLLECTION_EVERY` allocations
    instead of every 700 while inside: a tick and an executor pass allocate rows, snapshots and messages a
    chunk at a time, which at 700 meant about 1,600 collections (each walking the chunk's live objects) for
    10,000 due accounts. Reference counting still frees what is not in a cycle at once."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], YOUNG_COLLECTION_EVERY), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def run_once(svc: Arrears, now: datetime, *, fleet: Fleet | None = None, sole_worker: bool = False,
             stop: threading.Event | None = None, agent: Working | None = None) -> dict[str, Any]:
    """One tick and one executor pass at ``now``, as the JSON of :class:`RunSummary`.

    ``fleet``: the hosts (default the service's, else a :class:`LazyFleet` of inventory.yaml).
    ``agent``: the agent this process is (:func:`instance_lock`); its claims are made under its name and
    its tick is recorded. Without one, ``sole_worker``: the caller holds the database's instance lock
    (see :mod:`agent.lock`).
    ``stop``: once set, the executor finishes the batches in flight and claims nothing new.
    """
    from agent.executor import TemplateComposer, execute
    from agent.notices import make_notifier
    from agent.tick import tick

    policy = svc.policy
    settings = svc.settings
    notice_settings = svc.notice_settings
    notifier = composer = None
    templates = checked_templates(svc)
    if notice_settings is not None and templates is not None:
        notifier = make_notifier(notice_settings, clock=lambda: now)
        composer = TemplateComposer(templates, notice_settings, policy)
    events = _events(svc)
    fleet = fleet if fleet is not None else svc.fleet
    own_fleet = fleet is None
    active_fleet: Any = fleet if fleet is not None else LazyFleet(svc)  # checks inventory.yaml up front
    try:
        with fewer_collections(), svc.store.sessions() as s:
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


def run_summary(result: dict[str, Any]) -> RunSummary:
    """:func:`run_once`'s JSON as the typed record."""
    from agent.instants import parse_instant
    from agent.service.results import RunSummary

    return RunSummary(now=parse_instant(result["now"]), accounts=result["accounts"],
                      episodes_started=result["episodes_started"], episodes_ended=result["episodes_ended"],
                      measures=result["measures"], resumes=result["resumes"], jobs=result["jobs"],
                      stale=result["stale"], errors=result["errors"], executor=result["executor"])


@contextmanager
def instance_lock(svc: Arrears, role: str = "run", name: str | None = None) -> Iterator[Working]:
    """Be an agent of the database while inside: hold its instance lock (SQLite: the one agent; PostgreSQL:
    the agent's name, see :mod:`agent.lock`), heartbeat in ``agents`` and claim work under the name.
    ``role`` ``daemon`` marks a holder that ``apply_now`` may wake with SIGUSR1. :class:`Busy` when the
    lock is held; :class:`InvalidInput` (field ``name``) for a name that cannot be one."""
    from agent.agents import AgentRegistration, agent_name
    from agent.claims import Claims
    from agent.lock import AlreadyRunning
    from agent.lock import instance_lock as make_lock

    try:
        me = agent_name(role, name)
    except ValueError as exc:
        raise InvalidInput(f"name: {exc}", "name") from None
    check_config(svc)  # a mistake in the configuration stops it before it is an agent (its row is a change)
    lock = make_lock(svc.config.db_url, role, me)
    if lock is None:  # an in-memory database: this process is all there is
        yield Working(me, None, None, Claims(me, svc.settings, sole=True))
        return
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise Busy(str(exc), exc.holder) from None
    try:
        registration = AgentRegistration(svc.store, me, role, svc.settings.lease_seconds).start()
        try:
            yield Working(me, lock, registration, Claims(me, svc.settings, sole=lock.sole, registered=True))
        finally:
            registration.stop()
    finally:
        lock.release()


def apply_at_once(svc: Arrears, now: datetime) -> Applied:
    """Make recorded changes take effect now: wake the daemon holding the database, else run here."""
    from agent.lock import AlreadyRunning, wake_holder
    from agent.service.results import Applied

    try:
        pid = wake_holder(svc.config.db_url)
    except AlreadyRunning as busy:  # an agent that cannot be woken is working on the database
        who = f"pid {busy.holder}" if busy.holder else "another agent"
        return Applied(how="busy", pid=busy.holder, message=f"another arrears run ({who}) is working on the "
                                                            "database; it takes effect on the next run")
    if pid is not None:
        return Applied(how="daemon", pid=pid, message=f"the daemon (pid {pid}) runs a tick now")
    with instance_lock(svc) as agent:
        result = run_once(svc, now, agent=agent)
    taken = result["executor"]["taken"]
    return Applied(how="run", run=run_summary(result), message=f"applied now: {len(taken)} measures taken"
                   + "".join(f"; {t['account']} {t['stage']}" for t in taken))
