"""Index tables for composite search parameters and the special ``near`` parameter.

Revision ID: 0006
Revises: 0007 (main already had 0007 when this branch merged it; a database at 0007 must still get
these tables, so this revision follows it rather than the other way round)
Create Date: 2026-11-25

``idx_composite`` holds one row per value of one component of one element instance (search.html#composite),
joined on (resource_pk, grp) so that components match on the same element (a token first component is
copied into the other components' rows as ``anchor_*``, so two-component searches need no join); ``idx_geo`` holds
Location.position for ``near`` (location.html#positional). Both tables start empty: run
``fhir-server reindex`` once after upgrading to index resources already stored.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PrimaryKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "idx_composite",
        sa.Column("resource_pk", PrimaryKey, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("grp", sa.Integer(), nullable=False),
        sa.Column("anchor_system", sa.String(255), nullable=True),
        sa.Column("anchor_code", sa.String(255), nullable=True),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("code", sa.String(255), nullable=True),
        sa.Column("unit", sa.String(255), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("date_low", sa.DateTime(), nullable=True),
        sa.Column("date_high", sa.DateTime(), nullable=True),
        sa.Column("value_norm", sa.String(255), nullable=True),
        sa.Column("value_exact", sa.Text(), nullable=True),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("target_url", sa.Text(), nullable=True),
    )
    op.create_index("ix_idx_composite_resource", "idx_composite", ["resource_pk", "param", "grp"])
    op.create_index("ix_idx_composite_anchor_value", "idx_composite",
                    ["res_type", "param", "anchor_code", "anchor_system", "value", "resource_pk"])
    op.create_index("ix_idx_composite_anchor_code", "idx_composite",
                    ["res_type", "param", "anchor_code", "anchor_system", "code", "system", "resource_pk"])
    op.create_table(
        "idx_geo",
        sa.Column("resource_pk", PrimaryKey, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
    )
    op.create_index("ix_idx_geo_resource", "idx_geo", ["resource_pk"])
    op.create_index("ix_idx_geo_latitude_longitude", "idx_geo",
                    ["res_type", "param", "latitude", "longitude", "resource_pk"])


def downgrade() -> None:
    op.drop_index("ix_idx_geo_latitude_longitude", table_name="idx_geo")
    op.drop_index("ix_idx_geo_resource", table_name="idx_geo")
    op.drop_table("idx_geo")
    op.drop_index("ix_idx_composite_anchor_code", table_name="idx_composite")
    op.drop_index("ix_idx_composite_anchor_value", table_name="idx_composite")
    op.drop_index("ix_idx_composite_resource", table_name="idx_composite")
    op.drop_table("idx_composite")
