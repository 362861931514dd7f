"""What the Python API answers: frozen dataclasses, one per answer, typed with Python values (``Decimal``
amounts, aware UTC ``datetime`` instants).

Every answer has :meth:`Record.to_json`: the JSON-able form, exactly what the matching CLI command prints
with ``--json`` (the same keys, in the same order; amounts as strings, instants as ISO-8601 in UTC). The
HTTP API answers the same documents. A field marked ``omit`` appears in the JSON only when it is set (as
the CLI prints it only then); a field marked ``hidden`` is for Python callers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from agent.service.plans import PlannedMeasure, PlanPage
from agent.service.records import HIDDEN, OMIT, Page, Record, jsonable

__all__ = [
    "AccountRow",
    "AccountView",
    "ActionOutcome",
    "Applied",
    "AuditView",
    "Backlog",
    "DebtorRow",
    "Difference",
    "EpisodeHistory",
    "EpisodeRef",
    "Explanation",
    "FailedNotice",
    "FailedNoticeRow",
    "ForecastItem",
    "History",
    "HoldView",
    "ImportResult",
    "InitResult",
    "JobCounts",
    "JobView",
    "LedgerLineView",
    "LedgerResult",
    "MailOutcome",
    "ManualAction",
    "MoveResult",
    "NextMeasure",
    "NoticeView",
    "OverrideResult",
    "OverrideView",
    "Page",
    "PaymentResult",
    "PlacementRef",
    "PlanPage",
    "PlannedMeasure",
    "QueuedMail",
    "ReconcileOutcome",
    "Record",
    "RunSummary",
    "SpendVerdict",
    "StageHistory",
    "StageMark",
    "StatusReport",
    "jsonable",
]

# --- one account ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeRef(Record):
    id: int
    started_at: datetime
    trigger: str


@dataclass(frozen=True)
class StageMark(Record):
    """A stage taken in the open episode; ``undelivered`` (True) when its notice failed for good."""

    stage: str
    at: datetime | None
    undelivered: Literal[True] | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class NextMeasure(Record):
    stage: str
    action: str
    due_at: datetime


@dataclass(frozen=True)
class JobCounts(Record):
    """The account's outbox work waiting on one host (or ``notice`` / ``event``)."""

    pending: int = 0
    claimed: int = 0
    failed: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class ManualAction(Record):
    action: str
    since: datetime
    reason: str | None


@dataclass(frozen=True)
class FailedNotice(Record):
    stage: str
    error: str | None
    permanent: bool


@dataclass(frozen=True)
class PlacementRef(Record):
    service: str
    host: str


@dataclass(frozen=True)
class AccountView(Record):
    """``show``: the account now, with the work in flight (``arrears show --json``)."""

    id: str
    username: str | None
    billing_email: str | None
    plan: str | None
    reseller: str | None
    currency: str
    state: str
    balance: Decimal
    credit_limit: Decimal
    in_debt: bool
    holds: list[str]
    episode: EpisodeRef | None
    stages_taken: list[StageMark]
    in_flight: list[str]
    next: NextMeasure | None
    held_back: str | None
    next_check_at: datetime | None
    jobs: dict[str, JobCounts]
    manual_actions: list[ManualAction]
    failed_notices: list[FailedNotice]
    placements: list[PlacementRef]
    at: datetime


@dataclass(frozen=True)
class Explanation(Record):
    """``explain``: why the account is where it is (``arrears explain --json``). The nested parts are
    :func:`policy.explain`'s plain JSON values: ``policy`` (each field's value and the layer that set it),
    ``triggers``, ``episode``, ``holds``, ``decision``; ``sources`` maps each field to its layer."""

    account: str
    at: datetime
    now: datetime
    balance: Decimal
    in_debt: bool
    layers: list[str]
    policy: dict[str, Any]
    triggers: list[dict[str, Any]]
    episode: dict[str, Any] | None
    holds: list[dict[str, Any]]
    decision: dict[str, Any]
    sources: dict[str, str]


@dataclass(frozen=True)
class ForecastItem(Record):
    """One measure to come (``arrears forecast --json`` prints a list of these)."""

    account: str
    stage: str
    action: str
    due_at: datetime
    reason: str


@dataclass(frozen=True)
class SpendVerdict(Record):
    """``can-spend``: may the account pay an order from its balance (the purchase gate)."""

    allowed: bool
    available: Decimal
    reason: str


@dataclass(frozen=True)
class StageHistory(Record):
    stage: str
    action: str
    status: str
    queued_at: datetime | None
    at: datetime | None
    reason: str | None


