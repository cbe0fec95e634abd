"""``resource.sensitivity``, ``resource.agencies``, ``resource.owners``: the access policy's facts
about each row as plain columns (fhir_server/auth/labels.py ``policy_columns``), so that its SQL
(policy.Visibility.clause) tests columns instead of EXISTS probes on ``idx_token``; backfilled from
every current row's JSON by the same function the repository writes them with (a deleted
Subscription: the owner tags of its last stored version).

Revision ID: 0021_s5audit_policy_columns
Revises: 0020_s4_audit
Create Date: 2026-11-26
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fhir_server.auth.labels import policy_columns

revision: str = "0021_s5audit_policy_columns"
down_revision: str | Sequence[str] | None = "0020_s4_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000


def upgrade() -> None:
    op.add_column("resource", sa.Column("sensitivity", sa.Integer(), nullable=False, server_default=sa.text("-1")))
    op.add_column("resource", sa.Column("agencies", sa.Text(), nullable=True))
    op.add_column("resource", sa.Column("owners", sa.Text(), nullable=True))
    conn = op.get_bind()
    # No label and no tag (most rows, and every deleted one): nothing to read from the JSON.
    conn.execute(sa.text("UPDATE resource SET sensitivity = 0, agencies = '', owners = '' WHERE content IS NULL "
                         "OR (CAST(content AS TEXT) NOT LIKE '%\"security\"%' AND CAST(content AS TEXT) NOT LIKE '%\"tag\"%')"))
    last = 0
    while True:
        rows = conn.execute(sa.text(
            "SELECT pk, CAST(content AS TEXT) FROM resource WHERE pk > :last AND agencies IS NULL "
            "AND content IS NOT NULL ORDER BY pk LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            break
        conn.execute(sa.text("UPDATE resource SET sensitivity = :sensitivity, agencies = :agencies, owners = :owners "
                             "WHERE pk = :pk"),
                     [{"pk": pk, **policy_columns(json.loads(content))} for pk, content in rows])
        last = rows[-1][0]
    # A deleted owner-only resource (a Subscription) keeps the owner tags of the version it deleted
    # (repository: whose it was decides who is told it was deleted): from its last stored content.
    for pk, in conn.execute(sa.text("SELECT pk FROM resource WHERE deleted AND res_type = 'Subscription'")).all():
        content = conn.execute(sa.text(
            "SELECT CAST(content AS TEXT) FROM resource_history WHERE resource_pk = :pk AND content IS NOT NULL "
            "ORDER BY version_id DESC LIMIT 1"), {"pk": pk}).scalar()
        if content is not None:
            conn.execute(sa.text("UPDATE resource SET agencies = :agencies, owners = :owners WHERE pk = :pk"),
                         {"pk": pk, **{k: v for k, v in policy_columns(json.loads(content)).items() if k != "sensitivity"}})


def downgrade() -> None:
    for column in ("owners", "agencies", "sensitivity"):  # (SQLite 3.35+ drops a column in place)
        op.drop_column("resource", column)
