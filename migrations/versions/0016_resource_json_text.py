"""Resource bodies as ``json`` (the text as written) instead of ``jsonb`` on PostgreSQL.

A resource read back must equal what was sent, decimals as written (datatypes.html#decimal); jsonb
keeps numbers as ``numeric`` and prints ``-1.000000000000000000E+245`` as a 246-digit integer.
SQLite stores JSON as text already, so nothing changes there.

Bodies already stored keep the text jsonb gives them (what jsonb rewrote cannot be recovered).
The ALTER rewrites ``resource`` and ``resource_history`` under an exclusive lock: on a large
database run it in a maintenance window; the statement limit is lifted for this migration only,
the lock timeout still applies.

Revision ID: 0016
Revises: 0017
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("resource", "resource_history")


def _retype(to: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("SET LOCAL statement_timeout = 0")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN content TYPE {to} USING content::{to}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
