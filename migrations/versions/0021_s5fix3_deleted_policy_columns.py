"""The policy columns of every deleted row from the version it deleted: migration 0021_s5audit gave
deleted rows no label and no tag (but a Subscription its owner tags), so a labelled resource, or one
from an agency hidden from a caller, deleted before it would still be told deleted (410) to that
caller. ``Visibility.allows_deleted`` tests these columns with the policy's SQL; the repository has
kept them on every deletion since 0021_s5audit (``_write_version``), so this recomputes them, for
deleted rows only, from each one's last stored content (labels.policy_columns, as the repository).

Revision ID: 0021_s5fix3_deleted_policy
Revises: 0021_s5fix2_policy_flagged
Create Date: 2026-11-26
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fhir_server.auth.labels import policy_columns

revision: str = "0021_s5fix3_deleted_policy"
down_revision: str | Sequence[str] | None = "0021_s5fix2_policy_flagged"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000


def upgrade() -> None:
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(sa.text(
            "SELECT r.pk, (SELECT CAST(h.content AS TEXT) FROM resource_history h WHERE h.resource_pk = r.pk "
            "AND h.content IS NOT NULL ORDER BY h.version_id DESC LIMIT 1) FROM resource r "
            "WHERE r.deleted AND r.pk > :last ORDER BY r.pk LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            break
        found = [{"pk": pk, **policy_columns(json.loads(content))} for pk, content in rows if content is not None]
        if found:
            conn.execute(sa.text("UPDATE resource SET sensitivity = :sensitivity, agencies = :agencies, "
                                 "owners = :owners WHERE pk = :pk"), found)
        last = rows[-1][0]


def downgrade() -> None:
    pass  # values only, in columns 0021_s5audit added (and drops on its own downgrade)
