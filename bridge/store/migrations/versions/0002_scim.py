"""SCIM server (issue 3)

The stored SCIM resource and a deletion mark on identities, a partial unique index for userName /
group displayName among live SCIM identities, one row per SCIM email for indexed filters, and a
covering index for reading a member's groups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LIVE_SCIM = "source = 'scim' AND deleted_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    # Partial indexes are created outside batch mode: SQLite and PostgreSQL both support them.
    op.create_index(
        "uq_identities_scim_name",
        "identities",
        ["tenant_id", "kind", "name_norm"],
        unique=True,
        sqlite_where=sa.text(_LIVE_SCIM),
        postgresql_where=sa.text(_LIVE_SCIM),
    )
    op.create_index("ix_identities_updated", "identities", ["tenant_id", "source", "kind", "updated_at"])
    op.create_index("ix_identities_created", "identities", ["tenant_id", "source", "kind", "created_at", "id"])
    op.create_table(
        "scim_emails",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.String(length=36), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("value_norm", sa.String(length=320), nullable=False),
        sa.Column("type_norm", sa.String(length=50), nullable=True),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_scim_emails_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_scim_emails_identity_id_identities")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_emails")),
    )
    op.create_index("ix_scim_emails_value", "scim_emails", ["tenant_id", "value_norm"])
    op.create_index("ix_scim_emails_identity", "scim_emails", ["identity_id"])
    op.create_index(
        "ix_memberships_member_group", "memberships", ["tenant_id", "source", "member_anchor", "group_anchor"]
    )


def downgrade() -> None:
    op.drop_index("ix_memberships_member_group", table_name="memberships")
    op.drop_index("ix_scim_emails_identity", table_name="scim_emails")
    op.drop_index("ix_scim_emails_value", table_name="scim_emails")
    op.drop_table("scim_emails")
    op.drop_index("ix_identities_created", table_name="identities")
    op.drop_index("ix_identities_updated", table_name="identities")
    op.drop_index("uq_identities_scim_name", table_name="identities")
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("resource")
