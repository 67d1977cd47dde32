"""admins, admin_sessions: who signs in to the console (issue 15)

An administrator is an operator (tenant_id null: every tenant) or a tenant administrator (one
tenant). They are invited with a one-time setup link (only its hash is kept) and set their own
password (argon2id). Sessions live in the database so they hold across processes and workers
on PostgreSQL; the cookie carries a random value whose SHA-256 is the row's key.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admins",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_norm", sa.String(320), nullable=False),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("setup_token_hash", sa.String(64), nullable=True),
        sa.Column("setup_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("email_norm", name="uq_admins_email"),
        sa.UniqueConstraint("setup_token_hash", name="uq_admins_setup_token"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("admin_id", sa.String(36), sa.ForeignKey("admins.id"), nullable=False),
        sa.Column("stage", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_admin_sessions_admin", "admin_sessions", ["admin_id"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_admin", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    op.drop_table("admins")
