"""Authentication tables: registered SMART clients, used client-assertion ids, server-generated
signing keys and fetched JWK Sets (fhir_server/auth).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_client",
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("agency", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("jwks_url", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_auth_client"),
    )
    op.create_table(
        "auth_jti",
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_auth_jti"),
    )
    op.create_index("ix_auth_jti_expires_at", "auth_jti", ["expires_at"])
    op.create_table(
        "auth_signing_key",
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("alg", sa.String(8), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_auth_signing_key"),
    )
    op.create_index("ux_auth_signing_key_issuer_slot", "auth_signing_key", ["issuer", "slot"], unique=True)
    op.create_table(
        "auth_jwks_cache",
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("url", name="pk_auth_jwks_cache"),
    )


def downgrade() -> None:
    op.drop_table("auth_jwks_cache")
    op.drop_index("ux_auth_signing_key_issuer_slot", table_name="auth_signing_key")
    op.drop_table("auth_signing_key")
    op.drop_index("ix_auth_jti_expires_at", table_name="auth_jti")
    op.drop_table("auth_jti")
    op.drop_table("auth_client")
