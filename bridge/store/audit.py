"""The audit trail: append-only events, one per account change (written with the
change, by `bridge.provision.apply`) and one per tenant-wide decision (`record_tenant_event`:
an overridden safety check, a group, a webhook endpoint, a SCIM token, an outbox retry). Events
are never updated; the daily purge is the only delete. `list_audit` returns them oldest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, text

from bridge.core.lifecycle import SEAT_STATES, Status
from bridge.core.mapping import RoleMapping
from bridge.store.accounts import seats_outside
from bridge.store.tables import Account, AuditEvent, RoleGrant, UTCDateTime

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
        # No matching event has a smaller id than the window's first: with that bound a page
        # walking the ids back (ix_audit_tenant_id) stops at the window instead of reading the
        # rest of the trail to find nothing (the CSV export's last chunk: 500 ms at 100k accounts).
        first = select(func.min(audit.c.id)).where(audit.c.tenant_id == tenant_id, audit.c.occurred_at >= since)
        query = query.where(audit.c.occurred_at >= since, audit.c.id >= first.scalar_subquery())
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
    today with the count as it is now (`store.accounts.seats_outside`, the count the seat limit
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
        current = seats_outside(conn, tenant_id, mapping, suspended_counts_as_seat=suspended_counts_as_seat)
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


# ---- who held a role on a day (the console's access report) ---------------------------------


@dataclass(frozen=True)
class Holder:
    account_id: str
    user_name: str | None  # as the account is named now (None: the account row is gone)
    email: str | None
    status: str | None  # at the start of the day, or right after the grant during it
    rule: str | None  # the rule that granted the role, as recorded with the grant (None: not kept)
    granted_at: datetime | None  # when it was granted during the day; None: held when the day began


def role_holders_on(conn: Connection, tenant_id: int, role: str, day: date) -> list[Holder]:
    """Who held `role` at any time on the UTC day `day`, and by which rule, in userName order.

    Reconstructed backwards from now, like `seat_history`, so it is as complete as the trail after
    the day (the daily purge removes the oldest events first, never those after a kept one):
    - who held it when the day began: an account with an event since then held what that first
      event's `before` snapshot says (status and roles); one without held what it holds now
      (`role_grants`, index ix_role_grants_role);
    - who was granted it during the day: its `grant_roles` events of that day.
    The rule is the one recorded with the grant (`role_grants.rule`, or the `granted` detail of
    the last `grant_roles` event before the day for an account changed since).

    Reads the tenant's events from the start of the day to now (index ix_audit_tenant_time),
    one MIN(id) per account of them in SQL and only the first event's snapshot per account, the
    current holders of the role, and the earlier `grant_roles` events of the accounts both changed
    since the day and holding the role when it began (index ix_audit_account); none of the other
    events before the day."""
    accounts = Account.__table__
    grants = RoleGrant.__table__
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)

    first = (
        select(audit.c.account_id.label("aid"), func.min(audit.c.id).label("first_id"))
        .where(audit.c.tenant_id == tenant_id, audit.c.occurred_at >= start, audit.c.account_id.is_not(None))
        .group_by(audit.c.account_id)
        .subquery()
    )
    at_start: dict[str, dict[str, Any]] = {
        aid: before or {}
        for aid, before in conn.execute(
            select(audit.c.account_id, audit.c.before).join(first, audit.c.id == first.c.first_id)
        )
    }
    held: dict[str, tuple[str | None, str | None, datetime | None]] = {}  # account -> status, rule, granted_at
    for aid, status, rule in conn.execute(
        select(grants.c.account_id, accounts.c.status, grants.c.rule)
        .join(accounts, accounts.c.id == grants.c.account_id)
        .where(grants.c.tenant_id == tenant_id, grants.c.role == role)
    ):
        if aid not in at_start:
            held[aid] = (status, rule, None)
    earlier = [aid for aid, snap in at_start.items() if role in (snap.get("roles") or ()) and snap.get("status")]
    rules = _last_grant_rules(conn, tenant_id, earlier, role, before=start)
    for aid in earlier:
        held[aid] = (at_start[aid].get("status"), rules.get(aid), None)
    for aid, after, occurred_at in conn.execute(
        select(audit.c.account_id, audit.c.after, audit.c.occurred_at)
        .where(
            audit.c.tenant_id == tenant_id,
            audit.c.occurred_at >= start,
            audit.c.occurred_at < end,
            audit.c.account_id.is_not(None),
            audit.c.action == "grant_roles",
        )
        .order_by(audit.c.id)
    ):
        granted = ((after or {}).get("detail") or {}).get("granted") or {}
        if role in granted and aid not in held:
            held[aid] = ((after or {}).get("status"), granted[role], occurred_at)
    names: dict[str, tuple[str, str | None]] = {}
    ids = list(held)
    for chunk in range(0, len(ids), 500):
        for aid, user_name, email in conn.execute(
            select(accounts.c.id, accounts.c.user_name, accounts.c.email).where(
                accounts.c.tenant_id == tenant_id, accounts.c.id.in_(ids[chunk : chunk + 500])
            )
        ):
            names[aid] = (user_name, email)
    out = [
        Holder(aid, names.get(aid, (None, None))[0], names.get(aid, (None, None))[1], status, rule, granted_at)
        for aid, (status, rule, granted_at) in held.items()
    ]
    return sorted(out, key=lambda h: ((h.user_name or "").casefold(), h.account_id))


def _last_grant_rules(
    conn: Connection, tenant_id: int, account_ids: list[str], role: str, *, before: datetime
) -> dict[str, str]:
    """account -> the rule of its last `grant_roles` event granting `role` before `before`."""
    out: dict[str, str] = {}
    for chunk in range(0, len(account_ids), 500):
        for aid, after in conn.execute(
            select(audit.c.account_id, audit.c.after)
            .where(
                audit.c.tenant_id == tenant_id,
                audit.c.account_id.in_(account_ids[chunk : chunk + 500]),
                audit.c.action == "grant_roles",
                audit.c.occurred_at < before,
            )
            .order_by(audit.c.id.desc())
        ):
            granted = ((after or {}).get("detail") or {}).get("granted") or {}
            if aid not in out and role in granted:
                out[aid] = granted[role]
    return out
