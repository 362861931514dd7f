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

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

from agent.config import Config
from agent.service.results import (
    AccountRow,
    AccountView,
    ActionOutcome,
    Applied,
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

if TYPE_CHECKING:
    import threading

    from agent.lock import AgentLock
    from connectors.fleet import Fleet

__all__ = ["Amount", "Arrears", "ImportKind", "JobStatus", "Moment", "Source"]

Amount = Decimal | str
"""An amount: a ``Decimal`` or its text, in the account's currency."""

Moment = datetime | date | str
"""An instant (aware ``datetime`` or ISO-8601 text with a zone) or a date (midnight in the policy's zone)."""

Source = str | os.PathLike[str] | IO[str]
"""A stream of records: a file's path (``.jsonl`` / ``.csv``) or an open text stream of JSON lines."""

ImportKind = Literal["accounts", "ledger", "invoices"]

JobStatus = Literal["pending", "claimed", "waiting", "done", "failed", "cancelled"]


class Arrears:
    """arrears for one configuration folder (policy.yaml, inventory.yaml, templates/) and its database.

    Open it with :meth:`open`; close it (or use it as a context manager) to release the database.
    """

    def __init__(self, config: Config, *, clock: Callable[[], datetime] | None = None,
                 fleet: Fleet | None = None, actor: str | None = None) -> None:
        raise NotImplementedError

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
        raise NotImplementedError

    def close(self) -> None:
        """Release the database (and the fleet's connections this object opened)."""
        raise NotImplementedError

    def __enter__(self) -> Arrears:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def config(self) -> Config:
        """The configuration folder and database URL."""
        raise NotImplementedError

    def check(self) -> None:
        """Load and check policy.yaml, the notice templates and inventory.yaml; raise on the first mistake."""
        raise NotImplementedError

    @staticmethod
    def init(folder: str | os.PathLike[str], *, db: str | None = None, force: bool = False) -> InitResult:
        """Write the sample configuration (policy.yaml, inventory.yaml, sample data) into ``folder`` and
        create the database (``db``, default ``arrears.db`` in it); existing files are kept unless
        ``force``."""
        raise NotImplementedError

    # --- imports ----------------------------------------------------------------------------------

    def import_stream(self, kind: ImportKind, source: Source, *, now: datetime | None = None,
                      actor: str | None = None, apply_now: bool = False) -> ImportResult:
        """Import billing's ``kind`` records from ``source`` (JSON lines or CSV) in one transaction: accounts
        and invoices are created or updated, a ledger line whose ``ref`` is known is skipped. A bad record
        raises :class:`InvalidInput` (``location`` ``file:line``) and nothing is written."""
        raise NotImplementedError

    def import_records(self, kind: ImportKind, records: Iterable[Mapping[str, Any]], *,
                       now: datetime | None = None, actor: str | None = None, apply_now: bool = False,
                       source: str = "records") -> ImportResult:
        """As :meth:`import_stream`, from records already parsed (the fields of the file formats); an
        invalid one raises :class:`InvalidInput` with ``field`` ``records[N].FIELD``."""
        raise NotImplementedError

    def upsert_account(self, record: Mapping[str, Any], *, now: datetime | None = None,
                       actor: str | None = None) -> AccountView:
        """Create or update one account (the fields of an accounts file line, the importer's validation);
        answers the account as :meth:`show` does."""
        raise NotImplementedError

    def post_ledger(self, line: Mapping[str, Any], *, now: datetime | None = None, actor: str | None = None,
                    apply_now: bool = False) -> LedgerResult:
        """Post one ledger line (the fields of a ledger file line: ``account``, ``at``, ``amount``, ``kind``,
        ``method``, ``ref``). A ``ref`` the account already has returns that first line (``repeated``) and
        credits nothing twice; the same ``ref`` with a different amount or kind is :class:`Refused`."""
        raise NotImplementedError

    # --- money ------------------------------------------------------------------------------------

    def payment(self, account: str, amount: Amount, *, method: str = "card", ref: str | None = None,
                at: datetime | None = None, now: datetime | None = None, actor: str | None = None,
                apply_now: bool = False) -> PaymentResult:
        """Record a payment of ``amount`` (positive) by ``method`` paid at ``at`` (default ``now``).
        ``ref`` (billing's, unique per account; default a new one): a ref recorded before with the same
        amount and method returns that first payment (``repeated``) and credits nothing twice; with a
        different one it is :class:`Refused`. It takes effect on the next run, or at once (``apply_now``)."""
        raise NotImplementedError

    def can_spend(self, account: str, amount: Amount, *, now: datetime | None = None) -> SpendVerdict:
        """May ``account`` pay an order of ``amount`` (not negative) from its balance (the purchase gate)."""
        raise NotImplementedError

    # --- the admin's overrides --------------------------------------------------------------------

    def set_debt_date(self, account: str, when: Moment, *,
                      reason: str = "outstanding balance date set by an admin", now: datetime | None = None,
                      actor: str | None = None) -> OverrideResult:
        """The debt episode counts from ``when`` (it replaces an earlier outstanding-balance date)."""
        raise NotImplementedError

    def exempt(self, account: str, until: Moment, *, reason: str, now: datetime | None = None,
               actor: str | None = None) -> OverrideResult:
        """Exempt ``account`` from automatic measures until ``until`` (in the future)."""
        raise NotImplementedError

    def guarantee(self, account: str, amount: Amount, *, days: int | None = None,
                  reason: str = "guaranteed payment", now: datetime | None = None,
                  actor: str | None = None) -> OverrideResult:
        """A guaranteed payment: temporary credit of ``amount`` for ``days`` (default the policy's maximum),
        within the policy's limits (over them it is :class:`Refused`)."""
        raise NotImplementedError

    # --- reads ------------------------------------------------------------------------------------

    def show(self, account: str, *, now: datetime | None = None) -> AccountView:
        """The account now: state, balance, holds, episode, stages taken, next measure, waiting work."""
        raise NotImplementedError

    def explain(self, account: str, *, now: datetime | None = None) -> Explanation:
        """Why the account is where it is: triggers, thresholds, inputs, which policy layer set what."""
        raise NotImplementedError

    def forecast(self, account: str | None = None, *, days: int = 30,
                 now: datetime | None = None) -> list[ForecastItem]:
        """Every measure to come in the next ``days`` days (of ``account``, else of every account), assuming
        nothing is paid and each takes effect when due; by due time, then account."""
        raise NotImplementedError

    def history(self, account: str) -> History:
        """Episodes, stages, holds, ledger, overrides, notices and the audit trail of ``account``."""
        raise NotImplementedError

    def accounts(self) -> list[AccountRow]:
        """Every account with its state, by id."""
        raise NotImplementedError

    def debtors(self, *, now: datetime | None = None, cursor: str | None = None,
                limit: int | None = None) -> Page[DebtorRow]:
        """The billing balance report: every account with a negative balance or in a debt episode, by
        balance then id; ``limit`` rows from ``cursor`` (a page's ``next_cursor``), all without one."""
        raise NotImplementedError

    def iter_debtors(self, *, now: datetime | None = None) -> Iterator[DebtorRow]:
        """The whole report of :meth:`debtors`, row by row."""
        raise NotImplementedError

    def plan(self, *, now: datetime | None = None, cursor: str | None = None,
             limit: int | None = None) -> PlanPage:
        """What :meth:`run` would do at ``now`` (the accounts due), changing nothing, paged as
        :meth:`debtors`; ``errors`` names the accounts that could not be evaluated."""
        raise NotImplementedError

    def status(self) -> StatusReport:
        """Accounts per state, outbox jobs per status, and every notice that failed for good."""
        raise NotImplementedError

    def jobs(self, *, status: JobStatus | None = None, account: str | None = None, cursor: str | None = None,
             limit: int | None = None) -> Page[JobView]:
        """Outbox jobs (of ``account``; with ``status``), by id; paged as :meth:`debtors`."""
        raise NotImplementedError

    def notice_fields(self, account: str, *, now: datetime | None = None) -> Mapping[str, Any] | None:
        """The fields a notice template sees for ``account`` (None when there is no such account)."""
        raise NotImplementedError

    # --- manual actions ---------------------------------------------------------------------------

    def suspend(self, account: str, *, reason: str, now: datetime | None = None, actor: str | None = None,
                dry_run: bool = False, apply_now: bool = False,
                idempotency_key: str | None = None) -> ActionOutcome:
        """Suspend ``account`` by hand: an admin hold that payments do not lift, applied on every host; once
        applied, the billing address gets the policy's suspension notice while it is in debt, else
        ``admin_suspended``."""
        raise NotImplementedError

    def resume(self, account: str, *, reason: str | None = None, grace_days: int | None = None,
               now: datetime | None = None, actor: str | None = None, dry_run: bool = False,
               apply_now: bool = False, idempotency_key: str | None = None) -> ActionOutcome:
        """Lift the admin hold of ``account``; :class:`Refused` while it is in debt unless ``grace_days``
        records a promise to pay within that many days."""
        raise NotImplementedError

    def delete(self, account: str, *, reason: str | None = None, now: datetime | None = None,
               actor: str | None = None, dry_run: bool = False, apply_now: bool = False,
               idempotency_key: str | None = None) -> ActionOutcome:
        """Delete ``account`` on every host (archive -> verify -> remove); recorded deleted once every host
        did, then the policy's deletion notice (in debt) or ``admin_deleted`` is sent."""
        raise NotImplementedError

    def restore(self, account: str, *, reason: str | None = None, now: datetime | None = None,
                actor: str | None = None, dry_run: bool = False, apply_now: bool = False,
                idempotency_key: str | None = None) -> ActionOutcome:
        """Restore a deleted ``account`` from its archives; it comes back suspended (admin hold)."""
        raise NotImplementedError

    def mail(self, *, template: str, stage: str | None = None, now: datetime | None = None,
             actor: str | None = None, dry_run: bool = False, apply_now: bool = False) -> MailOutcome:
        """Mass mail ``template`` to every debtor's billing address (only those whose last stage taken is
        ``stage``) through the notices outbox: once per account, template and day."""
        raise NotImplementedError

    def reconcile(self, *, fix: bool = False, now: datetime | None = None, actor: str | None = None,
                  dry_run: bool = False, apply_now: bool = False) -> ReconcileOutcome:
        """Read every host's facts and report the placements whose real state differs from the recorded one;
        ``fix`` queues the jobs that bring the hosts back (applied at once with ``apply_now``)."""
        raise NotImplementedError

    def move_resource(self, source: str, target: str, *, service: str, host: str, reason: str,
                      now: datetime | None = None, actor: str | None = None,
                      dry_run: bool = False) -> MoveResult:
        """Give ``source``'s ``service`` on ``host`` (and the facts saved to restore it) to ``target``;
        audited on both; :class:`Refused` while either has an action in progress."""
        raise NotImplementedError

    # --- runs -------------------------------------------------------------------------------------

    def run(self, *, now: datetime | None = None, stop: threading.Event | None = None,
            locked: bool = False) -> RunSummary:
        """One tick and one executor pass at ``now``: evaluate the due accounts, queue their measures and
        apply them (hosts, notices). It takes the database's instance lock (:class:`Busy` when another run
        holds it) unless the caller holds it already (``locked``, see :meth:`lock`). ``stop``: once set,
        the executor finishes the batches in flight and claims nothing new."""
        raise NotImplementedError

    def apply_at_once(self, *, now: datetime | None = None) -> Applied:
        """Make what was recorded take effect now: wake the daemon holding the database, else run here."""
        raise NotImplementedError

    def lock(self, role: str = "run") -> AbstractContextManager[AgentLock | None]:
        """Hold the database's instance lock (one agent works on it at a time; :class:`Busy` otherwise).
        ``role`` ``daemon`` marks a holder that ``apply_now`` wakes. Yields the lock (None in memory)."""
        raise NotImplementedError
