"""Subscriptions: subscription_state (delivery state and secret per Subscription) and
subscription_event (numbered events per subscription, for delivery and $events).

Revision ID: 0011
Revises: 0005
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscription_state",
        sa.Column("sub_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("delivered_through", sa.BigInteger(), nullable=False),
        sa.Column("handshake_due", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_sent_at", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sub_id", name="pk_subscription_state"),
    )
    op.create_index("ix_subscription_state_status", "subscription_state", ["status"])
    op.create_table(
        "subscription_event",
        sa.Column("sub_id", sa.String(64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("interaction", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("sub_id", "number", name="pk_subscription_event"),
    )
    op.create_index("ux_subscription_event_outbox", "subscription_event", ["sub_id", "outbox_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_subscription_event_outbox", table_name="subscription_event")
    op.drop_table("subscription_event")
    op.drop_index("ix_subscription_state_status", table_name="subscription_state")
    op.drop_table("subscription_state")
