"""Held plans as the doors see them (`bridge plans`, the console's review page): list, show,
approve, reject, and the scheduler's expiry. A door passes its actor (`cli:<user>`,
`admin:<email>`) and, for a tenant administrator, the tenant id: a plan of another tenant is
not found, as a missing one.

Approve is a full sync of the plan's source that applies the held plan, not its own, while what
the plan was computed from is unchanged (`engine/sync`, `check_approval`); when it changed, it
applies nothing and holds the new plan. A plan of source `scim` (the SCIM guard) has no
directory to re-read: approving it applies what the stored identities of its people say now
(bridge.engine.guard.approve_scim).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from bridge.config import Config
from bridge.core.held import COUNT_KEYS, HELD
from bridge.engine import held
from bridge.engine.guard import ScimApproval, approve_scim
from bridge.engine.sync import SyncResult, run_sync
from bridge.errors import BridgeError, NotFound
from bridge.store.db import transaction
from bridge.store.plans import due_to_expire, get_plan, list_plans, plan_accounts
from bridge.store.scim import SOURCE as SCIM_SOURCE
from bridge.store.tenants import get_tenant


class PlanNotHeld(BridgeError):
    """The plan was decided already (approved, rejected, expired): nothing to do with it."""


@dataclass(frozen=True)
class Decision:
    plan_id: str
    status: str  # what the plan is now
    result: SyncResult | None = None  # the approving run (None for a rejection)
    scim: ScimApproval | None = None  # what approving a SCIM guard's plan applied

    @property
    def refused(self) -> bool:
        return self.result is not None and self.result.aborted


def summary(row: Any) -> dict[str, Any]:
    """A plan as `plans list --json` prints it: the contract's keys, then the sync JSON's counts.

    The contract names both a plan's `created` (when it was held) and the sync JSON's `created`
    (accounts it creates): `created` is the time, and every count, that one too, is in `counts`;
    the other counts are also at the top, as in the sync JSON."""
    stored = dict(row.counts or {})
    counts = {**{k: int(stored.get(k, 0)) for k in COUNT_KEYS}}
    counts["seatDelta"] = int(stored.get("seatDelta", 0))
    counts["seatRefused"] = int(stored.get("seatRefused", 0))
    return {
        **{k: v for k, v in counts.items() if k != "created"},
        "id": row.id,
        "tenant": row.tenant,
        "source": row.source,
        "reason": row.reason,
        "created": row.created_at.isoformat(),
        "status": row.status,
        "expires": row.expires_at.isoformat(),
        "detail": row.detail,
        "createdBy": row.created_by,
        "decidedAt": row.decided_at.isoformat() if row.decided_at else None,
        "decidedBy": row.decided_by,
        "supersededBy": row.superseded_by,
        "counts": counts,
    }


def change_row(row: Any) -> dict[str, Any]:
    """One account of a plan as `plans show --json` prints it."""
    payload = row.payload
    return {
        "userName": row.user_name,
        "kind": row.kind,
        "reason": row.reason,
        "account": row.account_id,
        "before": payload.get("before"),
        "after": payload.get("after"),
        "changes": [c["kind"] for c in payload.get("changes", [])],
    }


def plans(engine: Engine, *, tenant_id: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
    with transaction(engine, write=False) as conn:
        return [summary(r) for r in list_plans(conn, tenant_id=tenant_id, status=status)]


def find(engine: Engine, plan_id: str, *, tenant_id: int | None = None) -> Any:
    """The plan's row, or NotFound."""
    with transaction(engine, write=False) as conn:
        row = get_plan(conn, plan_id, tenant_id)
    if row is None:
        raise NotFound(f"no held plan {plan_id!r}")
    return row


def show(
    engine: Engine,
    plan_id: str,
    *,
    tenant_id: int | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
) -> tuple[dict[str, Any], int | None]:
    """The plan's summary with its `changes` (accounts whose plan changes something; a page of
    them with `limit`), and the `after_seq` of the next page or None."""
    row = find(engine, plan_id, tenant_id=tenant_id)
    with transaction(engine, write=False) as conn:
        rows, after = plan_accounts(conn, row.id, after_seq=after_seq, limit=limit)
    return {**summary(row), "changes": [change_row(r) for r in rows if r.kind != "identity"]}, after


def _held(engine: Engine, plan_id: str, tenant_id: int | None, actor: str, now: datetime) -> Any:
    row = find(engine, plan_id, tenant_id=tenant_id)
    if row.status == HELD and row.expires_at <= now:
        held.expire(engine, row, actor=actor, now=now)  # the job had not run yet
        row = find(engine, plan_id, tenant_id=tenant_id)
    if row.status != HELD:
        later = f" (superseded by plan {row.superseded_by})" if row.superseded_by else ""
        raise PlanNotHeld(f"plan {row.id} is {row.status}{later}, not held: nothing to decide")
    return row


def approve(config: Config, engine: Engine, plan_id: str, *, actor: str, tenant_id: int | None = None) -> Decision:
    """Apply the held plan if its source still says what it said; else hold the new plan.
    `Decision.refused` tells which (the new plan's id is `result.held`)."""
    now = datetime.now(UTC)
    row = _held(engine, plan_id, tenant_id, actor, now)
    if row.source == SCIM_SOURCE:
        applied = approve_scim(config, engine, row, actor=actor)
        if applied is None:
            raise PlanNotHeld(f"plan {row.id} is no longer held: someone decided it first")
        return Decision(plan_id=row.id, status="approved", scim=applied)
    if row.source not in config.sources:
        raise PlanNotHeld(f"plan {row.id}: source {row.source!r} is not a configured directory source")
    with transaction(engine, write=False) as conn:
        paused = get_tenant(conn, row.tenant).paused_at
    if paused is not None:
        # A paused tenant's sync reads nothing: the plan stays held until the tenant is resumed.
        raise BridgeError(f"tenant {row.tenant} is paused: resume it before approving plan {row.id}")
    result = run_sync(config, engine, row.source, mode="full", actor=actor, approve=row, now=now)
    status = find(engine, plan_id).status
    return Decision(plan_id=row.id, status=status, result=result)


def reject(engine: Engine, plan_id: str, *, actor: str, tenant_id: int | None = None) -> Decision:
    now = datetime.now(UTC)
    row = _held(engine, plan_id, tenant_id, actor, now)
    if not held.reject(engine, row, actor=actor, now=now):
        raise PlanNotHeld(f"plan {row.id} is no longer held: someone decided it first")
    return Decision(plan_id=row.id, status="rejected")


def expire_held_plans(engine: Engine, now: datetime, *, actor: str = "job:expire_held_plans") -> int:
    """Mark the held plans past their `expires_at` expired (the scheduler's expiry job)."""
    with transaction(engine, write=False) as conn:
        due = due_to_expire(conn, now)
    return sum(1 for row in due if held.expire(engine, row, actor=actor, now=now))
