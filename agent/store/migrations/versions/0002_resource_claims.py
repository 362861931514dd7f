"""Resource claims: one owner per site, mailbox, unix user and home path on a host.

Existing placements are claimed in the order they were stored; a placement whose resource another
account already claims, or that no validator accepts, is left unclaimed and reported in the log, so
opening an existing database never fails (``arrears accounts move-resource`` settles the conflict).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    op.create_table(
        "resource_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("placement", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["account"], ["accounts.id"], name=op.f("fk_resource_claims_account_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["placement"], ["placements.id"], name=op.f("fk_resource_claims_placement_placements"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_claims")),
        sa.UniqueConstraint("host", "service", "key", name="uq_resource_claims_host_service_key"),
    )
    with op.batch_alter_table("resource_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_resource_claims_account"), ["account"], unique=False)
        batch_op.create_index(batch_op.f("ix_resource_claims_placement"), ["placement"], unique=False)
    _claim_existing()


def _claim_existing() -> None:
    from connectors.resources import resource_keys
    from connectors.validate import UnsafeValue

    conn = op.get_bind()
    placements = sa.table("placements", sa.column("id"), sa.column("account"), sa.column("service"),
                          sa.column("host"), sa.column("resource", sa.JSON()))
    claims = sa.table("resource_claims", sa.column("placement"), sa.column("account"), sa.column("host"),
                      sa.column("service"), sa.column("key"))
    held: dict[tuple[str, str, str], str] = {}
    rows = []
    for p in conn.execute(sa.select(placements).order_by(placements.c.id)):
        try:
            keys = [key for _field, key in resource_keys(p.service, p.resource or {})]
        except UnsafeValue as exc:
            log.warning("placement %s of account %s (%s on %s) is not claimed: %s", p.id, p.account, p.service,
                        p.host, exc)
            continue
        for key in dict.fromkeys(keys):
            owner = held.setdefault((p.host, p.service, key), p.account)
            if owner != p.account:
                log.warning("%s on %s is placed with accounts %s and %s; kept with %s", key, p.host, owner,
                            p.account, owner)
                continue
            rows.append({"placement": p.id, "account": p.account, "host": p.host, "service": p.service, "key": key})
    if rows:
        op.bulk_insert(claims, rows)


def downgrade() -> None:
    with op.batch_alter_table("resource_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resource_claims_placement"))
        batch_op.drop_index(batch_op.f("ix_resource_claims_account"))
    op.drop_table("resource_claims")
