"""sync_runs.planned and sync_runs.forced (issue 12)

`counts` is what a run applied; `planned` is what its plan would have done, so an aborted run
(nothing written) no longer reads as if it archived people. `forced` records who overrode a
safety check with `sync --force`, and the threshold the plan passed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("planned", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("forced", sa.JSON(), nullable=True))
    # Aborted runs recorded before this revision kept their plan's counts as if applied.
    op.execute("UPDATE sync_runs SET planned = counts, counts = NULL WHERE outcome = 'aborted'")


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("forced")
        batch.drop_column("planned")
