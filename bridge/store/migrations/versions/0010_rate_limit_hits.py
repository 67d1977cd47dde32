"""rate_limit_hits: rate limits shared by every process on one PostgreSQL (issue 13, item 3)

One row per (limit, hashed key, one-second slot) counting its hits, raised by one atomic
INSERT ... ON CONFLICT DO UPDATE (bridge.store.ratelimit). Rows are purged once their slot has
left the window. Created on SQLite too (one schema), where the limiter stays in process.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_hits",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "key_hash", "window", name="pk_rate_limit_hits"),
    )
    op.create_index("ix_rate_limit_hits_expires", "rate_limit_hits", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_rate_limit_hits_expires", table_name="rate_limit_hits")
    op.drop_table("rate_limit_hits")