@dataclass(frozen=True)
class EpisodeHistory(Record):
    id: int
    started_at: datetime
    trigger: str
    ended_at: datetime | None
    end_reason: str | None
    stages: list[StageHistory]


@dataclass(frozen=True)
class HoldView(Record):
    kind: str
    since: datetime
    released_at: datetime | None
    reason: str | None
    actor: str | None


@dataclass(frozen=True)
class LedgerLineView(Record):
    at: datetime
    amount: Decimal
    kind: str
    method: str | None
    ref: str


@dataclass(frozen=True)
class OverrideView(Record):
    kind: str
    actor: str
    reason: str
    created_at: datetime
    expires_at: datetime | None
    amount: Decimal | None
    at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NoticeView(Record):
    stage: str
    status: str
    to: str | None
    subject: str | None
    message_id: str | None
    sent_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class AuditView(Record):
    at: datetime
    actor: str
    action: str
    reason: str | None
    details: dict[str, Any] | None


@dataclass(frozen=True)
class History(Record):
    """``history``: everything that happened to the account (``arrears history --json``)."""

    account: str
    state: str
    episodes: list[EpisodeHistory]
    holds: list[HoldView]
    ledger: list[LedgerLineView]
    overrides: list[OverrideView]
    notices: list[NoticeView]
    audit: list[AuditView]


# --- reports over all accounts ---------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRow(Record):
    """One line of ``accounts list``; ``next_check_at`` is ``next tick`` for an account due at once."""

    id: str
    username: str | None
    plan: str | None
    reseller: str | None
    state: str
    next_check_at: str | None


@dataclass(frozen=True)
class DebtorRow(Record):
    """One line of the billing balance report (``arrears debtors --json`` prints a list of these)."""

    account: str
    username: str | None
    billing_email: str | None
    plan: str | None
    reseller: str | None
    currency: str
    balance: Decimal
    credit_limit: Decimal
    state: str
    in_debt: bool
    holds: list[str]
    debt_since: datetime | None
    days_in_debt: int | None
    last_stage: str | None
    next_stage: str | None
    next_due: datetime | None


@dataclass(frozen=True)
class FailedNoticeRow(Record):
    account: str
    stage: str
    to: str | None
    reply: str
    notice: str
    template: str | None
    failed_at: datetime | None
    message_id: str | None


@dataclass(frozen=True)
class StatusReport(Record):
    """``status``: accounts per state, outbox jobs per status, notices failed for good."""

    accounts: dict[str, int]
    jobs: dict[str, int]
    database: str
    failed_notices: list[FailedNoticeRow]


@dataclass(frozen=True)
class Backlog(Record):
    """What the daemon's gauges show after each tick: outbox jobs waiting for a later tick (back-off, an
    unreachable host, or left by a stop) and notices that failed for good."""

    pending_jobs: int
    failed_notices: int


@dataclass(frozen=True)
class JobView(Record):
    """One outbox job (``jobs(status="failed")``)."""

    id: int
    account: str
    kind: str
    stage: str
    action: str
    service: str | None
    host: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


# --- runs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary(Record):
    """One tick and one executor pass (``arrears run --json``). ``executor``: claimed, done, retrying,
    failed, reclaimed, notices_sent, notices_failed, taken (``{account, stage, action, at}``), errors."""

    now: datetime
    accounts: int
    episodes_started: int
    episodes_ended: int
    measures: list[dict[str, Any]]
    resumes: list[str]
    jobs: int
    stale: int
    errors: list[str]
    executor: dict[str, Any]


@dataclass(frozen=True)
class Applied(Record):
    """What applying recorded changes at once did: ``how`` is ``run`` (a tick and an executor pass ran here:
    ``run``), ``daemon`` (the daemon with ``pid`` was woken) or ``busy`` (another run, ``pid`` when known,
    works on the database: it takes effect on the next run)."""

    how: Literal["run", "daemon", "busy"]
    message: str
    pid: int | None = None
    run: RunSummary | None = None

    def to_json(self) -> dict[str, Any]:
        first: dict[str, Any] = ({"run": self.run.to_json() if self.run else None} if self.how == "run"
                                 else {self.how: self.pid})
        return {**first, "message": self.message}


# --- writes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult(Record):
    """An import (``accounts|ledger|invoices import --json``): ``file`` names the source."""

    file: str
    created: int
    updated: int
    skipped: int
    applied: Applied | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class PaymentResult(Record):
    """A payment recorded (``arrears payment --json``). ``repeated``: the ``ref`` was recorded before with
    the same amount and method, and this is that first payment (nothing was credited again)."""

    account: str
    amount: Decimal
    method: str
    ref: str
    at: datetime
    applied: Applied | None = field(default=None, metadata=OMIT)
    repeated: bool = field(default=False, metadata=HIDDEN)


