"""ix_resource_policy_flagged: a partial index on the resource rows the access policy may hide by
their columns alone (a label bit set, or columns never written: NULL agencies), so that $triage's
list of hidden Patients (policy.Visibility.hidden_patients) takes its candidates from the columns
the policy's SQL reads — fail closed for a row stored without them — without reading every Patient.

On PostgreSQL the index is built ``CONCURRENTLY`` (as migration 0002 builds its own), so that
``resource`` stays writable while it builds on a large table; that cannot run inside a transaction
and may outlast the 5 s statement timeout that migrations/env.py sets, which is lifted for the build
and then restored. On SQLite it is a plain index.

Revision ID: 0021_s5fix2_policy_flagged
Revises: 0021_s5audit_policy_columns
Create Date: 2026-11-26
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_s5fix2_policy_flagged"
down_revision: str | Sequence[str] | None = "0021_s5audit_policy_columns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FLAGGED = "sensitivity <> 0 OR agencies IS NULL"  # fhir_server/storage/tables.py POLICY_FLAGGED, as of this revision


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index("ix_resource_policy_flagged", "resource", ["res_type"], sqlite_where=sa.text(FLAGGED))
        return
    with op.get_context().autocommit_block():
        previous = op.get_bind().execute(sa.text("SHOW statement_timeout")).scalar_one()
        op.execute("SET statement_timeout = 0")
        try:
            op.create_index("ix_resource_policy_flagged", "resource", ["res_type"],
                            postgresql_where=sa.text(FLAGGED), postgresql_concurrently=True)
        finally:
            op.execute(f"SET statement_timeout = '{previous}'")


def downgrade() -> None:
    op.drop_index("ix_resource_policy_flagged", table_name="resource")
