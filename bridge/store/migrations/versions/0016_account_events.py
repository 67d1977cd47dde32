"""account_events, event_positions: the product's change feed (issue 18)

Every account event the webhooks carry is also kept here, at a per-tenant `position` given in
commit order: the writing transaction updates its tenant's `event_positions` row as its last
step, so that row's lock orders the tenant's writers (bridge.store.events,
docs/product-integration.md).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_events",
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "position", name=op.f("pk_account_events")),
    )
    op.create_table(
        "event_positions",
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("purged_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_event_positions")),
    )


def downgrade() -> None:
    op.drop_table("event_positions")
    op.drop_table("account_events")
