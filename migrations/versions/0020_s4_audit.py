"""``audit_pending``: the compact AuditEvents that PostgreSQL reads and searches append in their own
statement (fhir_server/audit/pending.py), expanded into ``audit_event`` by the sealer; its
append-only triggers (fhir_server/storage/append_only.py ``PENDING``); and an index on
``audit_event.event_id`` (the sealer's and the trigger's lookup).

Revision ID: 0020_s4_audit
Revises: 0020_s4triage
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fhir_server.storage import append_only

revision: str = "0020_s4_audit"
down_revision: str | Sequence[str] | None = "0020_s4triage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_index("ix_audit_event_event_id", "audit_event", ["event_id"])
    op.create_table(
        "audit_pending",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("head", sa.JSON(), nullable=False),
        sa.Column("returned", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_pending"),
    )
    for statement in append_only.PENDING.create_statements(dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in append_only.PENDING.drop_statements(dialect):
        op.execute(statement)
    op.drop_table("audit_pending")
    op.drop_index("ix_audit_event_event_id", table_name="audit_event")
