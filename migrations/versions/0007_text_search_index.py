"""idx_text: the words of each resource's narrative (``_text``) and of all its text (``_content``),
with a GIN index over their tsvector on PostgreSQL (search.html#text, fhir_server/search/text.py).

Existing resources get their rows from ``fhir-server reindex`` (a migration must stay within the
statement timeout, so it does not rewrite every resource).

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "idx_text",
        sa.Column("resource_pk", _PK, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("words", sa.Text(), nullable=False),
    )
    op.create_index("ix_idx_text_resource", "idx_text", ["resource_pk"])
    op.create_index("ix_idx_text_type", "idx_text", ["res_type", "param", "resource_pk"])
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_idx_text_words", "idx_text", [sa.text("to_tsvector('simple'::regconfig, words)")],
                        postgresql_using="gin")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_idx_text_words", table_name="idx_text")
    op.drop_index("ix_idx_text_type", table_name="idx_text")
    op.drop_index("ix_idx_text_resource", table_name="idx_text")
    op.drop_table("idx_text")
