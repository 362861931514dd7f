"""PostgreSQL's own types for money and times: ``NUMERIC`` for every amount, ``TIMESTAMP WITH TIME ZONE``
for every timestamp (agent/store/types.py).

Until now both were stored as on SQLite (amounts as decimal strings, UTC timestamps without a zone). On
PostgreSQL the columns are converted in place: each amount to the same exact number, each timestamp read
as the UTC it always was. SQLite keeps its types; there this revision changes nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MONEY = {"ledger": ["amount"], "invoices": ["amount"], "overrides": ["amount"]}
TIMES = {
    "accounts": ["trial_ends_at", "next_check_at", "changed_at", "created_at", "updated_at"],
    "audit": ["at"],
    "episodes": ["started_at", "ended_at"],
    "holds": ["since", "released_at"],
    "invoices": ["issued_at", "due_at", "paid_at"],
    "ledger": ["at", "imported_at"],
    "overrides": ["created_at", "expires_at", "at", "revoked_at"],
    "jobs": ["next_attempt_at", "claimed_at", "created_at", "finished_at"],
    "notices": ["claimed_at", "sent_at"],
    "stages_taken": ["queued_at", "at"],
}


def _alter(to_money: str, to_time: str) -> None:
    """One ALTER TABLE per table; ``to_money`` and ``to_time`` give each column's type and USING clause."""
    for table in dict.fromkeys([*MONEY, *TIMES]):
        parts = [f'ALTER COLUMN "{c}" TYPE {to_money.format(c=c)}' for c in MONEY.get(table, [])]
        parts += [f'ALTER COLUMN "{c}" TYPE {to_time.format(c=c)}' for c in TIMES.get(table, [])]
        op.execute(f'ALTER TABLE "{table}" ' + ", ".join(parts))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _alter('NUMERIC USING "{c}"::numeric', """TIMESTAMP WITH TIME ZONE USING "{c}" AT TIME ZONE 'UTC'""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _alter('VARCHAR(48) USING "{c}"::text', """TIMESTAMP WITHOUT TIME ZONE USING "{c}" AT TIME ZONE 'UTC'""")
