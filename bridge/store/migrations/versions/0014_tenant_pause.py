"""tenants.paused_at (issue 17, pause)

While a tenant is paused, identities keep updating (SCIM writes are stored, as the identity
provider sent them) and no account of the tenant changes by itself: no sync applies, no re-plan,
no expiry. Resuming clears it and plans the tenant once (bridge.engine.pause). Null: not paused.
tenants.catch_up_due_at: set by resuming, cleared when the SCIM users have been planned again;
still set after a crash or a failure, so the scheduler's replan job finishes the catch-up.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("catch_up_due_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("catch_up_due_at")
        batch.drop_column("paused_at")
