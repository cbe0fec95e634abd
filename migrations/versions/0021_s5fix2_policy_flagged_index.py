"""ix_resource_policy_flagged: a partial index on the resource rows the access policy may hide by
their columns alone (a label bit set, or columns never written: NULL agencies), so that $triage's
list of hidden Patients (policy.Visibility.hidden_patients) takes its candidates from the columns
the policy's SQL reads — fail closed for a row stored without them — without reading every Patient.

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
    op.create_index("ix_resource_policy_flagged", "resource", ["res_type"],
                    postgresql_where=sa.text(FLAGGED), sqlite_where=sa.text(FLAGGED))


def downgrade() -> None:
    op.drop_index("ix_resource_policy_flagged", table_name="resource")
