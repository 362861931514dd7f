"""The values the evaluator reads and returns: an account snapshot, a resolved policy, a decision.

Everything here is immutable and pure. Money is :class:`~decimal.Decimal`; every ``datetime`` is
timezone-aware (UTC in snapshots; the policy's time zone only for counting calendar days).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

__all__ = [
    "AccountSnapshot",
    "Action",
    "After",
    "Decision",
    "Episode",
    "GuaranteeLimit",
    "Hold",
    "HoldKind",
    "Invoice",
    "LedgerEntry",
    "Measure",
    "Override",
    "OverrideKind",
    "Reason",
    "ResolvedPolicy",
    "Stage",
    "StageTaken",
    "TriggerHit",
    "Triggers",
    "UpcomingMeasure",
]

Action = Literal["notice", "suspend", "delete", "hook"]
HoldKind = Literal["debt", "admin", "trial"]
OverrideKind = Literal["exempt", "pause", "guarantee", "debt_date"]


# --- the resolved policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class After:
    """When a stage falls due after the previous one: whole calendar ``days`` in the policy's time
    zone (due at local midnight of ``date(previous) + days``), or an exact ``seconds`` duration.
    Both ``None`` means immediately."""

    days: int | None = None
    seconds: int | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    action: Action
    after: After = After()
    template: str | None = None
    enabled: bool = True
    hook: str | None = None


@dataclass(frozen=True)
class Triggers:
    over_limit: bool = True
    subzero_period: int = -1  # days; -1 = never
    max_delay: int | None = None  # seconds since the last payment while in debt (DeltaSIB MaxDelay)
    unpaid_total_over: Decimal | None = None
    invoice_expiration: int | None = None  # days after an invoice's due date
    stop_grace: int | None = None  # further days of grace after expiration
    trial: bool = True


@dataclass(frozen=True)
class GuaranteeLimit:
    limit: Decimal = Decimal(0)
    days: int = 0


@dataclass(frozen=True)
class ResolvedPolicy:
    """The policy for one account after layering global -> reseller -> plan -> account.

    ``sources`` maps each field name (``credit_limit``, ``triggers.max_delay``, ``stages`` ...) to the
    layer that set it (``defaults``, ``reseller:visp-a``, ``plan:home``, ``account:42``).
    """

    timezone: str
    currency: str
    credit_limit: Decimal
    triggers: Triggers
    stages: tuple[Stage, ...]
    resume_on_payment: bool | frozenset[str] = True
    pay_with_negative: bool = False
    financial_threshold: Decimal | None = None  # None: the credit limit (see spend_threshold)
    guaranteed_payment: GuaranteeLimit = GuaranteeLimit()
    # a notice stage whose notice failed for good (the mail server refused it permanently) counts as
    # taken, so the stages after it go ahead (notices.proceed_after_failed_notice); a deletion still
    # needs a delivered deletion warning
    proceed_after_failed_notice: bool = True
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def spend_threshold(self) -> Decimal:
        """How far below zero ``pay_with_negative`` lets an order take the balance: ``financial_threshold``
        when a layer sets it, else the credit limit (CloudBlue's "financial blocking threshold" is the
        number H-Sphere calls the credit limit)."""
        return self.credit_limit if self.financial_threshold is None else self.financial_threshold


# --- the account snapshot ------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    at: datetime
    amount: Decimal  # positive: payment or credit; negative: charge
    kind: str = "charge"  # charge | payment | credit | refund | adjustment
    method: str | None = None  # card | check | transfer ... (payments)
    ref: str | None = None


@dataclass(frozen=True)
class Invoice:
    id: str
    issued_at: datetime
    due_at: datetime
    amount: Decimal
    paid_at: datetime | None = None


@dataclass(frozen=True)
class Hold:
    kind: HoldKind
    since: datetime
    reason: str | None = None
    actor: str | None = None


@dataclass(frozen=True)
class Override:
    """An admin's exception, with who, why and until when.

    ``exempt``: no automatic measures until ``expires_at``. ``pause``: measures wait until
    ``expires_at`` (a promise to pay). ``guarantee``: ``amount`` of temporary credit until
    ``expires_at``. ``debt_date``: the episode starts at ``at`` (the outstanding-balance date).
    """

    kind: OverrideKind
    actor: str
    reason: str
    created_at: datetime
    expires_at: datetime | None = None
    amount: Decimal | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class StageTaken:
    stage: str
    at: datetime
    undelivered: bool = False  # a notice stage whose notice failed for good at ``at``


@dataclass(frozen=True)
class Episode:
    """A debt episode: from the moment a trigger fired until no trigger holds any more."""

    started_at: datetime
    trigger: str
    stages_taken: tuple[StageTaken, ...] = ()
    id: int | None = None


@dataclass(frozen=True)
class AccountSnapshot:
    id: str
    plan: str | None = None
    reseller: str | None = None
    currency: str = "USD"
    trial_ends_at: datetime | None = None
    has_billing_profile: bool = True
    ledger: tuple[LedgerEntry, ...] = ()
    invoices: tuple[Invoice, ...] = ()
    holds: tuple[Hold, ...] = ()
    overrides: tuple[Override, ...] = ()
    episode: Episode | None = None
    deleted: bool = False
    in_flight: tuple[str, ...] = ()  # stages whose jobs are queued but have not taken effect yet


# --- the decision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """Why something happened: the rule, the thresholds it compared and the inputs it read."""

    rule: str
    text: str
    thresholds: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerHit:
    trigger: str
    at: datetime
    reason: Reason


@dataclass(frozen=True)
class Measure:
    stage: str
    action: Action
    due_at: datetime
    reason: Reason
    template: str | None = None
    hook: str | None = None
    hold: HoldKind | None = None  # suspend: the kind of hold it puts on the account (debt, or trial)


@dataclass(frozen=True)
class UpcomingMeasure:
    stage: str
    action: Action
    due_at: datetime


@dataclass(frozen=True)
class Decision:
    """What must happen to one account at ``now``, and when to look at it again."""

    account: str
    now: datetime
    balance: Decimal
    in_debt: bool
    trigger: TriggerHit | None  # the trigger holding now (earliest start), if any
    start_episode: TriggerHit | None = None  # a new episode begins now
    end_episode: Reason | None = None  # the episode ends: debt released, counters reset
    release_holds: tuple[HoldKind, ...] = ()
    resume: bool = False  # the account is suspended and its last hold goes
    measures: tuple[Measure, ...] = ()  # due now, in stage order
    next: UpcomingMeasure | None = None  # the first measure not yet due
    next_check: datetime | None = None  # when the account must be evaluated again
    held_back: Reason | None = None  # exempt or paused: why measures that are due wait

    @property
    def upcoming(self) -> UpcomingMeasure | None:
        """What comes next for the account, as an operator reads it: the first measure due now (the next run
        takes it; shown with its own due time), else the first one not yet due. ``show`` and ``debtors`` print
        this; ``forecast`` lists the same measure first."""
        if self.measures:
            first = self.measures[0]
            return UpcomingMeasure(first.stage, first.action, first.due_at)
        return self.next
