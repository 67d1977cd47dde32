"""An administrator's actions, for every door that offers them (the `bridge` command, the web
console): archive, reactivate and resend the activation of an account, create and revoke a SCIM
token, retry an undelivered outbox message.

Contract: each action is one call that opens its own transaction(s), decides nothing the core
or the store does not already decide, audits what it did with the `actor` the door passes in
(`cli:<OS user>`, `admin:<email>`), and raises the errors it always raised (`NotFound`,
`Ambiguous`, `ActionRefused`, `RetryRefused`). A door that acts for one tenant only passes
`tenant_id` (or its tenant's name): a token or a message of another tenant is `NotFound`, with
the message an unknown id gets, so the answer does not tell that it exists elsewhere. The door
renders the result; nothing here prints.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from bridge.errors import InvalidValue, NotFound
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import (
    archive_account,
    reactivate_account,
    replan_waiting,
    resend_activation,
    room_freed,
    tenant_view,
)
from bridge.runtime import Runtime
from bridge.store.accounts import account_roles, find_account
from bridge.store.audit import record_tenant_event
from bridge.store.db import transaction
from bridge.store.outbox import message_for_retry, retry_message
from bridge.store.tenants import get_tenant
from bridge.store.tokens import create_token, get_token, revoke_token

AccountAction = Literal["archive", "reactivate", "resend"]
ACCOUNT_ACTIONS: tuple[AccountAction, ...] = ("archive", "reactivate", "resend")

# How long a token may be made valid for (the CLI's --expires-days bounds).
TOKEN_DAYS_MAX = 3650


def correlation_for(actor: str) -> str:
    """A fresh correlation id named after the door (`cli-…`, `admin-…`), for one action."""
    return f"{actor.split(':', 1)[0]}-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class ActionResult:
    user_name: str
    before: str  # the account's status before the action
    after: str  # and after it (and after the re-plan a reactivation runs)
    account_id: str


def run_action(
    runtime: Runtime,
    tenant_name: str,
    user: str,
    action: AccountAction,
    *,
    actor: str,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> ActionResult:
    """Archive (with an administrator's hold), reactivate (lifting it) or resend the activation
    of the account `user` names (id, userName or email) in the tenant. The core refuses what the
    lifecycle does not allow (`ActionRefused`). A seat or limited role an archive frees goes to
    whoever waits for it, after the commit."""
    if action not in ACCOUNT_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    tenant_cfg = runtime.config.tenant_settings(tenant_name)
    with transaction(runtime.engine) as conn:
        view = tenant_view(conn, tenant_cfg)
        row = find_account(conn, view.id, user)
        ctx = ApplyContext.for_tenant(
            runtime.config,
            view.id,
            view.name,
            actor=actor,
            correlation_id=correlation_id or correlation_for(actor),
            now=now or datetime.now(UTC),
        )
        freed = False
        if action == "archive":
            roles = [r for r, _ in account_roles(conn, [row.id]).get(row.id, [])]
            freed = room_freed([archive_account(conn, row, roles, ctx)], view)
        elif action == "reactivate":
            reactivate_account(conn, view, row, ctx)
        else:
            resend_activation(conn, row, ctx)
        after = find_account(conn, view.id, row.id)
    if freed:  # the seat or limited role given up goes to whoever waits for it, at once
        replan_waiting(runtime.engine, tenant_cfg, ctx)
    return ActionResult(user_name=after.user_name, before=row.status, after=after.status, account_id=row.id)


@dataclass(frozen=True)
class NewToken:
    id: str
    token: str  # the clear token: shown once by the door, never stored
    tenant_name: str
    read_only: bool
    expires_at: datetime | None


def create_scim_token(
    runtime: Runtime,
    tenant_name: str,
    *,
    label: str | None,
    read_only: bool,
    expires_days: int | None,
    actor: str,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> NewToken:
    """Create a SCIM bearer token for the tenant, audited as `token_created` (its id, label,
    read-only and expiry; never the token)."""
    if expires_days is not None and not 1 <= expires_days <= TOKEN_DAYS_MAX:
        raise InvalidValue(f"a token expires after 1 to {TOKEN_DAYS_MAX} days, not {expires_days}")
    now = now or datetime.now(UTC)
    expires_at = now + timedelta(days=expires_days) if expires_days else None
    with transaction(runtime.engine) as conn:
        tenant = get_tenant(conn, tenant_name)
        token_id, token = create_token(conn, tenant.id, label, read_only, now, expires_at)
        record_tenant_event(
            conn,
            tenant.id,
            actor=actor,
            action="token_created",
            after={
                "token": token_id,
                "label": label,
                "readOnly": read_only,
                "expires": expires_at.isoformat() if expires_at else None,
            },
            reason=None,
            correlation_id=correlation_id or correlation_for(actor),
            now=now,
        )
    return NewToken(id=token_id, token=token, tenant_name=tenant.name, read_only=read_only, expires_at=expires_at)


def revoke_scim_token(
    runtime: Runtime,
    token_id: str,
    *,
    actor: str,
    tenant_id: int | None = None,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> None:
    """Revoke a token (it stops working on the next request), audited as `token_revoked` in the
    token's tenant. `tenant_id` scopes the action: another tenant's token is `NotFound`, as an
    unknown or already revoked one is."""
    now = now or datetime.now(UTC)
    with transaction(runtime.engine) as conn:
        row = get_token(conn, token_id)
        if (
            row is None
            or row.revoked_at is not None
            or (tenant_id is not None and row.tenant_id != tenant_id)
            or not revoke_token(conn, token_id, now)
        ):
            raise NotFound(f"no active token {token_id}")
        record_tenant_event(
            conn,
            row.tenant_id,
            actor=actor,
            action="token_revoked",
            before={"token": row.id, "label": row.label, "readOnly": row.read_only},
            after={"token": row.id, "revoked": now.isoformat()},
            reason=None,
            correlation_id=correlation_id or correlation_for(actor),
            now=now,
        )


@dataclass(frozen=True)
class RetryResult:
    message_id: int
    before: str  # the status it had: dead, failed or queued; it is queued now
    tenant_id: int


def retry_outbox_message(
    runtime: Runtime,
    message_id: int,
    *,
    actor: str,
    tenant_id: int | None = None,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> RetryResult:
    """Queue a dead or failed outbox message again, due now, with a fresh attempt count (the
    store's `retry_message` decides what may be retried), audited as `outbox_retried` in the
    message's tenant. `tenant_id` scopes the action: another tenant's message is `NotFound`."""
    now = now or datetime.now(UTC)
    with transaction(runtime.engine) as conn:
        row = message_for_retry(conn, message_id)
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFound(f"no outbox message {message_id}")
        before = retry_message(conn, message_id, now)
        message = {"message": message_id, "channel": row.channel, "topic": row.topic, "account": row.account_id}
        record_tenant_event(
            conn,
            row.tenant_id,
            actor=actor,
            action="outbox_retried",
            before={**message, "status": before, "attempts": row.attempts, "lastError": row.last_error},
            after={**message, "status": "queued", "attempts": 0},
            reason=None,
            correlation_id=correlation_id or correlation_for(actor),
            now=now,
        )
    return RetryResult(message_id=message_id, before=before, tenant_id=row.tenant_id)
