"""The database refuses UPDATE/DELETE of recorded AuditEvents (triggers on ``audit_event``;
fhir_server/storage/append_only.py says what is refused and what sealing may still do); and
``policy_version``, the counter triggers on ``resource`` raise on every Consent/Organization write
(fhir_server/storage/policy_version.py: the Consent cache's check).

Revision ID: 0012
Revises: 0016
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fhir_server.storage import append_only, policy_version

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in append_only.create_statements(dialect):
        op.execute(statement)
    op.create_table(
        "policy_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_version"),
    )
    for statement in policy_version.create_statements(dialect):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in policy_version.drop_statements(dialect):
        op.execute(statement)
    op.drop_table("policy_version")
    for statement in append_only.drop_statements(dialect):
        op.execute(statement)
