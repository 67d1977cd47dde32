"""held_plans, held_plan_accounts: plans a safety check refused, kept for approval (issue 17)

A sync refused by a safety check (deletion threshold, empty read) stores its plan: the header
and counts in `held_plans`, one row per account in `held_plan_accounts` (the serialised
`AccountPlan`). `bridge plans approve` applies exactly those rows while the digest of what they
were computed from is unchanged. The rows are source-agnostic (`source = "scim"` for plans of
SCIM account changes).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_plans",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("reason", sa.String(50), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(400), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(400), nullable=True),
        sa.Column("superseded_by", sa.String(36), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
    )
    op.create_index("ix_held_plans_tenant_status", "held_plans", ["tenant_id", "status", "created_at"])
    op.create_index("ix_held_plans_source", "held_plans", ["tenant_id", "source", "status"])
    op.create_index("ix_held_plans_expiry", "held_plans", ["status", "expires_at"])
    op.create_table(
        "held_plan_accounts",
        sa.Column("plan_id", sa.String(36), sa.ForeignKey("held_plans.id"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=True),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("held_plan_accounts")
    op.drop_index("ix_held_plans_expiry", table_name="held_plans")
    op.drop_index("ix_held_plans_source", table_name="held_plans")
    op.drop_index("ix_held_plans_tenant_status", table_name="held_plans")
    op.drop_table("held_plans")
