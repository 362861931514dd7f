"""Agents sharing a database: one row per agent (its heartbeat, lease and last tick) and one row per host
whose batch an agent is running (the host lease).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agent.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("machine", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.Column("last_tick_at", UTCDateTime(), nullable=True),
        sa.Column("last_tick", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agents")),
    )
    op.create_table(
        "host_leases",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("agent", sa.String(length=100), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_host_leases")),
    )
    op.create_index(op.f("ix_jobs_claimed_by"), "jobs", ["claimed_by"])


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_claimed_by"), table_name="jobs")
    op.drop_table("host_leases")
    op.drop_table("agents")
