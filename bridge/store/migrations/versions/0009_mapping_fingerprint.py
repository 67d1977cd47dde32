"""tenants.mapping_fingerprint (issue 12, item 3)

The fingerprint of the mapping (and seat limit) the tenant's accounts were last planned with
(bridge.core.mapping.mapping_fingerprint). When the configured one differs, every account of the
tenant is re-planned (`bridge replan`, at the scheduler's start and by its `replan` job). Null:
never recorded, which counts as changed, so an upgraded deployment re-plans each tenant once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("mapping_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("mapping_fingerprint")
