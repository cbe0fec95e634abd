"""Drop the foreign keys from the seven search-index tables to resource.pk.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Resource rows are never deleted (a deletion is a new version), and index rows are rewritten in the
same transaction as their resource, so the constraint protected nothing the repository does not
already guarantee while costing a lookup per inserted index row on every write.
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX_TABLES = ("idx_token", "idx_string", "idx_date", "idx_reference", "idx_quantity", "idx_number", "idx_uri")


def upgrade() -> None:
    for table in INDEX_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_resource_pk_resource", type_="foreignkey")


def downgrade() -> None:
    for table in INDEX_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(f"fk_{table}_resource_pk_resource", "resource", ["resource_pk"], ["pk"],
                                     ondelete="CASCADE")
