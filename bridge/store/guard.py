"""The SCIM guard's rows (issue 17): the sliding window of deprovisioning pushed over SCIM, and
the accounts whose held deprovisioning a person rejected.

Contract:
- `lock_window` takes the tenant's row for the rest of the transaction (PostgreSQL; SQLite has
  one writer anyway): two SCIM writes that deprovision at once count one after the other, and
  only one of them opens the tenant's held plan. Taken only by writes that deprovision.
- `count_since` counts the distinct accounts of the tenant's window rows from `since` (index on
  tenant, time); `record` adds one and, one write in `PRUNE_EVERY`, deletes the tenant's rows
  older than `forget_before`, so the table holds about one window of rows per tenant.
- `live_count`: the tenant's accounts that are not archived (an index-only count).
- `keep` / `kept`: the identity digest under which an account's deprovisioning was rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select

from bridge.store.tables import Account, Identity, ScimDeprovision, ScimKept, Tenant

window = ScimDeprovision.__table__
kept_rows = ScimKept.__table__
accounts = Account.__table__
tenants = Tenant.__table__
identities = Identity.__table__


def lock_window(conn: Connection, tenant_id: int) -> None:
    if conn.dialect.name == "sqlite":
        return  # a write transaction holds the database's one write lock already
    # FOR NO KEY UPDATE: every row a write inserts that references the tenant (audit events,
    # outbox rows, events) holds a KEY SHARE lock on it, which FOR UPDATE would wait for; two
    # writers of the tenant then deadlocked (seen in the feed's two-server test).
    conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update(key_share=True))


def count_since(conn: Connection, tenant_id: int, since: datetime) -> int:
    return int(
        conn.execute(
            select(func.count(window.c.account_id.distinct())).where(
                window.c.tenant_id == tenant_id, window.c.at >= since
            )
        ).scalar_one()
    )


# Rows older than the window are deleted by one write in this many, not by each: they no longer
# count (`count_since` reads from the window's start), they only take room.
PRUNE_EVERY = 32


def record(
    conn: Connection, tenant_id: int, account_id: str | None, *, held: bool, now: datetime, forget_before: datetime
) -> None:
    row_id = conn.execute(
        insert(window).values(tenant_id=tenant_id, at=now, account_id=account_id, held=held).returning(window.c.id)
    ).scalar_one()
    if row_id % PRUNE_EVERY == 0:
        conn.execute(delete(window).where(window.c.tenant_id == tenant_id, window.c.at < forget_before))


def live_count(conn: Connection, tenant_id: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(accounts)
            .where(accounts.c.tenant_id == tenant_id, accounts.c.status != "archived")
        ).scalar_one()
    )


def keep(conn: Connection, tenant_id: int, plan_id: str, digests: Iterable[tuple[str, str]], now: datetime) -> None:
    """Record (account id, identity digest) pairs whose deprovisioning was rejected."""
    rows = [
        {"account_id": a, "tenant_id": tenant_id, "digest": d, "plan_id": plan_id, "kept_at": now} for a, d in digests
    ]
    if not rows:
        return
    conn.execute(delete(kept_rows).where(kept_rows.c.account_id.in_([r["account_id"] for r in rows])))
    conn.execute(insert(kept_rows), rows)


def kept(conn: Connection, account_ids: Sequence[str]) -> dict[str, str]:
    """account id -> the identity digest its rejected deprovisioning was computed from."""
    if not account_ids:
        return {}
    return {
        r.account_id: r.digest
        for r in conn.execute(
            select(kept_rows.c.account_id, kept_rows.c.digest).where(kept_rows.c.account_id.in_(list(account_ids)))
        )
    }


def forget(conn: Connection, account_ids: Sequence[str]) -> None:
    """Drop the rejection of these accounts (an approval applies their deprovisioning after all)."""
    if account_ids:
        conn.execute(delete(kept_rows).where(kept_rows.c.account_id.in_(list(account_ids))))


def deleted_among(conn: Connection, tenant_id: int, anchors: Sequence[str]) -> set[str]:
    """The SCIM users among `anchors` whose identity the identity provider deleted."""
    if not anchors:
        return set()
    return set(
        conn.execute(
            select(identities.c.anchor).where(
                identities.c.tenant_id == tenant_id,
                identities.c.source == "scim",
                identities.c.kind == "user",
                identities.c.anchor.in_(list(anchors)),
                identities.c.deleted_at.is_not(None),
            )
        ).scalars()
    )