@dataclass(frozen=True)
class LedgerResult(Record):
    """One ledger line posted: the line as stored (``repeated`` as for :class:`PaymentResult`)."""

    account: str
    at: datetime
    amount: Decimal
    kind: str
    method: str | None
    ref: str
    applied: Applied | None = field(default=None, metadata=OMIT)
    repeated: bool = field(default=False, metadata=HIDDEN)


@dataclass(frozen=True)
class OverrideResult(Record):
    """An admin's override recorded (``set-debt-date``, ``exempt``, ``guarantee`` with ``--json``)."""

    account: str
    kind: str
    actor: str
    reason: str
    expires_at: datetime | None
    amount: Decimal | None
    at: datetime | None


@dataclass(frozen=True)
class ActionOutcome(Record):
    """A manual action (``suspend``, ``resume``, ``delete``, ``restore`` with ``--json``): what it wrote (or
    would write in a dry run), then, when applied at once, ``applied`` / ``run`` / ``errors``, and the
    account's state after it (``state_after``, ``waiting`` jobs; not for a dry run)."""

    account: str
    action: str
    actor: str
    reason: str | None
    at: datetime
    state: str
    stage: str | None
    jobs: list[dict[str, str]]
    holds_placed: list[str]
    holds_released: list[str]
    overrides: list[dict[str, Any]]
    cancelled: int
    taken_now: bool
    notice: str | None
    notes: list[str]
    dry_run: bool
    applied: str | None = field(default=None, metadata=OMIT)
    run: dict[str, Any] | None = field(default=None, metadata=OMIT)
    errors: list[str] | None = field(default=None, metadata=OMIT)
    state_after: str | None = field(default=None, metadata=OMIT)
    waiting: int | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class QueuedMail(Record):
    account: str
    to: str | None


@dataclass(frozen=True)
class MailOutcome(Record):
    """Mass mail (``arrears mail --json``): queued, already queued today, without a billing address."""

    template: str
    date: str
    stage: str | None
    queued: list[QueuedMail]
    already: list[str]
    no_address: list[str]
    dry_run: bool
    applied: str | None = field(default=None, metadata=OMIT)
    run: dict[str, Any] | None = field(default=None, metadata=OMIT)
    errors: list[str] | None = field(default=None, metadata=OMIT)


@dataclass(frozen=True)
class Difference(Record):
    """A placement whose host does not do what the recorded state says; ``fix`` None: needs an admin."""

    account: str
    service: str
    host: str
    recorded: str
    expected: str
    observed: str
    detail: str
    fix: str | None
    facts: dict[str, str]


@dataclass(frozen=True)
class ReconcileOutcome(Record):
    """``reconcile`` (``arrears reconcile --json``). ``errors``: the placements that could not be read;
    when the repairs were applied at once, the run's errors take that key in the JSON (as the CLI prints)."""

    at: datetime
    checked: int
    differences: list[Difference]
    busy: list[str]
    errors: list[dict[str, str]]
    queued: list[dict[str, str]]
    dry_run: bool
    fix: bool
    applied: str | None = None
    run: dict[str, Any] | None = None
    run_errors: list[str] | None = None

    @property
    def unrepaired(self) -> list[Difference]:
        """The differences left as they are (all without ``fix``; those without a repair with it)."""
        return [d for d in self.differences if not self.fix or d.fix is None]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": jsonable(self.at), "checked": self.checked,
                               "differences": [d.to_json() for d in self.differences], "busy": self.busy,
                               "errors": self.errors, "queued": self.queued, "dry_run": self.dry_run,
                               "fix": self.fix}
        if self.applied is not None:
            out["applied"] = self.applied
        if self.run is not None:
            out["run"] = self.run
            out["errors"] = self.run_errors or []
        return out


@dataclass(frozen=True)
class MoveResult(Record):
    """``accounts move-resource``: the placement given from ``from`` to ``to``."""

    source: str = field(metadata={"key": "from"})
    target: str = field(metadata={"key": "to"})
    service: str
    host: str
    keys: list[str]
    resource: dict[str, Any]
    dry_run: bool


@dataclass(frozen=True)
class InitResult(Record):
    """``init``: the sample configuration written into ``folder`` and the database made ready."""

    folder: str
    database: str
    written: list[str]
    kept: list[str]
