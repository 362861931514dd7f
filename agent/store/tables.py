"""The tables of the account store (SQLAlchemy Core), defined once: their columns, types, defaults, keys and
indexes. The ORM classes of :mod:`agent.store.models` are mapped onto them; a read that builds no ORM
object (the plan's, a tick's evaluation) uses these alone and never loads the ORM.

Money columns are :class:`~agent.store.types.Money` (exact decimal strings), timestamps are
:class:`~agent.store.types.UTCDateTime` (aware UTC in, aware UTC out). ``accounts.next_check_at`` and
``jobs.next_attempt_at`` are indexed: a tick reads only what is due (the accounts in the index's order,
``(next_check_at, id)``, a range of it per chunk).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from agent.store.types import Money, UTCDateTime

__all__ = [
    "ACCOUNTS",
    "AGENTS",
    "API_TOKENS",
    "AUDIT",
    "EPISODES",
    "HOLDS",
    "HOST_LEASES",
    "INVOICES",
    "JOBS",
    "LEDGER",
    "NOTICES",
    "OVERRIDES",
    "PLACEMENTS",
    "RESOURCE_CLAIMS",
    "STAGES_TAKEN",
    "metadata",
]

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


def _id() -> Column[int]:
    return Column("id", Integer, primary_key=True)


def _account() -> Column[str]:
    """The account a row belongs to (deleted with it)."""
    return Column("account", ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True)


def _at(name: str, *, nullable: bool = True, index: bool | None = None) -> Column[datetime]:
    return Column(name, UTCDateTime(), nullable=nullable, index=index)


ACCOUNTS = Table(
    "accounts", metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(200)),
    Column("billing_email", String(320)),
    Column("plan", String(100)),
    Column("reseller", String(100)),
    Column("currency", String(8), nullable=False, default="USD"),
    _at("trial_ends_at"),
    Column("has_billing_profile", Boolean, nullable=False, default=True),
    Column("policy", JSON),
    Column("state", String(16), nullable=False, default="active"),
    _at("next_check_at"),
    _at("changed_at"),  # when an input of the decision last changed (payment, import, override)
    Column("resources", JSON, nullable=False, default=dict),
    _at("created_at"),
    _at("updated_at"),
    Index("ix_accounts_next_check_at_id", "next_check_at", "id"),
)

# One service of one account on one host, with the facts its connector saved (to restore exactly).
PLACEMENTS = Table(
    "placements", metadata,
    _id(),
    _account(),
    Column("service", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("resource", JSON, nullable=False, default=dict),
    Column("state", JSON, nullable=False, default=dict),
    UniqueConstraint("account", "service", "host", name="uq_placements_account_service_host"),
)

# One thing on a host that a placement owns (see agent.store.models.ResourceClaim).
RESOURCE_CLAIMS = Table(
    "resource_claims", metadata,
    _id(),
    Column("placement", Integer, ForeignKey("placements.id", ondelete="CASCADE"), nullable=False, index=True),
    _account(),
    Column("host", String(255), nullable=False),
    Column("service", String(32), nullable=False),
    Column("key", String(1024), nullable=False),
    UniqueConstraint("host", "service", "key", name="uq_resource_claims_host_service_key"),
)

LEDGER = Table(
    "ledger", metadata,
    _id(),
    _account(),
    _at("at", nullable=False),
    Column("amount", Money(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("method", String(32)),
    Column("ref", String(200), nullable=False),
    _at("imported_at"),
    UniqueConstraint("account", "ref", name="uq_ledger_account_ref"),
)

INVOICES = Table(
    "invoices", metadata,
    _id(),
    _account(),
    Column("invoice_id", String(200), nullable=False),
    _at("issued_at", nullable=False),
    _at("due_at", nullable=False),
    Column("amount", Money(), nullable=False),
    _at("paid_at"),
    UniqueConstraint("account", "invoice_id", name="uq_invoices_account_invoice_id"),
)

# A debt episode: from the trigger that started it until no trigger holds any more.
EPISODES = Table(
    "episodes", metadata,
    _id(),
    _account(),
    _at("started_at", nullable=False),
    Column("trigger", String(64), nullable=False),
    Column("reason", JSON),
    _at("ended_at"),
    Column("end_reason", JSON),
)

# A stage of an episode: ``in_flight`` while its jobs run, ``taken`` at the moment it took effect.
STAGES_TAKEN = Table(
    "stages_taken", metadata,
    _id(),
    Column("episode", Integer, ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False, index=True),
    _account(),
    Column("stage", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    # in_flight | taken | cancelled | undelivered (a notice stage whose notice failed for good, at ``at``)
    Column("status", String(16), nullable=False, default="in_flight"),
    _at("queued_at", nullable=False),
    _at("at"),  # when it took effect
    Column("template", String(100)),
    Column("hold", String(16)),  # suspend: the hold it puts on the account
    Column("reason", JSON),
    UniqueConstraint("episode", "stage", name="uq_stages_taken_episode_stage"),
)

HOLDS = Table(
    "holds", metadata,
    _id(),
    _account(),
    Column("kind", String(16), nullable=False),  # debt | admin | trial
    _at("since", nullable=False),
    Column("reason", Text),
    Column("actor", String(100)),
    _at("released_at"),
)

OVERRIDES = Table(
    "overrides", metadata,
    _id(),
    _account(),
    Column("kind", String(16), nullable=False),  # exempt | pause | guarantee | debt_date
    Column("actor", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    _at("created_at", nullable=False),
    _at("expires_at"),
    Column("amount", Money()),
    _at("at"),
    _at("revoked_at"),
)

# One unit of outbox work: a notice, a host job (one account+service+host) or an event.
JOBS = Table(
    "jobs", metadata,
    _id(),
    Column("key", String(400), nullable=False, unique=True),
    _account(),
    Column("episode", Integer, ForeignKey("episodes.id", ondelete="SET NULL")),
    Column("stage", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # notice | host | event
    Column("service", String(32)),
    Column("host", String(255)),
    Column("action", String(16), nullable=False),
    Column("payload", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default="pending"),  # pending|claimed|done|failed|cancelled
    Column("attempts", Integer, nullable=False, default=0),
    _at("next_attempt_at", nullable=False, index=True),
    Column("claimed_by", String(100), index=True),  # the agent (agents.name)
    _at("claimed_at"),
    Column("last_error", Text),
    Column("result", JSON),
    _at("created_at", nullable=False),
    _at("finished_at"),
    Index("ix_jobs_status_next_attempt_at", "status", "next_attempt_at"),
)

# One notice per (account, episode, stage): claimed before sending, ``sent`` once accepted.
NOTICES = Table(
    "notices", metadata,
    _id(),
    Column("key", String(300), nullable=False, unique=True),
    _account(),
    Column("episode", Integer, ForeignKey("episodes.id", ondelete="SET NULL")),
    Column("stage", String(64), nullable=False),
    Column("template", String(100)),
    Column("message_id", String(300), nullable=False),
    Column("to", String(320), nullable=False),
    Column("subject", Text),
    Column("status", String(16), nullable=False, default="claimed"),  # claimed | sent | failed
    _at("claimed_at"),
    _at("sent_at"),
    Column("error", Text),
    Column("permanent", Boolean, nullable=False, default=False),
)

AUDIT = Table(
    "audit", metadata,
    _id(),
    _at("at", nullable=False, index=True),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("account", String(64), index=True),
    Column("reason", Text),
    Column("details", JSON),
)

# A bearer token of the HTTP API (see agent.store.models.ApiToken).
API_TOKENS = Table(
    "api_tokens", metadata,
    _id(),
    Column("name", String(100), nullable=False, index=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    _at("created_at", nullable=False),
    Column("created_by", String(100), nullable=False),
    _at("revoked_at"),
)

# One agent working on this database (see agent.store.models.AgentRow).
AGENTS = Table(
    "agents", metadata,
    Column("name", String(100), primary_key=True),
    Column("role", String(16), nullable=False),  # run | daemon | demo
    Column("machine", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    _at("started_at", nullable=False),
    _at("seen_at", nullable=False),  # the last heartbeat
    _at("lease_until", nullable=False),  # its claims and host leases are its own until then
    _at("stopped_at"),  # it stopped cleanly
    Column("ticks", Integer, nullable=False, default=0),
    _at("last_tick_at"),  # when (the database's clock) its last tick ended
    Column("last_tick", JSON),  # that tick's counts
)

# The host whose batch ``agent`` is running (see agent.store.models.HostLease).
HOST_LEASES = Table(
    "host_leases", metadata,
    Column("host", String(255), primary_key=True),
    Column("agent", String(100), nullable=False),
    _at("since", nullable=False),
)
