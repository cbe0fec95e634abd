"""subscription_state.access: the access context of whoever created or last changed each
Subscription (subscriptions/access.py), so that matching notifies only about what that caller may
read. Rows written before this revision get NULL: such Subscriptions deliver nothing until their
owner PUTs them again (fail closed; docs/subscriptions.md, "Who is notified of what").

Revision ID: 0019
Revises: 0012
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscription_state", sa.Column("access", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("subscription_state", "access")
