"""The writes of held plans (issue 17), each one transaction with its audit event and its
product event in the outbox: holding a refused plan, claiming one for approval, rejecting it,
expiring it. The sync run (`engine/sync`) holds and claims; the doors reach the rest through
`engine/plans`.

Audit events (tenant events, no account): `plan_held` (actor: who ran the sync), `plan_approved`,
`plan_rejected` (the person), `plan_expired` (the expiry job, or the run whose newer hold of the
same source superseded it). Product events: `plan.held`, `plan.approved`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from bridge.config import Config
from bridge.core.held import (
    APPROVED,
    EXPIRED,
    HELD_DIGEST,
    REJECTED,
    account_plan_to_json,
    main_change,
    plan_counts,
    plan_header,
)
from bridge.core.plan import Plan
from bridge.engine.alerts import raise_alert
from bridge.provision.apply import record_product_event
from bridge.store.alerts import close_alerts
from bridge.store.audit import record_tenant_event
from bridge.store.db import transaction
from bridge.store.guard import keep
from bridge.store.plans import decide, hold_plan, plan_accounts, same_held_plan
from bridge.store.scim import SOURCE as SCIM_SOURCE


def plan_event(
    conn: Connection,
    tenant_id: int,
    tenant_name: str,
    topic: str | None,
    *,
    action: str,
    actor: str,
    detail: dict[str, Any],
    reason: str | None,
    correlation_id: str | None,
    now: datetime,
    webhooks: bool,
) -> None:
    record_tenant_event(
        conn,
        tenant_id,
        actor=actor,
        action=action,
        after=detail,
        reason=reason,
        correlation_id=correlation_id,
        now=now,
    )
    if topic is not None:
        # In the change feed always, as a webhook when an endpoint is configured.
        record_product_event(conn, tenant_id, tenant_name, topic, detail, now=now, account_id=None, webhooks=webhooks)


def hold(
    engine: Engine,
    *,
    tenant_id: int,
    tenant_name: str,
    source: str,
    reason: str,
    detail: str | None,
    plan: Plan,
    digest: str,
    actor: str,
    correlation_id: str | None,
    now: datetime,
    days: int,
    webhooks: bool,
    config: Config | None = None,
) -> str:
    """Store `plan` as held (superseding the older held plan of `source`); returns its id. With
    `config`, the tenant's alert addresses hear of it: once while the source has a plan held, not
    once per run that holds a newer one (engine.alerts).

    A plan computed from the same inputs as the source's held one, for the same reason (the
    scheduler's next run over an unchanged directory), is that plan: its id is returned and
    nothing is written, so the review link stays valid and `plan.held` is said once."""
    with transaction(engine, write=False) as conn:
        same = same_held_plan(conn, tenant_id, source, digest, reason)
    if same is not None:
        return same
    accounts = []
    for account in plan.accounts:
        kind, why = main_change(account)
        accounts.append(
            {
                "account_id": account.account_id,
                "user_name": account.user_name,
                "kind": kind,
                "reason": why,
                "payload": account_plan_to_json(account),
            }
        )
    counts = plan_counts(plan)
    expires = now + timedelta(days=days)
    with transaction(engine) as conn:
        plan_id, older = hold_plan(
            conn,
            tenant_id=tenant_id,
            source=source,
            reason=reason,
            detail=detail,
            counts=counts,
            digest=digest,
            header=plan_header(plan),
            accounts=accounts,
            created_at=now,
            expires_at=expires,
            created_by=actor,
            correlation_id=correlation_id,
        )
        for old in older:
            plan_event(
                conn,
                tenant_id,
                tenant_name,
                None,
                action="plan_expired",
                actor=actor,
                detail={"plan": old, "source": source, "supersededBy": plan_id},
                reason=f"superseded by plan {plan_id}, held by a newer run of {source}",
                correlation_id=correlation_id,
                now=now,
                webhooks=webhooks,
            )
        plan_event(
            conn,
            tenant_id,
            tenant_name,
            "plan.held",
            action="plan_held",
            actor=actor,
            detail={
                "plan": plan_id,
                "source": source,
                "reason": reason,
                "counts": counts,
                "expires": expires.isoformat(),
                **({"supersedes": older} if older else {}),
            },
            reason=detail,
            correlation_id=correlation_id,
            now=now,
            webhooks=webhooks,
        )
        if config is not None:
            raise_alert(
                conn,
                config,
                tenant_id,
                tenant_name,
                kind="plan_held",
                subject=source,
                summary=f"plan {plan_id} of {source} is held for a decision: {detail or reason}",
                path=f"plans/{plan_id}",
                now=now,
            )
    return plan_id


def claim_approval(
    engine: Engine,
    row: Any,
    *,
    actor: str,
    correlation_id: str | None,
    now: datetime,
    webhooks: bool,
) -> bool:
    """Mark the held plan `row` approved, with its audit event and `plan.approved`, before it is
    applied: a plan is applied once, even when two people approve it at the same moment. False
    when it is no longer held."""
    with transaction(engine) as conn:
        return claim_in(conn, row, actor=actor, correlation_id=correlation_id, now=now, webhooks=webhooks)


def claim_in(
    conn: Connection,
    row: Any,
    *,
    actor: str,
    correlation_id: str | None,
    now: datetime,
    webhooks: bool,
    detail: dict[str, Any] | None = None,
) -> bool:
    """`claim_approval` in the caller's transaction."""
    if not decide(conn, row.id, APPROVED, actor=actor, now=now):
        return False
    approved_event(conn, row, actor=actor, correlation_id=correlation_id, now=now, webhooks=webhooks, detail=detail)
    return True


