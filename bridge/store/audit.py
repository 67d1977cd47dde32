"""The audit trail: append-only events, one per account change (written with the
change, by `bridge.provision.apply`) and one per tenant-wide decision (`record_tenant_event`:
an overridden safety check, a group, a webhook endpoint, a SCIM token, an outbox retry). Events
are never updated; the daily purge is the only delete. `list_audit` returns them oldest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, text

from bridge.core.lifecycle import SEAT_STATES, Status
from bridge.core.mapping import RoleMapping
from bridge.store.accounts import usage_outside
from bridge.store.tables import AuditEvent, UTCDateTime

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


# ---- the console's reads ---------------------------------------------------------------------


def _filtered(
    tenant_id: int,
    *,
    actor: str | None,
    account_id: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    before_id: int | None,
) -> Any:
    query = select(audit).where(audit.c.tenant_id == tenant_id)
    if actor:
        query = query.where(audit.c.actor == actor)
    if account_id:
        query = query.where(audit.c.account_id == account_id)
    if action:
        query = query.where(audit.c.action == action)
    if since:
        query = query.where(audit.c.occurred_at >= since)
    if until:
        query = query.where(audit.c.occurred_at < until)
    if before_id is not None:
        query = query.where(audit.c.id < before_id)
    return query.order_by(audit.c.id.desc())


def audit_page(
    conn: Connection,
    tenant_id: int,
    *,
    actor: str | None = None,
    account_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> tuple[list[Any], int | None]:
    """One page of the tenant's events matching every filter given (exact actor, account id and
    action; `since` inclusive, `until` exclusive), newest first: (rows, the `before_id` of the
    next page, or None on the last). Keyset paging on the id, so the thousandth page costs what
    the first does and events written meanwhile do not shift the pages."""
    limit = max(1, min(limit, 1000))
    query = _filtered(
        tenant_id, actor=actor, account_id=account_id, action=action, since=since, until=until, before_id=before_id
    )
    rows = list(conn.execute(query.limit(limit + 1)).all())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


AUDIT_CHUNK = 1000


def audit_rows(
    conn: Connection,
    tenant_id: int,
    *,
    actor: str | None = None,
    account_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Any]:
    """Every event `audit_page` would page through with these filters, newest first, read
    AUDIT_CHUNK at a time (the CSV export): memory stays flat whatever the trail's size, and no
    statement stays open between chunks. The caller keeps `conn` open while it iterates."""
    before_id: int | None = None
    while True:
        rows, before_id = audit_page(
            conn,
            tenant_id,
            actor=actor,
            account_id=account_id,
            action=action,
            since=since,
            until=until,
            before_id=before_id,
            limit=AUDIT_CHUNK,
        )
        yield from rows
        if before_id is None:
            return


# Per UTC day, the seats the day's events took (after) minus those they freed (before). A seat is
# what bridge.core.lifecycle.is_seat says: a seat state and at least one billable role; the
# snapshots `before` and `after` of every account event carry the status and the roles.
_SEAT_SQL = {
    "sqlite": (
        "substr(occurred_at, 1, 10)",
        "(CASE WHEN json_extract({col}, '$.status') IN :states AND EXISTS "
        "(SELECT 1 FROM json_each({col}, '$.roles') AS r WHERE r.value IN :billable) THEN 1 ELSE 0 END)",
    ),
    "postgresql": (
        "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "(CASE WHEN ({col} ->> 'status') IN :states AND EXISTS "
        "(SELECT 1 FROM json_array_elements_text({col} -> 'roles') AS r(value) WHERE r.value IN :billable) "
        "THEN 1 ELSE 0 END)",
    ),
}


# Changes whose before and after hold the same seat whatever the mapping (their status and roles
# are the same, or never a seat): skipped without decoding their JSON, most of a quiet day's events.
_SEATLESS = ("create", "update", "activate", "resend_activation")


def _seat_deltas(conn: Connection) -> Any:
    day, seat = _SEAT_SQL[conn.dialect.name]
    return text(
        f"SELECT day, SUM(seat_after) - SUM(seat_before) FROM ("
        f"SELECT {day} AS day, {seat.format(col='after')} AS seat_after, {seat.format(col='before')} AS seat_before "
        "FROM audit_events WHERE tenant_id = :tenant_id AND occurred_at >= :start AND occurred_at <= :now "
        "AND account_id IS NOT NULL AND action NOT IN :seatless"
        ") AS events GROUP BY day"
    ).bindparams(
        bindparam("states", expanding=True),
        bindparam("billable", expanding=True),
        bindparam("seatless", expanding=True),
        bindparam("start", type_=UTCDateTime()),
        bindparam("now", type_=UTCDateTime()),
    )


def seat_history(
    conn: Connection,
    tenant_id: int,
    *,
    mapping: RoleMapping,
    now: datetime,
    days: int = 90,
    suspended_counts_as_seat: bool = True,
    current: int | None = None,
) -> list[tuple[date, int]]:
    """Seats used at the end of each of the last `days` UTC days, oldest first, the last being
    today with the count as it is now (`store.accounts.usage_outside`, the count the seat limit
    is checked against).

    Reconstructed backwards from today's count: each earlier day is the next one minus the seats
    that the next day's audit events took and freed (an event's `before` and `after` snapshots
    judged by today's mapping: which roles are billable). So the history is as complete as the
    trail: a day older than the oldest kept event shows the count that followed it. One grouped
    query over the window's events (index ix_audit_tenant_time), none before it. `current`: today's
    count when the caller has it already (the overview shows it beside the chart), which saves the
    count, the costliest part at 100k accounts."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    if current is None:
        current = usage_outside(conn, tenant_id, mapping, suspended_counts_as_seat=suspended_counts_as_seat).seats
    billable = [r.id for r in mapping.roles.values() if r.billable]
    deltas: dict[str, int] = {}
    if billable:
        states = [s.value for s in SEAT_STATES if suspended_counts_as_seat or s is not Status.SUSPENDED]
        start = datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=1)
        params = {
            "tenant_id": tenant_id,
            "start": start,
            "now": now,
            "states": states,
            "billable": billable,
            "seatless": list(_SEATLESS),
        }
        deltas = {str(day): int(delta or 0) for day, delta in conn.execute(_seat_deltas(conn), params)}
    out = [(today, current)]
    seats = current
    for back in range(1, days):
        day = today - timedelta(days=back)
        seats -= deltas.get(str(day + timedelta(days=1)), 0)
        out.append((day, seats))
    return out[::-1]
