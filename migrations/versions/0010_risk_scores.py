"""Risk scores for $triage and escalation Flags (triage/): current score per child and score history.

Revision ID: 0010
Revises: 0005
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FhirJson = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
PrimaryKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "risk_score",
        sa.Column("child_id", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("reasons", FhirJson, nullable=False),
        sa.Column("fired", FhirJson, nullable=False),
        sa.Column("agencies", sa.String(1000), nullable=False),
        sa.Column("local_authority", sa.String(16), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("lead", FhirJson, nullable=True),
        sa.Column("open_episodes", FhirJson, nullable=False),
        sa.Column("config_version", sa.String(128), nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("assessment_id", sa.String(64), nullable=True),
        sa.Column("flag_id", sa.String(64), nullable=True),
        sa.Column("flag_band", sa.String(16), nullable=True),
        sa.Column("flag_by_band", sa.Boolean(), nullable=True),
        sa.Column("flag_triggers", FhirJson, nullable=True),
        sa.PrimaryKeyConstraint("child_id", name="pk_risk_score"),
    )
    op.create_index("ix_risk_score_score", "risk_score", ["score", "child_id"])
    op.create_index("ix_risk_score_band_score", "risk_score", ["band", "score"])
    op.create_index("ix_risk_score_changed_at", "risk_score", ["changed_at"])
    op.create_table(
        "risk_score_history",
        sa.Column("id", PrimaryKey, autoincrement=True, nullable=False),
        sa.Column("child_id", sa.String(64), nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(16), nullable=False),
        sa.Column("config_version", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_risk_score_history"),
    )
    op.create_index("ix_risk_score_history_child_id_scored_at", "risk_score_history", ["child_id", "scored_at"])


def downgrade() -> None:
    op.drop_index("ix_risk_score_history_child_id_scored_at", table_name="risk_score_history")
    op.drop_table("risk_score_history")
    op.drop_index("ix_risk_score_changed_at", table_name="risk_score")
    op.drop_index("ix_risk_score_band_score", table_name="risk_score")
    op.drop_index("ix_risk_score_score", table_name="risk_score")
    op.drop_table("risk_score")
