"""scim_requests: the SCIM request log of each tenant (issue 16)

One row per SCIM request of a tenant: method, path, status, client, duration, request id and the
request and response bodies with secrets redacted (bridge.scim.requestlog), kept the tenant's
`request_log_days` (default 14) and deleted by the scheduler's purge job.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scim_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("token_id", sa.String(36), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.String(300), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_scim_requests_tenant_id", "scim_requests", ["tenant_id", "id"])
    op.create_index("ix_scim_requests_tenant_time", "scim_requests", ["tenant_id", "occurred_at"])
    op.create_index("ix_scim_requests_token", "scim_requests", ["tenant_id", "token_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_scim_requests_token", table_name="scim_requests")
    op.drop_index("ix_scim_requests_tenant_time", table_name="scim_requests")
    op.drop_index("ix_scim_requests_tenant_id", table_name="scim_requests")
    op.drop_table("scim_requests")
