"""Held plans: plans a safety check refused, kept until a person approves or rejects them or
they expire (issue 17). Source-agnostic: a directory sync and the SCIM guard store alike.

Contract:
- `hold_plan` inserts a plan in status `held` with its account rows (already serialised by
  `bridge.core.held`, in the plan's order) and, in the same transaction, marks the older `held`
  plan of the same tenant and source `expired` with `superseded_by` = the new id: one plan per
  source waits for a decision, the newest. It returns the new id and the ids it superseded.
- `decide` moves a plan from `held` to `approved`, `rejected` or `expired`, only if it is still
  `held` (a conditional UPDATE): it returns False when someone else decided first, so a plan is
  approved, and applied, once.
- `same_held_plan` finds the held plan a new hold would repeat (same source, inputs digest and
  reason): the engine keeps it rather than holding an identical one every run.
- Every read takes an optional `tenant_id`: a tenant administrator's door passes it, and a plan
  of another tenant is None, as a missing one.
The caller writes the audit events and outbox rows in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from bridge.store.bulk import insert_many
from bridge.store.ids import new_id
from bridge.store.tables import HeldPlan, HeldPlanAccount, Tenant

held_plans = HeldPlan.__table__
held_accounts = HeldPlanAccount.__table__
tenants = Tenant.__table__


def hold_plan(
    conn: Connection,
    *,
    tenant_id: int,
    source: str,
    reason: str,
    detail: str | None,
    counts: dict[str, Any],
    digest: str,
    header: dict[str, Any],
    accounts: Sequence[dict[str, Any]],
    created_at: datetime,
    expires_at: datetime,
    created_by: str,
    correlation_id: str | None,
) -> tuple[str, list[str]]:
    """Store a held plan; `accounts` are dicts with `account_id`, `user_name`, `kind`, `reason`
    and `payload`. Returns (the plan's id, the ids of the held plans of that source it superseded)."""
    plan_id = new_id()
    older = [
        r.id
        for r in conn.execute(
            select(held_plans.c.id).where(
                held_plans.c.tenant_id == tenant_id, held_plans.c.source == source, held_plans.c.status == "held"
            )
        )
    ]
    if older:
        conn.execute(
            update(held_plans)
            .where(held_plans.c.id.in_(older), held_plans.c.status == "held")
            .values(status="expired", decided_at=created_at, decided_by=created_by, superseded_by=plan_id)
        )
    conn.execute(
        insert(held_plans).values(
            id=plan_id,
            tenant_id=tenant_id,
            source=source,
            reason=reason,
            detail=detail,
            status="held",
            created_at=created_at,
            created_by=created_by,
            expires_at=expires_at,
            correlation_id=correlation_id,
            counts=counts,
            digest=digest,
            plan=header,
        )
    )
    rows = [{"plan_id": plan_id, "seq": i, "tenant_id": tenant_id, **a} for i, a in enumerate(accounts)]
    if rows:
        insert_many(conn, held_accounts, rows)
    return plan_id, older


def same_held_plan(conn: Connection, tenant_id: int, source: str, digest: str, reason: str) -> str | None:
    """The id of the source's held plan computed from the same inputs for the same reason, if
    there is one: a run that would hold it again keeps that one (its id, its link, its expiry)."""
    return conn.execute(
        select(held_plans.c.id).where(
            held_plans.c.tenant_id == tenant_id,
            held_plans.c.source == source,
            held_plans.c.status == "held",
            held_plans.c.digest == digest,
            held_plans.c.reason == reason,
        )
    ).scalar()


def get_plan(conn: Connection, plan_id: str, tenant_id: int | None = None) -> Any | None:
    """The plan (a row of `held_plans` with its `tenant` name), or None (missing, or another
    tenant's when `tenant_id` is given)."""
    query = (
        select(held_plans, tenants.c.name.label("tenant"))
        .join(tenants, tenants.c.id == held_plans.c.tenant_id)
        .where(held_plans.c.id == plan_id)
    )
    if tenant_id is not None:
        query = query.where(held_plans.c.tenant_id == tenant_id)
    return conn.execute(query).first()


def list_plans(
    conn: Connection, *, tenant_id: int | None = None, status: str | None = None, limit: int = 200
) -> list[Any]:
    """Plans, newest first (rows of `held_plans` with their `tenant` name)."""
    query = select(held_plans, tenants.c.name.label("tenant")).join(tenants, tenants.c.id == held_plans.c.tenant_id)
    if tenant_id is not None:
        query = query.where(held_plans.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(held_plans.c.status == status)
    return list(conn.execute(query.order_by(held_plans.c.created_at.desc(), held_plans.c.id.desc()).limit(limit)))


def count_held(conn: Connection, tenant_id: int) -> int:
    """How many of the tenant's plans wait for a decision."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(held_plans)
            .where(held_plans.c.tenant_id == tenant_id, held_plans.c.status == "held")
        ).scalar_one()
    )


def plan_accounts(
    conn: Connection, plan_id: str, *, after_seq: int | None = None, limit: int | None = None
) -> tuple[list[Any], int | None]:
    """The plan's account rows in plan order: (rows, the `after_seq` of the next page, or None
    on the last). Without `limit`, all of them."""
    query = select(held_accounts).where(held_accounts.c.plan_id == plan_id)
    if after_seq is not None:
        query = query.where(held_accounts.c.seq > after_seq)
    query = query.order_by(held_accounts.c.seq)
    if limit is None:
        return list(conn.execute(query)), None
    rows = list(conn.execute(query.limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].seq
    return rows, None


def decide(
    conn: Connection,
    plan_id: str,
    status: str,
    *,
    actor: str,
    now: datetime,
    superseded_by: str | None = None,
) -> bool:
    """Move a `held` plan to `status`; False when it is no longer held (someone decided first)."""
    done = conn.execute(
        update(held_plans)
        .where(held_plans.c.id == plan_id, held_plans.c.status == "held")
        .values(status=status, decided_at=now, decided_by=actor, superseded_by=superseded_by)
    )
    return bool(done.rowcount)


def due_to_expire(conn: Connection, now: datetime) -> list[Any]:
    """Held plans whose `expires_at` has passed (rows of `held_plans` with their `tenant` name)."""
    return list(
        conn.execute(
            select(held_plans, tenants.c.name.label("tenant"))
            .join(tenants, tenants.c.id == held_plans.c.tenant_id)
            .where(held_plans.c.status == "held", held_plans.c.expires_at <= now)
            .order_by(held_plans.c.expires_at)
        )
    )


# ---- the SCIM guard's open plan: one per tenant collects the deprovisionings it holds -------------


def open_plan(conn: Connection, tenant_id: int, source: str) -> Any | None:
    """The tenant's held plan of `source` (the newest, if ever more than one), or None."""
    return conn.execute(
        select(held_plans)
        .where(held_plans.c.tenant_id == tenant_id, held_plans.c.source == source, held_plans.c.status == "held")
        .order_by(held_plans.c.created_at.desc())
        .limit(1)
    ).first()


def plan_account(conn: Connection, plan_id: str, account_id: str) -> Any | None:
    """The account's part of the plan, or None."""
    return conn.execute(
        select(held_accounts).where(held_accounts.c.plan_id == plan_id, held_accounts.c.account_id == account_id)
    ).first()


def add_account(
    conn: Connection,
    plan_id: str,
    tenant_id: int,
    account: dict[str, Any],
    counts: dict[str, Any],
    *,
    replaces: int | None = None,
) -> None:
    """Add one account's part to a held plan (last in its order), in place of the part of seq
    `replaces` if given, and set the plan's counts."""
    if replaces is not None:
        conn.execute(delete(held_accounts).where(held_accounts.c.plan_id == plan_id, held_accounts.c.seq == replaces))
    seq = conn.execute(
        select(func.coalesce(func.max(held_accounts.c.seq), -1)).where(held_accounts.c.plan_id == plan_id)
    ).scalar_one()
    conn.execute(insert(held_accounts).values(plan_id=plan_id, seq=int(seq) + 1, tenant_id=tenant_id, **account))
    conn.execute(update(held_plans).where(held_plans.c.id == plan_id).values(counts=counts))


def waiting_in_open_plan(conn: Connection, tenant_id: int, source: str, account_ids: Sequence[str]) -> set[str]:
    """The accounts among `account_ids` that are part of the tenant's held plan of `source`."""
    if not account_ids:
        return set()
    return set(
        conn.execute(
            select(held_accounts.c.account_id)
            .join(held_plans, held_plans.c.id == held_accounts.c.plan_id)
            .where(
                held_plans.c.tenant_id == tenant_id,
                held_plans.c.source == source,
                held_plans.c.status == "held",
                held_accounts.c.account_id.in_(list(account_ids)),
            )
        ).scalars()
    )
