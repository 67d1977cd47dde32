"""accounts: folded given and family names and the indexes of the console's reads (issue 15)

`given_name_norm` and `family_name_norm` hold `bridge.store.ids.fold` of the names (Python's
casefold, which SQL's lower() is not), filled here from the stored names and written with them
by `bridge.provision.apply` from now on. Indexes for `store.accounts.search_accounts`, a prefix
search in userName order: (tenant, given/family name), on PostgreSQL with text_pattern_ops (what
serves LIKE 'x%' whatever the collation) plus two such indexes on userName and email; and
(tenant, status, userName), which replaces its prefix ix_accounts_status so a status filter
pages in userName order without a sort. audit_events (tenant, id) for newest-first pages and
(tenant, correlation_id) for a run's changes; outbox (tenant, status, id) for a tenant's
undelivered rows.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

_CHUNK = 5000


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("given_name_norm", sa.String(255), nullable=True))
        batch.add_column(sa.Column("family_name_norm", sa.String(255), nullable=True))
    conn = op.get_bind()
    accounts = sa.table(
        "accounts",
        sa.column("id", sa.String),
        sa.column("given_name", sa.String),
        sa.column("family_name", sa.String),
        sa.column("given_name_norm", sa.String),
        sa.column("family_name_norm", sa.String),
    )
    rows = conn.execute(
        sa.select(accounts.c.id, accounts.c.given_name, accounts.c.family_name).where(
            sa.or_(accounts.c.given_name.is_not(None), accounts.c.family_name.is_not(None))
        )
    ).all()
    fill = (
        sa.update(accounts)
        .where(accounts.c.id == sa.bindparam("b_id"))
        .values(given_name_norm=sa.bindparam("g"), family_name_norm=sa.bindparam("f"))
    )
    for start in range(0, len(rows), _CHUNK):
        conn.execute(
            fill,
            [
                {
                    "b_id": r.id,
                    "g": r.given_name.casefold() if r.given_name is not None else None,
                    "f": r.family_name.casefold() if r.family_name is not None else None,
                }
                for r in rows[start : start + _CHUNK]
            ],
        )
    op.drop_index("ix_accounts_status", table_name="accounts")
    op.create_index("ix_accounts_status_name", "accounts", ["tenant_id", "status", "user_name_norm"])
    for name, column in (("ix_accounts_given_name", "given_name_norm"), ("ix_accounts_family_name", "family_name_norm")):
        op.create_index(name, "accounts", ["tenant_id", column], postgresql_ops={column: "text_pattern_ops"})
    op.create_index("ix_audit_tenant_id", "audit_events", ["tenant_id", "id"])
    op.create_index("ix_audit_correlation", "audit_events", ["tenant_id", "correlation_id"])
    op.create_index("ix_outbox_tenant_status", "outbox", ["tenant_id", "status", "id"])
    if conn.dialect.name == "postgresql":
        for name, column in (("ix_accounts_user_name_prefix", "user_name_norm"), ("ix_accounts_email_prefix", "email_norm")):
            op.create_index(name, "accounts", ["tenant_id", column], postgresql_ops={column: "text_pattern_ops"})


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_accounts_email_prefix", table_name="accounts")
        op.drop_index("ix_accounts_user_name_prefix", table_name="accounts")
    op.drop_index("ix_outbox_tenant_status", table_name="outbox")
    op.drop_index("ix_audit_correlation", table_name="audit_events")
    op.drop_index("ix_audit_tenant_id", table_name="audit_events")
    op.drop_index("ix_accounts_family_name", table_name="accounts")
    op.drop_index("ix_accounts_given_name", table_name="accounts")
    op.drop_index("ix_accounts_status_name", table_name="accounts")
    op.create_index("ix_accounts_status", "accounts", ["tenant_id", "status"])
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("family_name_norm")
        batch.drop_column("given_name_norm")
