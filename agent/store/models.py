"""The tables of the account store (SQLAlchemy 2.x typed ORM).

Money columns are :class:`~agent.store.types.Money` (exact decimal strings), timestamps are
:class:`~agent.store.types.UTCDateTime` (aware UTC in, aware UTC out). ``accounts.next_check_at`` and
``jobs.next_attempt_at`` are indexed: a tick reads only what is due (the accounts in the index's order,
``(next_check_at, id)``, a range of it per chunk).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent.store.types import Money, UTCDateTime

__all__ = [
    "ACCOUNT_STATES",
    "Account",
    "AgentRow",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Episode",
    "Hold",
    "HostLease",
    "Invoice",
    "Job",
    "LedgerEntry",
    "Notice",
    "Override",
    "Placement",
    "ResourceClaim",
    "StageTaken",
]

ACCOUNT_STATES = ("active", "debtor", "suspended", "deleted")

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON}


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (Index("ix_accounts_next_check_at_id", "next_check_at", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str | None] = mapped_column(String(200))
    billing_email: Mapped[str | None] = mapped_column(String(320))
    plan: Mapped[str | None] = mapped_column(String(100))
    reseller: Mapped[str | None] = mapped_column(String(100))
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    trial_ends_at: Mapped[datetime | None]
    has_billing_profile: Mapped[bool] = mapped_column(Boolean, default=True)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="active")
    next_check_at: Mapped[datetime | None]
    changed_at: Mapped[datetime | None]  # when an input of the decision last changed (payment, import, override)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


class Placement(Base):
    """One service of one account on one host, with the facts its connector saved (to restore exactly)."""

    __tablename__ = "placements"
    __table_args__ = (UniqueConstraint("account", "service", "host", name="uq_placements_account_service_host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    service: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    resource: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ResourceClaim(Base):
    """One thing on a host that a placement owns: a site, a mailbox, a unix user or a home path
    (:func:`connectors.resources.resource_keys` gives the normalised ``key``). The unique key makes sure
    one account at most holds it, whoever writes; nesting (a home inside another's home) is checked where
    placements are written (:func:`agent.store.placements.put_placement`)."""

    __tablename__ = "resource_claims"
    __table_args__ = (UniqueConstraint("host", "service", "key", name="uq_resource_claims_host_service_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    placement: Mapped[int] = mapped_column(ForeignKey("placements.id", ondelete="CASCADE"), index=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    host: Mapped[str] = mapped_column(String(255))
    service: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(1024))


class LedgerEntry(Base):
    __tablename__ = "ledger"
    __table_args__ = (UniqueConstraint("account", "ref", name="uq_ledger_account_ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    amount: Mapped[Decimal]
    kind: Mapped[str] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(32))
    ref: Mapped[str] = mapped_column(String(200))
    imported_at: Mapped[datetime | None]


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("account", "invoice_id", name="uq_invoices_account_invoice_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime]
    due_at: Mapped[datetime]
    amount: Mapped[Decimal]
    paid_at: Mapped[datetime | None]


class Episode(Base):
    """A debt episode: from the trigger that started it until no trigger holds any more."""

    __tablename__ = "episodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(String(64))
    reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class StageTaken(Base):
    """A stage of an episode: ``in_flight`` while its jobs run, ``taken`` at the moment it took effect."""

    __tablename__ = "stages_taken"
    __table_args__ = (UniqueConstraint("episode", "stage", name="uq_stages_taken_episode_stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    # in_flight | taken | cancelled | undelivered (a notice stage whose notice failed for good, at ``at``)
    status: Mapped[str] = mapped_column(String(16), default="in_flight")
    queued_at: Mapped[datetime]
    at: Mapped[datetime | None]  # when it took effect
    template: Mapped[str | None] = mapped_column(String(100))
    hold: Mapped[str | None] = mapped_column(String(16))  # suspend: the hold it puts on the account
    reason: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Hold(Base):
    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # debt | admin | trial
    since: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(100))
    released_at: Mapped[datetime | None]


class Override(Base):
    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # exempt | pause | guarantee | debt_date
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    amount: Mapped[Decimal | None]
    at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Job(Base):
    """One unit of outbox work: a notice, a host job (one account+service+host) or an event."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    episode: Mapped[int | None] = mapped_column(ForeignKey("episodes.id", ondelete="SET NULL"))
    stage: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # notice | host | event
    service: Mapped[str | None] = mapped_column(String(32))
    host: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|claimed|done|failed|cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), index=True)  # the agent (agents.name)
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class Notice(Base):
    """One notice per (account, episode, stage): claimed before sending, ``sent`` once accepted."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    episode: Mapped[int | None] = mapped_column(ForeignKey("episodes.id", ondelete="SET NULL"))
    stage: Mapped[str] = mapped_column(String(64))
    template: Mapped[str | None] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(300))
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="claimed")  # claimed | sent | failed
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    permanent: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    account: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiToken(Base):
    """A bearer token of the HTTP API: only its SHA-256 is kept (the token is shown once, when made).
    ``name`` is who it is in the audit log; one token that is not revoked per name."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[datetime | None]


class AgentRow(Base):
    """One agent working on this database (``agent.agents``): who and where it is, its heartbeat and
    lease (the database's clock), and its last tick. A claim whose agent's lease ended is taken over."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # run | daemon | demo
    machine: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]  # the last heartbeat
    lease_until: Mapped[datetime]  # its claims and host leases are its own until then
    stopped_at: Mapped[datetime | None]  # it stopped cleanly
    ticks: Mapped[int] = mapped_column(Integer, default=0)
    last_tick_at: Mapped[datetime | None]  # when (the database's clock) its last tick ended
    last_tick: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # that tick's counts


class HostLease(Base):
    """The host whose batch ``agent`` is running: one batch per host at a time across all agents. Held
    while that agent's lease lasts; released when the batch is over."""

    __tablename__ = "host_leases"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    agent: Mapped[str] = mapped_column(String(100))
    since: Mapped[datetime]
