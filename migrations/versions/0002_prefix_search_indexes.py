"""Prefix-search indexes on idx_string and idx_uri.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

A prefix search (``LIKE 'abc%'``, search.html#string and ``:below`` on uri) can use a btree only
under the C collation or with pattern operator classes, and PostgreSQL usually runs a locale
collation; on SQLite these are plain indexes. Mirrors the two ``*_prefix`` indexes in tables.py.

On PostgreSQL the indexes are built ``CONCURRENTLY``, so a populated index table stays writable
while they build; that cannot run inside a transaction and may outlast the 5 s statement timeout
that migrations/env.py sets, which is lifted for the build and then restored.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name, table, columns, PostgreSQL operator classes
INDEXES: list[tuple[str, str, list[str], dict[str, str]]] = [
    ("ix_idx_string_prefix", "idx_string", ["res_type", "param", "value_norm", "resource_pk"],
     {"value_norm": "varchar_pattern_ops"}),
    ("ix_idx_uri_prefix", "idx_uri", ["res_type", "param", "value"], {"value": "text_pattern_ops"}),
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name, table, columns, _ops in INDEXES:
            op.create_index(name, table, columns)
        return
    with op.get_context().autocommit_block():
        previous = op.get_bind().execute(sa.text("SHOW statement_timeout")).scalar_one()
        op.execute("SET statement_timeout = 0")
        try:
            for name, table, columns, ops in INDEXES:
                op.create_index(name, table, columns, postgresql_ops=ops, postgresql_concurrently=True)
        finally:
            op.execute(f"SET statement_timeout = '{previous}'")


def downgrade() -> None:
    for name, table, _columns, _ops in reversed(INDEXES):
        op.drop_index(name, table_name=table)
