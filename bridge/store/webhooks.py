"""Webhook endpoints: whether bridge may post to a webhook URL.

Contract: one row per URL, keyed by `url_key(url)` (the SHA-256 of the URL, so a long URL makes
a fixed-size key); no row means enabled. The outbox worker disables an endpoint when the
receiver answers 410 Gone (`disable_endpoint`, idempotent: only the first disabling writes a
`webhook_disabled` audit event, for the tenant whose message met the 410); the operator
re-enables it (`enable_endpoint`, from `bridge outbox enable-webhook`). The caller holds the
transaction; nothing here raises but the database's own errors.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from bridge.store.audit import record_tenant_event
from bridge.store.tables import WebhookEndpoint

endpoints = WebhookEndpoint.__table__


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def endpoint_disabled(conn: Connection, url: str) -> str | None:
    """The reason the endpoint is disabled, or None when it is enabled."""
    row = conn.execute(
        select(endpoints.c.disabled_at, endpoints.c.disabled_reason).where(endpoints.c.url_hash == url_key(url))
    ).first()
    if row is None or row.disabled_at is None:
        return None
    return row.disabled_reason or "disabled"


def disable_endpoint(conn: Connection, url: str, reason: str, now: datetime, *, tenant_id: int, actor: str) -> bool:
    """Disable `url` (idempotent); the first disabling writes an audit event for `tenant_id`."""
    key = url_key(url)
    row = conn.execute(select(endpoints.c.disabled_at).where(endpoints.c.url_hash == key)).first()
    if row is not None and row.disabled_at is not None:
        return False
    if row is None:
        conn.execute(
            insert(endpoints).values(url_hash=key, url=url, disabled_at=now, disabled_reason=reason, updated_at=now)
        )
    else:
        conn.execute(
            update(endpoints)
            .where(endpoints.c.url_hash == key)
            .values(disabled_at=now, disabled_reason=reason, updated_at=now)
        )
    record_tenant_event(
        conn,
        tenant_id,
        actor=actor,
        action="webhook_disabled",
        before={"webhook": "enabled"},
        after={"webhook": "disabled", "url": url},
        reason=reason,
        correlation_id=None,
        now=now,
    )
    return True


def enable_endpoint(conn: Connection, url: str, now: datetime) -> bool:
    """Re-enable `url`; False when it was not disabled."""
    result = conn.execute(
        update(endpoints)
        .where(endpoints.c.url_hash == url_key(url), endpoints.c.disabled_at.is_not(None))
        .values(disabled_at=None, disabled_reason=None, updated_at=now)
    )
    return result.rowcount == 1
