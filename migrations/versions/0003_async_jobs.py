"""Tables for the FHIR asynchronous request pattern (async.html): async_job and its input files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FhirJson = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "async_job",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("request", FhirJson, nullable=False),
        sa.Column("progress", sa.String(255), nullable=True),
        sa.Column("result_status", sa.Integer(), nullable=True),
        sa.Column("result", FhirJson, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_async_job"),
    )
    op.create_index("ix_async_job_status", "async_job", ["status", "updated"])
    op.create_table(
        "async_job_input",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["async_job.id"], name="fk_async_job_input_job_id_async_job",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "ordinal", name="pk_async_job_input"),
    )


def downgrade() -> None:
    op.drop_table("async_job_input")
    op.drop_index("ix_async_job_status", table_name="async_job")
    op.drop_table("async_job")
