"""The Python API: :class:`Arrears`, one object per configuration folder and database, through which every
operation goes (the CLI, the daemon and the HTTP API call it; so can a billing system embedding arrears).

Conventions of every method:

- ``now``: the moment the call acts at (the CLI's ``--at``; aware, any zone); default the service's clock
  (the real one unless :meth:`Arrears.open` was given ``clock``).
- ``actor``: who does it, named in the audit log; default the service's ``actor`` (the login name).
- ``apply_now``: make the change take effect at once: wake the daemon holding the database, else run a tick
  and an executor pass here (see :meth:`Arrears.apply_at_once`); without it, on the next run.
- ``dry_run``: do everything but write (the answer says what would be done).
- ``idempotency_key``: the first call with a key does the work and stores its answer; a later call with the
  same key (and the same operation and account) returns that answer and does nothing.
- Amounts are ``Decimal`` or their text (``"12.50"``), checked against the account's currency; instants
  are aware ``datetime`` or ISO-8601 text with a zone; a date alone is midnight in the policy's time zone.
- Answers are :mod:`agent.service.results` records; errors are :mod:`agent.service.errors`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from agent.config import AgentSettings, Config, ConfigError, agent_settings, discover, load_policy_file
from agent.service import running, values
from agent.service.errors import InvalidInput, NotFound
from agent.service.values import wall_clock
from connectors.validate import unpaired_surrogate

if TYPE_CHECKING:
    import threading

    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from agent.notices import NoticeSettings, Templates
    from agent.planning import Layered
    from agent.service.results import (
        AccountRow,
        AccountView,
        ActionOutcome,
        Applied,
        Backlog,
        DebtorRow,
        Explanation,
        ForecastItem,
        History,
        ImportResult,
        InitResult,
        JobView,
        LedgerResult,
        MailOutcome,
        MoveResult,
        OverrideResult,
        Page,
        PaymentResult,
        PlanPage,
        ReconcileOutcome,
        RunSummary,
        SpendVerdict,
        StatusReport,
    )
    from agent.store.db import Store
    from connectors.fleet import Fleet
    from connectors.inventory import Inventory
    from policy.loader import PolicySet
    from policy.model import ResolvedPolicy

__all__ = ["Amount", "Arrears", "ImportKind", "JobStatus", "Moment", "Source"]

Amount = Decimal | str
"""An amount: a ``Decimal`` or its text, in the account's currency."""

Moment = datetime | date | str
"""An instant (aware ``datetime`` or ISO-8601 text with a zone) or a date (midnight in the policy's zone)."""

Source = str | os.PathLike[str] | IO[str]
"""A stream of records: a file's path (``.jsonl`` / ``.csv``) or an open text stream of JSON lines."""

ImportKind = Literal["accounts", "ledger", "invoices"]

JobStatus = Literal["pending", "claimed", "waiting", "done", "failed", "cancelled"]


P = ParamSpec("P")
R = TypeVar("R")


def _translated(call: Callable[P, R]) -> Callable[P, R]:
    """The store's "no such account" as :class:`NotFound` (the other refusals are raised as the service's
    own where they happen), and a text argument holding half of a surrogate pair (what an invalid UTF-8
    command-line word or a ``"\\ud800"`` in JSON decodes to, which no database stores) as
    :class:`InvalidInput` naming the argument."""
    names = call.__code__.co_varnames[:call.__code__.co_argcount]

    @functools.wraps(call)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        for name, value in (*zip(names, args, strict=False), *kwargs.items()):
            if type(value) is str and not value.isascii() and (half := unpaired_surrogate(value)) is not None:
                raise InvalidInput(f"{name}: {half}", name)
        try:
            return call(*args, **kwargs)
        except LookupError as exc:
            from agent.store.repo import UnknownAccount

            if isinstance(exc, UnknownAccount):
                raise NotFound("account", exc.account) from None
            raise

    return translated


