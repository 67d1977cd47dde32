"""scim_tokens.expires_at (issue 13)

A token may be created with an expiry (`bridge tokens create --expires-days N`); one without
keeps working until it is revoked, as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scim_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scim_tokens") as batch:
        batch.drop_column("expires_at")
