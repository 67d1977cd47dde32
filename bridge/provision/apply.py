"""Apply a `Plan`: each account's changes, its audit events and its outbox messages commit
together or not at all.

Accounts are applied in batches of transactions (`batch_size` accounts per transaction) for
speed; a batch never splits one account's changes, and when a batch fails it is replayed one
account per transaction so a single bad row cannot hold back the others. Applying the same plan
twice changes nothing the second time: the planner compares against the stored state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from bridge.core.lifecycle import Event, Status
from bridge.core.plan import AccountPlan, Change, Plan
from bridge.store.db import transaction
from bridge.store.identities import identity_values
from bridge.store.repo import fold, new_id
from bridge.store.tables import Account, AuditEvent, Identity, OutboxMessage, RoleGrant

log = logging.getLogger(__name__)

accounts = Account.__table__
identities = Identity.__table__
role_grants = RoleGrant.__table__
audit = AuditEvent.__table__
outbox = OutboxMessage.__table__

# Product events (webhooks) by the change that causes them.
_EVENT_TOPICS = {
    "create": "account.created",
    "grant_roles": "account.roles_changed",
    "revoke_roles": "account.roles_changed",
    "suspend": "account.suspended",
    "resume": "account.resumed",
    "archive": "account.archived",
    "reactivate": "account.reactivated",
}


@dataclass(frozen=True)
class ApplyContext:
    tenant_id: int
    tenant_name: str
    actor: str
    correlation_id: str
    now: datetime
    webhooks: bool = False  # queue product events only when a webhook endpoint is configured
    default_language: str = "en"


@dataclass
class ApplyResult:
    applied: int = 0
    errors: list[str] = field(default_factory=list)


def apply_plan(engine: Engine, plan: Plan, ctx: ApplyContext, *, batch_size: int = 200, progress: Any = None) -> ApplyResult:
    result = ApplyResult()
    pending = plan.accounts
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        try:
            with transaction(engine) as conn:
                for account_plan in batch:
                    apply_account(conn, account_plan, ctx)
            result.applied += len(batch)
        except SQLAlchemyError:
            log.warning("batch of %d accounts failed; retrying one by one", len(batch))
            for account_plan in batch:
                try:
                    with transaction(engine) as conn:
                        apply_account(conn, account_plan, ctx)
                    result.applied += 1
                except SQLAlchemyError as exc:
                    message = f"{account_plan.user_name}: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"
                    log.error("account not applied: %s", message)
                    result.errors.append(message)
        if progress is not None:
            progress(len(batch))
    return result


def _snapshot(plan: AccountPlan, status: Status | None, roles: Sequence[str]) -> dict[str, Any]:
    return {"status": status.value if status else None, "roles": sorted(roles)}


def apply_account(conn: Connection, plan: AccountPlan, ctx: ApplyContext) -> str:
    """Write one account's plan on `conn` (inside the caller's transaction). Returns the account id."""
    now = ctx.now
    user = plan.user
    account_id = plan.account_id
    if user is not None and (plan.identity_changed or account_id is None):
        values = identity_values(user)
        if account_id is None:
            # A channel may have stored the identity already (SCIM writes it before planning);
            # the account then takes that identity's id.
            account_id = conn.execute(
                select(identities.c.id).where(
                    identities.c.tenant_id == ctx.tenant_id, identities.c.source == plan.source,
                    identities.c.kind == "user", identities.c.anchor == plan.anchor,
                )
            ).scalar_one_or_none()
        if account_id is None:
            account_id = new_id()
            conn.execute(
                insert(identities).values(
                    id=account_id, tenant_id=ctx.tenant_id, source=plan.source, kind="user", anchor=plan.anchor,
                    created_at=now, updated_at=now, version=1, **values,
                )
            )
        elif plan.identity_changed:
            conn.execute(
                update(identities)
                .where(identities.c.id == account_id, identities.c.tenant_id == ctx.tenant_id)
                .values(updated_at=now, version=identities.c.version + 1, **values)
            )
    if not plan.changes:
        return account_id or ""
    assert account_id is not None

    status: Status | None = plan.before
    roles: set[str] = set()
    if plan.account_id is not None:
        roles = {
            r for (r,) in conn.execute(select(role_grants.c.role).where(role_grants.c.account_id == account_id))
        }
    fields: dict[str, Any] = {}
    activation_mail = False
    topics: list[tuple[str, dict[str, Any]]] = []

    for change in plan.changes:
        before = _snapshot(plan, status, roles)
        status = _status_after(change, status, plan)
        detail: dict[str, Any] = {}
        if change.kind == "create":
            assert user is not None
            conn.execute(
                insert(accounts).values(
                    id=account_id, tenant_id=ctx.tenant_id, identity_id=account_id, source=plan.source,
                    anchor=plan.anchor, user_name=user.user_name, user_name_norm=fold(user.user_name),
                    email=user.email, email_norm=fold(user.email), given_name=user.given_name,
                    family_name=user.family_name, display_name=user.display_name, user_type=change.user_type,
                    status=Status.NO_ACCESS.value, denied={}, admin_hold=False, expires_at=change.expires_at,
                    created_at=now, updated_at=now, version=1,
                )
            )
            detail = {"userName": user.user_name, "email": user.email, "userType": change.user_type}
        elif change.kind == "update":
            for name, (_, new) in change.fields.items():
                fields[name] = new
                if name in ("user_name", "email"):
                    fields[f"{name}_norm"] = fold(new)  # type: ignore[arg-type]
            detail = {name: {"from": old, "to": new} for name, (old, new) in change.fields.items()}
        elif change.kind == "grant_roles":
            for role, rule in change.roles.items():
                conn.execute(
                    insert(role_grants).values(
                        account_id=account_id, role=role, tenant_id=ctx.tenant_id, rule=rule, granted_at=now
                    )
                )
                roles.add(role)
            detail = {"granted": dict(change.roles)}
            activation_mail = activation_mail or change.event is Event.GRANT_ROLES
        elif change.kind == "revoke_roles":
            if change.roles:
                conn.execute(
                    delete(role_grants).where(
                        role_grants.c.account_id == account_id, role_grants.c.role.in_(change.roles)
                    )
                )
            roles -= set(change.roles)
            detail = {"revoked": list(change.roles)}
        elif change.kind == "resend_activation":
            activation_mail = True
        after = _snapshot(plan, status, roles)
        conn.execute(
            insert(audit).values(
                tenant_id=ctx.tenant_id, account_id=account_id, actor=ctx.actor, action=change.kind,
                before=before, after={**after, **({"detail": detail} if detail else {})},
                reason=change.reason, correlation_id=ctx.correlation_id, occurred_at=now,
            )
        )
        topic = _EVENT_TOPICS.get(change.kind)
        if change.kind == "grant_roles" and change.event is Event.GRANT_ROLES:
            topic = "account.pending"
        if topic:
            topics.append((topic, {"before": before, "after": after, **({"detail": detail} if detail else {})}))

    if plan.after is Status.ARCHIVED and roles:
        # Archiving revokes access whatever the plan listed: nothing may survive in role_grants.
        conn.execute(delete(role_grants).where(role_grants.c.account_id == account_id))
        roles = set()

    assert status is plan.after, f"plan for {plan.user_name} ends in {plan.after}, apply reached {status}"
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id, accounts.c.tenant_id == ctx.tenant_id)
        .values(
            status=status.value,
            status_before_suspend=plan.status_before_suspend.value if plan.status_before_suspend else None,
            denied=dict(plan.denied),
            updated_at=now,
            version=accounts.c.version + 1,
            **fields,
        )
    )
    if activation_mail:
        queue_activation_mail(conn, ctx, account_id)
    if ctx.webhooks:
        for topic, change_payload in topics:
            queue_webhook(conn, ctx, account_id, topic, change_payload)
    return account_id


def _status_after(change: Change, status: Status | None, plan: AccountPlan) -> Status:
    from bridge.core.lifecycle import apply_event

    if change.kind == "create":
        return Status.NO_ACCESS
    event = getattr(change, "event", None)
    if event is None:
        assert status is not None
        return status
    assert status is not None
    new_status, _ = apply_event(status, event, getattr(change, "target", None))
    return new_status


def queue_activation_mail(conn: Connection, ctx: ApplyContext, account_id: str) -> int:
    """Queue an activation mail; any earlier one still queued for this account is superseded,
    so a changed address or a resend never lets an old link go out after the new one."""
    row = conn.execute(
        select(accounts.c.email, accounts.c.user_name, accounts.c.version, accounts.c.given_name,
               identities.c.preferred_language)
        .join(identities, identities.c.id == accounts.c.identity_id)
        .where(accounts.c.id == account_id, accounts.c.tenant_id == ctx.tenant_id)
    ).one()
    conn.execute(
        update(outbox)
        .where(
            outbox.c.tenant_id == ctx.tenant_id, outbox.c.account_id == account_id,
            outbox.c.topic == "activation", outbox.c.status == "queued",
        )
        .values(status="superseded")
    )
    result = conn.execute(
        insert(outbox).values(
            tenant_id=ctx.tenant_id, account_id=account_id, channel="email", topic="activation",
            payload={
                "to": row.email, "userName": row.user_name, "givenName": row.given_name,
                "language": row.preferred_language or ctx.default_language,
            },
            idempotency_key=f"activation:{account_id}:{new_id()}",
            status="queued", attempts=0, next_attempt_at=ctx.now, created_at=ctx.now,
        )
    )
    return int(result.inserted_primary_key[0])


def queue_webhook(conn: Connection, ctx: ApplyContext, account_id: str, topic: str, change: dict[str, Any]) -> None:
    event_id = new_id()
    conn.execute(
        insert(outbox).values(
            tenant_id=ctx.tenant_id, account_id=account_id, channel="webhook", topic=topic,
            payload={
                "id": event_id, "type": topic, "tenant": ctx.tenant_name,
                "occurred_at": ctx.now.isoformat(), "account": {"id": account_id}, "change": change,
            },
            idempotency_key=f"webhook:{event_id}",
            status="queued", attempts=0, next_attempt_at=ctx.now, created_at=ctx.now,
        )
    )
