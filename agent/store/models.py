"""The ORM classes of the account store (SQLAlchemy 2.x typed ORM), each mapped onto its table of
:mod:`agent.store.tables`, where the columns, types, defaults and indexes are defined; the annotations
here type the attributes (tests/agent/test_store.py holds them equal to the tables' columns).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import FromClause
from sqlalchemy.orm import DeclarativeBase, Mapped

from agent.store import tables

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


class Base(DeclarativeBase):
    metadata = tables.metadata


class Account(Base):
    __table__: ClassVar[FromClause] = tables.ACCOUNTS

    id: Mapped[str]
    username: Mapped[str | None]
    billing_email: Mapped[str | None]
    plan: Mapped[str | None]
    reseller: Mapped[str | None]
    currency: Mapped[str]
    trial_ends_at: Mapped[datetime | None]
    has_billing_profile: Mapped[bool]
    policy: Mapped[dict[str, Any] | None]
    state: Mapped[str]
    next_check_at: Mapped[datetime | None]
    changed_at: Mapped[datetime | None]
    resources: Mapped[dict[str, Any]]
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


class Placement(Base):
    """One service of one account on one host, with the facts its connector saved (to restore exactly)."""

    __table__: ClassVar[FromClause] = tables.PLACEMENTS

    id: Mapped[int]
    account: Mapped[str]
    service: Mapped[str]
    host: Mapped[str]
    resource: Mapped[dict[str, Any]]
    state: Mapped[dict[str, Any]]


class ResourceClaim(Base):
    """One thing on a host that a placement owns: a site, a mailbox, a unix user or a home path
    (:func:`connectors.resources.resource_keys` gives the normalised ``key``). The unique key makes sure
    one account at most holds it, whoever writes; nesting (a home inside another's home) is checked where
    placements are written (:func:`agent.store.placements.put_placement`)."""

    __table__: ClassVar[FromClause] = tables.RESOURCE_CLAIMS

    id: Mapped[int]
    placement: Mapped[int]
    account: Mapped[str]
    host: Mapped[str]
    service: Mapped[str]
    key: Mapped[str]


class LedgerEntry(Base):
    __table__: ClassVar[FromClause] = tables.LEDGER

    id: Mapped[int]
    account: Mapped[str]
    at: Mapped[datetime]
    amount: Mapped[Decimal]
    kind: Mapped[str]
    method: Mapped[str | None]
    ref: Mapped[str]
    imported_at: Mapped[datetime | None]


class Invoice(Base):
    __table__: ClassVar[FromClause] = tables.INVOICES

    id: Mapped[int]
    account: Mapped[str]
    invoice_id: Mapped[str]
    issued_at: Mapped[datetime]
    due_at: Mapped[datetime]
    amount: Mapped[Decimal]
    paid_at: Mapped[datetime | None]


class Episode(Base):
    """A debt episode: from the trigger that started it until no trigger holds any more."""

    __table__: ClassVar[FromClause] = tables.EPISODES

    id: Mapped[int]
    account: Mapped[str]
    started_at: Mapped[datetime]
    trigger: Mapped[str]
    reason: Mapped[dict[str, Any] | None]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[dict[str, Any] | None]


class StageTaken(Base):
    """A stage of an episode: ``in_flight`` while its jobs run, ``taken`` at the moment it took effect."""

    __table__: ClassVar[FromClause] = tables.STAGES_TAKEN

    id: Mapped[int]
    episode: Mapped[int]
    account: Mapped[str]
    stage: Mapped[str]
    action: Mapped[str]
    status: Mapped[str]
    queued_at: Mapped[datetime]
    at: Mapped[datetime | None]
    template: Mapped[str | None]
    hold: Mapped[str | None]
    reason: Mapped[dict[str, Any] | None]


class Hold(Base):
    __table__: ClassVar[FromClause] = tables.HOLDS

    id: Mapped[int]
    account: Mapped[str]
    kind: Mapped[str]
    since: Mapped[datetime]
    reason: Mapped[str | None]
    actor: Mapped[str | None]
    released_at: Mapped[datetime | None]


class Override(Base):
    __table__: ClassVar[FromClause] = tables.OVERRIDES

    id: Mapped[int]
    account: Mapped[str]
    kind: Mapped[str]
    actor: Mapped[str]
    reason: Mapped[str]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    amount: Mapped[Decimal | None]
    at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Job(Base):
    """One unit of outbox work: a notice, a host job (one account+service+host) or an event."""

    __table__: ClassVar[FromClause] = tables.JOBS

    id: Mapped[int]
    key: Mapped[str]
    account: Mapped[str]
    episode: Mapped[int | None]
    stage: Mapped[str]
    kind: Mapped[str]
    service: Mapped[str | None]
    host: Mapped[str | None]
    action: Mapped[str]
    payload: Mapped[dict[str, Any]]
    status: Mapped[str]
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None]
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None]
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class Notice(Base):
    """One notice per (account, episode, stage): claimed before sending, ``sent`` once accepted."""

    __table__: ClassVar[FromClause] = tables.NOTICES

    id: Mapped[int]
    key: Mapped[str]
    account: Mapped[str]
    episode: Mapped[int | None]
    stage: Mapped[str]
    template: Mapped[str | None]
    message_id: Mapped[str]
    to: Mapped[str]
    subject: Mapped[str | None]
    status: Mapped[str]
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None]
    permanent: Mapped[bool]


class AuditEntry(Base):
    __table__: ClassVar[FromClause] = tables.AUDIT

    id: Mapped[int]
    at: Mapped[datetime]
    actor: Mapped[str]
    action: Mapped[str]
    account: Mapped[str | None]
    reason: Mapped[str | None]
    details: Mapped[dict[str, Any] | None]


class ApiToken(Base):
    """A bearer token of the HTTP API: only its SHA-256 is kept (the token is shown once, when made).
    ``name`` is who it is in the audit log; one token that is not revoked per name."""

    __table__: ClassVar[FromClause] = tables.API_TOKENS

    id: Mapped[int]
    name: Mapped[str]
    hash: Mapped[str]
    scopes: Mapped[list[str]]
    created_at: Mapped[datetime]
    created_by: Mapped[str]
    revoked_at: Mapped[datetime | None]


class AgentRow(Base):
    """One agent working on this database (``agent.agents``): who and where it is, its heartbeat and
    lease (the database's clock), and its last tick. A claim whose agent's lease ended is taken over."""

    __table__: ClassVar[FromClause] = tables.AGENTS

    name: Mapped[str]
    role: Mapped[str]
    machine: Mapped[str]
    pid: Mapped[int]
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]
    lease_until: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    ticks: Mapped[int]
    last_tick_at: Mapped[datetime | None]
    last_tick: Mapped[dict[str, Any] | None]


class HostLease(Base):
    """The host whose batch ``agent`` is running: one batch per host at a time across all agents. Held
    while that agent's lease lasts; released when the batch is over."""

    __table__: ClassVar[FromClause] = tables.HOST_LEASES

    host: Mapped[str]
    agent: Mapped[str]
    since: Mapped[datetime]
