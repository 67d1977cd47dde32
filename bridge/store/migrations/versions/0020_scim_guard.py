"""scim guard: the window of deprovisioning pushed over SCIM, and the changes a person rejected (issue 17)

`scim_deprovisions` has one row per deprovisioning a SCIM write asked for (a suspension, an
archive, the loss of every role), applied or held: the guard counts the tenant's rows since the
window's start (index on tenant, time) and deletes those older than the window now and then.
`scim_kept` names the accounts whose held deprovisioning a person rejected, with the identity
digest it was computed from: a later re-plan of that same identity leaves the account as it is.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scim_deprovisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_scim_deprovisions_window", "scim_deprovisions", ["tenant_id", "at"])
    op.create_table(
        "scim_kept",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("plan_id", sa.String(36), nullable=False),
        sa.Column("kept_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scim_kept")
    op.drop_index("ix_scim_deprovisions_window", table_name="scim_deprovisions")
    op.drop_table("scim_deprovisions")
