"""The due accounts' index on ``accounts (next_check_at, id)``, in place of the one on ``next_check_at``
alone: a tick and a plan read the due accounts in that order, a chunk at a time after the last one seen,
and with the id in the index each chunk is one range of it, even when many accounts share their next
check (an import sets it to the same moment for every account it adds).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_accounts_next_check_at_id", "accounts", ["next_check_at", "id"])
    op.drop_index("ix_accounts_next_check_at", table_name="accounts")


def downgrade() -> None:
    op.create_index("ix_accounts_next_check_at", "accounts", ["next_check_at"])
    op.drop_index("ix_accounts_next_check_at_id", table_name="accounts")