def approved_event(
    conn: Connection,
    row: Any,
    *,
    actor: str,
    correlation_id: str | None,
    now: datetime,
    webhooks: bool,
    detail: dict[str, Any] | None = None,
) -> None:
    """The approval's audit event and `plan.approved`, and the end of its alert (the plan was
    marked approved by `decide`, in the same transaction); `detail` adds to the event's."""
    close_alerts(conn, row.tenant_id, "plan_held", now, subject=row.source)
    plan_event(
        conn,
        row.tenant_id,
        row.tenant,
        "plan.approved",
        action="plan_approved",
        actor=actor,
        detail={
            "plan": row.id,
            "source": row.source,
            "reason": row.reason,
            "counts": dict(row.counts),
            **(detail or {}),
        },
        reason=f"approved by {actor}",
        correlation_id=correlation_id,
        now=now,
        webhooks=webhooks,
    )


def reject(engine: Engine, row: Any, *, actor: str, now: datetime) -> bool:
    """Mark the held plan `row` rejected (audited); False when it is no longer held."""
    return _close(
        engine,
        row,
        REJECTED,
        action="plan_rejected",
        detail={"plan": row.id, "source": row.source, "reason": row.reason, "counts": dict(row.counts)},
        reason=f"rejected by {actor}: nothing of it is applied",
        actor=actor,
        now=now,
    )


def expire(engine: Engine, row: Any, *, actor: str, now: datetime) -> bool:
    """Mark the held plan `row` expired (audited); False when it is no longer held."""
    return _close(
        engine,
        row,
        EXPIRED,
        action="plan_expired",
        detail={"plan": row.id, "source": row.source, "expires": row.expires_at.isoformat()},
        reason="nobody approved it before it expired: nothing of it is applied",
        actor=actor,
        now=now,
    )


def _close(
    engine: Engine,
    row: Any,
    status: str,
    *,
    action: str,
    detail: dict[str, Any],
    reason: str,
    actor: str,
    now: datetime,
) -> bool:
    """A held plan ends without being applied (rejected, expired): its accounts stay as they
    are, its alert closes, and the decision is audited, in one transaction."""
    with transaction(engine) as conn:
        if not decide(conn, row.id, status, actor=actor, now=now):
            return False
        keep_scim_accounts(conn, row, now)
        close_alerts(conn, row.tenant_id, "plan_held", now, subject=row.source)
        plan_event(
            conn,
            row.tenant_id,
            row.tenant,
            None,
            action=action,
            actor=actor,
            detail=detail,
            reason=reason,
            correlation_id=row.correlation_id,
            now=now,
            webhooks=False,
        )
    return True


def keep_scim_accounts(conn: Connection, row: Any, now: datetime) -> None:
    """A SCIM guard's plan rejected or expired: its accounts stay as they are, and no later
    re-plan of the same identities applies what was held (bridge.provision.replan); the identity
    provider's next version of a person is planned, and guarded, as any write."""
    if row.source != SCIM_SOURCE:
        return
    parts, _ = plan_accounts(conn, row.id)
    keep(
        conn,
        row.tenant_id,
        row.id,
        [(p.account_id, p.payload.get(HELD_DIGEST) or "") for p in parts if p.account_id is not None],
        now,
    )
