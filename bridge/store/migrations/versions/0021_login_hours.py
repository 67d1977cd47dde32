"""login hours: when a person may sign in (issue 19)

`accounts.login_hours`: the windows of the mapping's `[[login_hours]]` entries that match the
person and AD's `logonHours` (core/login_hours: LoginHours.to_json()), written by the plan with
the account's other fields; null means no restriction, so existing rows need no backfill (the
next sync or re-plan writes the windows of those a mapping restricts).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("login_hours", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("login_hours")
