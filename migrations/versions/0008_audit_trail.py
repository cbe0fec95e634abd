"""Audit trail: the append-only, hash-chained ``audit_event`` table (fhir_server/audit).

Revision ID: 0008
Revises: 0005
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("chain_pos", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=True),
        sa.Column("hash", sa.String(64), nullable=True),
        sa.Column("sealed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_event"),
    )
    op.create_index("ux_audit_event_chain_pos", "audit_event", ["chain_pos"], unique=True)
    op.create_index("ix_audit_event_pending", "audit_event", ["seq"], postgresql_where=sa.text("chain_pos IS NULL"),
                    sqlite_where=sa.text("chain_pos IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_audit_event_pending", table_name="audit_event")
    op.drop_index("ux_audit_event_chain_pos", table_name="audit_event")
    op.drop_table("audit_event")
