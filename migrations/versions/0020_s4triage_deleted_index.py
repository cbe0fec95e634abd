"""ix_resource_deleted: a partial index on the deleted resources (res_type, res_id), so that $triage
tells which children's Patients are deleted for the whole list at once (triage/query.py,
children_visible) instead of reading every live Patient row.

Revision ID: 0020_s4triage
Revises: 0019
Create Date: 2026-11-26
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_s4triage"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_resource_deleted", "resource", ["res_type", "res_id"],
                    postgresql_where=sa.text("deleted"), sqlite_where=sa.text("deleted"))


def downgrade() -> None:
    op.drop_index("ix_resource_deleted", table_name="resource")
