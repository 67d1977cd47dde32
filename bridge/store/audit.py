"""The audit trail: append-only events, one per account change (written with the
change, by `bridge.provision.apply`) and one per tenant-wide decision (`record_tenant_event`:
an overridden safety check, a group, a webhook endpoint, a SCIM token, an outbox retry). Events
are never updated; the daily purge is the only delete. `list_audit` returns them oldest first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from bridge.store.tables import AuditEvent

audit = AuditEvent.__table__


def list_audit(
    conn: Connection, tenant_id: int, account_id: str | None = None, since: datetime | None = None, limit: int = 1000
) -> list[Any]:
    query = select(audit).where(audit.c.tenant_id == tenant_id)
    if account_id:
        query = query.where(audit.c.account_id == account_id)
    if since:
        query = query.where(audit.c.occurred_at >= since)
    return list(conn.execute(query.order_by(audit.c.id.desc()).limit(limit)).all())[::-1]


def record_tenant_event(
    conn: Connection,
    tenant_id: int,
    *,
    actor: str,
    action: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None,
    reason: str | None,
    correlation_id: str | None,
    now: datetime,
) -> None:
    """Append an audit event about no one account: the tenant as a whole (an overridden safety
    check), one of its groups, its webhook endpoint."""
    conn.execute(
        insert(audit).values(
            tenant_id=tenant_id,
            account_id=None,
            actor=actor,
            action=action,
            before=before,
            after=after,
            reason=reason,
            correlation_id=correlation_id,
            occurred_at=now,
        )
    )
