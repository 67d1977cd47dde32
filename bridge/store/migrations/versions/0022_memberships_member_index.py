"""memberships: drop ix_memberships_member (tenant, source, member_anchor)

ix_memberships_member_group (tenant, source, member_anchor, group_anchor, migration 0002) starts
with the same columns and serves every lookup by member the same way (covering, even), so the
older index was only written, never needed: one B-tree fewer to keep up on every membership
written. A first sync of a million people writes three million memberships in random member
order, and each such index makes every insert touch a page of its own (docs/benchmarks.md,
"The million-user curve").

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.drop_index("ix_memberships_member")


def downgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.create_index("ix_memberships_member", ["tenant_id", "source", "member_anchor"], unique=False)
