"""PostgreSQL extended statistics on the index columns a chain or a composite filters on together
(``idx_reference``: res_type, param, target_type; ``idx_composite``: res_type, param, anchor_code,
anchor_system), so that the planner does not take them as independent (fhir_server/storage/tables.py,
EXTENDED_STATISTICS; docs/search-composite-and-near.md). Nothing on SQLite. The statistics are filled
by the next ANALYZE (autovacuum does it; ``ANALYZE idx_reference, idx_composite`` at once).

Revision ID: 0017
Revises: 0006
Create Date: 2026-11-25
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATISTICS = {
    "st_idx_reference_type_param_target": ("idx_reference", "res_type, param, target_type"),
    "st_idx_composite_type_param_anchor": ("idx_composite", "res_type, param, anchor_code, anchor_system"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, columns) in _STATISTICS.items():
        op.execute(f"CREATE STATISTICS IF NOT EXISTS {name} ON {columns} FROM {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in _STATISTICS:
        op.execute(f"DROP STATISTICS IF EXISTS {name}")