class Arrears:
    """arrears for one configuration folder (policy.yaml, inventory.yaml, templates/) and its database.

    Open it with :meth:`open`; close it (or use it as a context manager) to release the database. The
    configuration is read when first needed and kept: a changed policy.yaml is seen by a new object.
    """

    def __init__(self, config: Config, *, clock: Callable[[], datetime] | None = None,
                 fleet: Fleet | None = None, actor: str | None = None) -> None:
        self._config = config
        self._clock = clock if clock is not None else wall_clock
        self.fleet = fleet
        """The hosts calls work on (None: a fleet of inventory.yaml, built when host jobs exist)."""
        self.actor = actor
        """The default actor of every write (None: the login name)."""
        self._store: Store | None = None
        self._policy: PolicySet | None = None
        self._inventory: tuple[Inventory | None] | None = None
        self._templates: tuple[Templates | None] | None = None  # running.checked_templates, once

    @classmethod
    def open(cls, config: str | os.PathLike[str] | Config | None = None, *, db: str | None = None,
             clock: Callable[[], datetime] | None = None, fleet: Fleet | None = None,
             actor: str | None = None) -> Arrears:
        """arrears for the configuration folder ``config`` (default ``$ARREARS_CONFIG``, else the current
        directory) and the database ``db`` (default ``$ARREARS_DB``, else ``arrears.db`` in the folder).
        ``config`` may also be a database URL (``sqlite:///...``, ``postgresql://...``), the folder then
        found as without it. ``clock``: the default ``now`` of every call (default: the real clock).
        ``fleet``: the hosts to work on (default: built from inventory.yaml when host jobs exist).
        ``actor``: the default actor of every write (default: the login name)."""
        if not isinstance(config, Config):
            if isinstance(config, str) and "://" in config:
                config, db = None, db or config
            config = discover(config, db)
        return cls(config, clock=clock, fleet=fleet, actor=actor)

    def close(self) -> None:
        """Release the database (and the fleet's connections this object opened)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Arrears:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def config(self) -> Config:
        """The configuration folder and database URL."""
        return self._config

    def check(self) -> None:
        """Load and check policy.yaml, the notice templates and inventory.yaml; raise on the first mistake."""
        running.check_config(self)

    @staticmethod
    def init(folder: str | os.PathLike[str], *, db: str | None = None, force: bool = False) -> InitResult:
        """Write the sample configuration (policy.yaml, inventory.yaml, sample data) into ``folder`` and
        create the database (``db``, default ``arrears.db`` in it); existing files are kept unless
        ``force``."""
        from agent.service import intake

        return intake.init(Path(folder), db, force)

    # --- what the calls share: the configuration, read once, and the database -------------------------

    def warm_up(self) -> None:
        """Open the database, load the policy and import what evaluating accounts uses, now rather than
        in the first call that needs them (the CLI's ``plan`` does, so that its start-up ends before the
        work begins). Changes nothing."""
        import importlib

        for module in ("agent.service.plans", "agent.planning"):
            importlib.import_module(module)
        _ = self.store, self.policy

    @property
    def store(self) -> Store:
        """The database (opened, and migrated to the newest schema, when first needed)."""
        if self._store is None:
            from agent.store.db import open_store

            self._store = open_store(self._config.db_url)
        return self._store

    @property
    def policy(self) -> PolicySet:
        """policy.yaml, loaded and checked."""
        if self._policy is None:
            self._policy = load_policy_file(self._config)
        return self._policy

    @property
    def has_policy(self) -> bool:
        """Whether the folder has a policy.yaml (an import checks currencies against it only then)."""
        return self._policy is not None or self._config.policy_path.is_file()

    @property
    def inventory(self) -> Inventory | None:
        """inventory.yaml of the configuration folder, loaded and checked once; None when there is none.

        Every call that works on hosts reads it before it changes anything, so an invalid inventory stops
        the call with the located error (``file:line: field: ...``) before a job is claimed."""
        if self._inventory is None:
            from connectors.inventory import load_inventory_file

            path = self._config.inventory_path
            self._inventory = (load_inventory_file(path) if path.is_file() else None,)
        return self._inventory[0]

    @property
    def settings(self) -> AgentSettings:
        """The ``agent:`` section of policy.yaml."""
        return agent_settings(self.policy.extra.get("agent"), str(self._config.policy_path))

    @property
    def notice_settings(self) -> NoticeSettings | None:
        """The ``notices:`` section of policy.yaml (its spool folder made absolute); None without one."""
        section = self.policy.extra.get("notices")
        if section is None:
            return None
        from pydantic import ValidationError

        from agent.notices import NoticeSettings

        data = dict(section)
        spool = data.get("spool_dir")
        if isinstance(spool, str) and not Path(spool).is_absolute():
            data["spool_dir"] = str(self._config.folder / spool)
        try:
            return NoticeSettings.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{self._config.policy_path}: notices.{where}: {err['msg']}") from None

    def resolve(self, acc: Layered) -> ResolvedPolicy:
        """The policy as it applies to the account ``acc`` (its plan, reseller and own layer)."""
        from agent.planning import resolve_for

        return resolve_for(self.policy, acc)

    def all_resolved(self) -> list[ResolvedPolicy]:
        """The policy as every layer (defaults, each reseller, each plan) resolves it."""
        ps = self.policy
        out = [ps.resolve("-", None, None)]
        out += [ps.resolve("-", None, r) for r in ps.resellers]
        out += [ps.resolve("-", p, None) for p in ps.plans]
        return out

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session: committed at the end for writes (rolled back on an error), always rolled back for
        reads."""
        s = self.store.sessions()
        try:
            if write:
                with s.begin():
                    yield s
            else:
                yield s
        finally:
            s.rollback()
            s.close()

    def now(self, now: datetime | None = None) -> datetime:
        """A call's moment: ``now`` (aware, as UTC), else the service's clock."""
        return values.check_instant(now, what="now") if now is not None else self._clock()

    def actor_of(self, actor: str | None) -> str:
        """A write's actor: ``actor``, else the service's, else the login name."""
        return values.actor_name(actor or self.actor)

    # --- imports ----------------------------------------------------------------------------------

    @_translated
    def import_stream(self, kind: ImportKind, source: Source, *, now: datetime | None = None,
                      actor: str | None = None, apply_now: bool = False) -> ImportResult:
        """Import billing's ``kind`` records from ``source`` (JSON lines or CSV) in one transaction: accounts
        and invoices are created or updated, a ledger line whose ``ref`` is known is skipped. A bad record
        raises :class:`InvalidInput` (``location`` ``file:line``) and nothing is written."""
        from agent.service import intake

        return intake.import_stream(self, kind, source, self.now(now), actor, apply_now)

    @_translated
    def import_records(self, kind: ImportKind, records: Iterable[Mapping[str, Any]], *,
                       now: datetime | None = None, actor: str | None = None, apply_now: bool = False,
                       source: str = "records") -> ImportResult:
        """As :meth:`import_stream`, from records already parsed (the fields of the file formats); an
        invalid one raises :class:`InvalidInput` with ``field`` ``records[N].FIELD``."""
        from agent.service import intake

        return intake.import_records(self, kind, records, self.now(now), actor, apply_now, source)

    @_translated
    def upsert_account(self, record: Mapping[str, Any], *, now: datetime | None = None,
                       actor: str | None = None) -> AccountView:
        """Create or update one account (the fields of an accounts file line, the importer's validation);
        answers the account as :meth:`show` does."""
        from agent.service import intake, reads

        moment = self.now(now)
        return reads.show(self, intake.upsert_account(self, record, moment, actor), moment)

    @_translated
    def post_ledger(self, line: Mapping[str, Any], *, now: datetime | None = None, actor: str | None = None,
                    apply_now: bool = False) -> LedgerResult:
        """Post one ledger line (the fields of a ledger file line: ``account``, ``at``, ``amount``, ``kind``,
        ``method``, ``ref``). A ``ref`` the account already has returns that first line (``repeated``) and
        credits nothing twice; the same ``ref`` with a different amount or kind is :class:`Refused`."""
        from agent.service import money

        return money.post_ledger(self, line, now=self.now(now), actor=actor, apply_now=apply_now)

    # --- money ------------------------------------------------------------------------------------

    @_translated
    def payment(self, account: str, amount: Amount, *, method: str = "card", ref: str | None = None,
                at: datetime | None = None, now: datetime | None = None, actor: str | None = None,
                apply_now: bool = False) -> PaymentResult:
        """Record a payment of ``amount`` (positive) by ``method`` paid at ``at`` (default ``now``).
        ``ref`` (billing's, unique per account; default a new one): a ref recorded before with the same
        amount and method returns that first payment (``repeated``) and credits nothing twice; with a
        different one it is :class:`Refused`. It takes effect on the next run, or at once (``apply_now``; not
        again for a repeat)."""
        from agent.service import money

        return money.payment(self, account, amount, method=method, ref=ref, at=at, now=self.now(now), actor=actor,
                             apply_now=apply_now)

    @_translated
    def can_spend(self, account: str, amount: Amount, *, now: datetime | None = None,
                  connection: Connection | None = None) -> SpendVerdict:
        """May ``account`` pay an order of ``amount`` (not negative) from its balance (the purchase gate).
        ``connection``: an open connection of this database to read on (the HTTP API's purchase gate keeps
        one open); by default one is taken from the pool for the call."""
        from agent.service import money

        return money.can_spend(self, account, amount, self.now(now), connection)

    # --- the admin's overrides --------------------------------------------------------------------

    @_translated
    def set_debt_date(self, account: str, when: Moment, *,
                      reason: str = "outstanding balance date set by an admin", now: datetime | None = None,
                      actor: str | None = None) -> OverrideResult:
        """The debt episode counts from ``when`` (it replaces an earlier outstanding-balance date)."""
        from agent.service import money

        return money.set_debt_date(self, account, when, reason=reason, now=self.now(now), actor=actor)

    @_translated
    def exempt(self, account: str, until: Moment, *, reason: str, now: datetime | None = None,
               actor: str | None = None) -> OverrideResult:
        """Exempt ``account`` from automatic measures until ``until`` (in the future)."""
        from agent.service import money

        return money.exempt(self, account, until, reason=reason, now=self.now(now), actor=actor)

    @_translated
    def guarantee(self, account: str, amount: Amount, *, days: int | None = None,
                  reason: str = "guaranteed payment", now: datetime | None = None,
                  actor: str | None = None) -> OverrideResult:
        """A guaranteed payment: temporary credit of ``amount`` for ``days`` (default the policy's maximum),
        within the policy's limits (over them it is :class:`Refused`)."""
        from agent.service import money

        return money.guarantee(self, account, amount, days=days, reason=reason, now=self.now(now), actor=actor)

    # --- reads ------------------------------------------------------------------------------------

    @_translated
    def show(self, account: str, *, now: datetime | None = None) -> AccountView:
        """The account now: state, balance, holds, episode, stages taken, next measure, waiting work."""
        from agent.service import reads

        return reads.show(self, account, self.now(now))

    @_translated
    def explain(self, account: str, *, now: datetime | None = None) -> Explanation:
        """Why the account is where it is: triggers, thresholds, inputs, which policy layer set what."""
        from agent.service import reads

        return reads.explain(self, account, self.now(now))

    @_translated
    def forecast(self, account: str | None = None, *, days: int = 30,
                 now: datetime | None = None) -> list[ForecastItem]:
        """Every measure to come in the next ``days`` days (of ``account``, else of every account), assuming
        nothing is paid and each takes effect when due; by due time, then account."""
        from agent.service import reads

        return reads.forecast(self, account, days, self.now(now))

    @_translated
    def history(self, account: str) -> History:
        """Episodes, stages, holds, ledger, overrides, notices and the audit trail of ``account``."""
        from agent.service import reads

        return reads.history(self, account)

    @_translated
    def accounts(self) -> list[AccountRow]:
        """Every account with its state, by id."""
        from agent.service import reads

        return reads.accounts(self)

    @_translated
    def debtors(self, *, now: datetime | None = None, cursor: str | None = None,
                limit: int | None = None) -> Page[DebtorRow]:
        """The billing balance report: every account with a negative balance or in a debt episode, by
        balance then id; ``limit`` rows from ``cursor`` (a page's ``next_cursor``), all without one."""
        from agent.service import reads

        return reads.debtors(self, self.now(now), cursor, limit)

    def iter_debtors(self, *, now: datetime | None = None) -> Iterator[DebtorRow]:
        """The whole report of :meth:`debtors`, row by row."""
        from agent.service import reads

        return reads.iter_debtors(self, self.now(now))

    @_translated
    def plan(self, *, now: datetime | None = None, cursor: str | None = None,
             limit: int | None = None) -> PlanPage:
        """What :meth:`run` would do at ``now`` (the accounts due), changing nothing, paged as
        :meth:`debtors`; ``errors`` names the accounts that could not be evaluated."""
        from agent.service import plans

        return plans.plan(self, self.now(now), cursor, limit)

    @_translated
    def status(self) -> StatusReport:
        """Accounts per state, outbox jobs per status, and every notice that failed for good."""
        from agent.service import reads

        return reads.status(self)

    def agents(self) -> list[dict[str, Any]]:
        """The agents working on this database (``arrears agents --json``): each one's name, role, machine
        and pid, its state (``working`` while its lease lasts, ``stopped``, ``lease ended``), its last
        heartbeat and tick, the jobs it holds claimed and the hosts whose batch it runs."""
        from agent.agents import list_agents

        with self.session(write=False) as s:
            return list_agents(s)

    def backlog(self) -> Backlog:
        """Outbox jobs waiting for a later tick and notices that failed for good (the daemon's gauges)."""
        from agent.service import reads

        return reads.backlog(self)

    @_translated
    def jobs(self, *, status: JobStatus | None = None, account: str | None = None, cursor: str | None = None,
             limit: int | None = None) -> Page[JobView]:
        """Outbox jobs (of ``account``; with ``status``), by id; paged as :meth:`debtors`."""
        from agent.service import reads

        return reads.jobs(self, status, account, cursor, limit)

    @_translated
    def notice_fields(self, account: str, *, now: datetime | None = None) -> Mapping[str, Any] | None:
        """The fields a notice template sees for ``account`` (None when there is no such account)."""
        from agent.service import reads

        return reads.notice_fields(self, account, self.now(now))

    # --- manual actions ---------------------------------------------------------------------------

    @_translated
    def suspend(self, account: str, *, reason: str, now: datetime | None = None, actor: str | None = None,
                dry_run: bool = False, apply_now: bool = False,
                idempotency_key: str | None = None) -> ActionOutcome:
        """Suspend ``account`` by hand: an admin hold that payments do not lift, applied on every host; once
        applied, the billing address gets the policy's suspension notice while it is in debt, else
        ``admin_suspended``."""
        from agent.service import admin

        return admin.manual_action(self, "suspend", account, reason=reason, now=self.now(now), actor=actor,
                                    dry_run=dry_run, apply_now=apply_now, idempotency_key=idempotency_key)

    @_translated
    def resume(self, account: str, *, reason: str | None = None, grace_days: int | None = None,
               now: datetime | None = None, actor: str | None = None, dry_run: bool = False,
               apply_now: bool = False, idempotency_key: str | None = None) -> ActionOutcome:
        """Lift the admin hold of ``account``; :class:`Refused` while it is in debt unless ``grace_days``
        records a promise to pay within that many days."""
        from agent.service import admin

        return admin.manual_action(self, "resume", account, reason=reason, grace_days=grace_days, now=self.now(now),
                                    actor=actor, dry_run=dry_run, apply_now=apply_now,
                                    idempotency_key=idempotency_key)

    @_translated
    def delete(self, account: str, *, reason: str | None = None, now: datetime | None = None,
               actor: str | None = None, dry_run: bool = False, apply_now: bool = False,
               idempotency_key: str | None = None) -> ActionOutcome:
        """Delete ``account`` on every host (archive -> verify -> remove); recorded deleted once every host
        did, then the policy's deletion notice (in debt) or ``admin_deleted`` is sent."""
        from agent.service import admin

        return admin.manual_action(self, "delete", account, reason=reason, now=self.now(now), actor=actor,
                                    dry_run=dry_run, apply_now=apply_now, idempotency_key=idempotency_key)

    @_translated
    def restore(self, account: str, *, reason: str | None = None, now: datetime | None = None,
                actor: str | None = None, dry_run: bool = False, apply_now: bool = False,
                idempotency_key: str | None = None) -> ActionOutcome:
        """Restore a deleted ``account`` from its archives; it comes back suspended (admin hold)."""
        from agent.service import admin

        return admin.manual_action(self, "restore", account, reason=reason, now=self.now(now), actor=actor,
                                    dry_run=dry_run, apply_now=apply_now, idempotency_key=idempotency_key)

    @_translated
    def mail(self, *, template: str, stage: str | None = None, now: datetime | None = None,
             actor: str | None = None, dry_run: bool = False, apply_now: bool = False) -> MailOutcome:
        """Mass mail ``template`` to every debtor's billing address (only those whose last stage taken is
        ``stage``) through the notices outbox: once per account, template and day."""
        from agent.service import admin

        return admin.mass_mail(self, template=template, stage=stage, now=self.now(now), actor=actor, dry_run=dry_run,
                               apply_now=apply_now)

    @_translated
    def reconcile(self, *, fix: bool = False, now: datetime | None = None, actor: str | None = None,
                  dry_run: bool = False, apply_now: bool = False) -> ReconcileOutcome:
        """Read every host's facts and report the placements whose real state differs from the recorded one;
        ``fix`` queues the jobs that bring the hosts back (applied at once with ``apply_now``)."""
        from agent.service import admin

        return admin.reconcile(self, fix=fix, now=self.now(now), actor=actor, dry_run=dry_run, apply_now=apply_now)

    @_translated
    def move_resource(self, source: str, target: str, *, service: str, host: str, reason: str,
                      now: datetime | None = None, actor: str | None = None,
                      dry_run: bool = False) -> MoveResult:
        """Give ``source``'s ``service`` on ``host`` (and the facts saved to restore it) to ``target``;
        audited on both; :class:`Refused` while either has an action in progress."""
        from agent.service import admin

        return admin.move_resource(self, source, target, service=service, host=host, reason=reason,
                                   now=self.now(now), actor=actor, dry_run=dry_run)

    # --- runs -------------------------------------------------------------------------------------

    @_translated
    def run(self, *, now: datetime | None = None, stop: threading.Event | None = None,
            agent: running.Working | None = None, name: str | None = None) -> RunSummary:
        """One tick and one executor pass at ``now``: evaluate the due accounts, queue their measures and
        apply them (hosts, notices). It becomes an agent of the database for the run (the instance lock,
        :class:`Busy` when it is held; ``name``: the agent's name, see ``arrears agents``) unless the
        caller is one already: ``agent``, as :meth:`lock` yields it. ``stop``: once set, the executor
        finishes the batches in flight and claims nothing new."""
        moment = self.now(now)
        if agent is not None:
            return running.run_summary(running.run_once(self, moment, stop=stop, agent=agent))
        with running.instance_lock(self, name=name) as me:
            return running.run_summary(running.run_once(self, moment, stop=stop, agent=me))

    @_translated
    def apply_at_once(self, *, now: datetime | None = None) -> Applied:
        """Make what was recorded take effect now: wake the daemon holding the database, else run here."""
        return running.apply_at_once(self, self.now(now))

    def lock(self, role: str = "run", name: str | None = None) -> AbstractContextManager[running.Working]:
        """Be an agent of the database while inside: its instance lock (SQLite: one agent; PostgreSQL: one
        per name; :class:`Busy` otherwise), its heartbeat, its claims. ``role`` ``daemon`` marks a holder
        that ``apply_now`` wakes. Yields the :class:`~agent.service.running.Working` agent, which
        :meth:`run` takes as ``agent``."""
        return running.instance_lock(self, role, name)
