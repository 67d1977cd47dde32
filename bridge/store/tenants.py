"""Tenants: one row per customer, by name. Every other table carries a tenant id, and
every store query takes one: this module is how a name becomes that id.

Contract: `ensure_tenant` is the only writer of a tenant row (config and `bridge tenants add` call
it); `get_tenant` raises `bridge.errors.NotFound` for an unknown name, which the CLI renders as a
one-line error and the SCIM door never sees (its token names the tenant). `seat_limit` is the
stored limit; the effective limit (config wins) is decided in `bridge.core.plan.effective_seat_limit`.
`mapping_fingerprint` is the fingerprint of the mapping the tenant's accounts were last planned
with; the engine's re-plan writes it after a re-plan commits. `paused_at` is set while the tenant
is paused (bridge.engine.pause).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from bridge.core.lifecycle import Status
from bridge.errors import NotFound
from bridge.store.accounts import account_counts
from bridge.store.outbox import problem_counts
from bridge.store.runs import newest_runs
from bridge.store.tables import Tenant

tenants = Tenant.__table__


@dataclass(frozen=True)
class TenantRow:
    id: int
    name: str
    seat_limit: int | None
    created_at: datetime
    paused_at: datetime | None = None


def ensure_tenant(
    conn: Connection, name: str, seat_limit: int | None, now: datetime, *, update_limit: bool
) -> TenantRow:
    """Create the tenant if missing (idempotent); `update_limit` makes the given limit authoritative."""
    row = conn.execute(select(tenants).where(tenants.c.name == name)).first()
    if row is None:
        conn.execute(insert(tenants).values(name=name, seat_limit=seat_limit, created_at=now))
    elif update_limit and row.seat_limit != seat_limit:
        conn.execute(update(tenants).where(tenants.c.id == row.id).values(seat_limit=seat_limit))
    return get_tenant(conn, name)


_TENANT_BY_NAME = select(tenants).where(tenants.c.name == bindparam("name"))  # every SCIM write


def get_tenant(conn: Connection, name: str) -> TenantRow:
    row = conn.execute(_TENANT_BY_NAME, {"name": name}).first()
    if row is None:
        raise NotFound(f'no tenant named "{name}"')
    return TenantRow(row.id, row.name, row.seat_limit, row.created_at, row.paused_at)


def list_tenants(conn: Connection) -> list[TenantRow]:
    rows = conn.execute(select(tenants).order_by(tenants.c.name)).all()
    return [TenantRow(r.id, r.name, r.seat_limit, r.created_at, r.paused_at) for r in rows]


def stored_fingerprint(conn: Connection, tenant_id: int) -> str | None:
    """The fingerprint of the mapping the tenant's accounts were last planned with (None: never)."""
    return conn.execute(  # type: ignore[no-any-return]
        select(tenants.c.mapping_fingerprint).where(tenants.c.id == tenant_id)
    ).scalar_one_or_none()


def save_fingerprint(conn: Connection, tenant_id: int, fingerprint: str) -> None:
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(mapping_fingerprint=fingerprint))


def set_paused(conn: Connection, tenant_id: int, paused_at: datetime | None, now: datetime) -> None:
    """Pause (a time) or resume (None) the tenant; bridge.engine.pause decides what that means.
    Resuming also records that the SCIM catch-up is due, in the same statement."""
    values: dict[str, Any] = {"paused_at": paused_at}
    if paused_at is None:
        values["catch_up_due_at"] = now
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))


def catch_up_done(conn: Connection, tenant_id: int) -> None:
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(catch_up_due_at=None))


def catch_up_due(conn: Connection) -> list[str]:
    """Tenants resumed whose SCIM catch-up did not finish (a crash, a failure): the replan job's."""
    statement = select(tenants.c.name).where(tenants.c.catch_up_due_at.is_not(None), tenants.c.paused_at.is_(None))
    return list(conn.execute(statement.order_by(tenants.c.name)).scalars())


def tenant_names(conn: Connection) -> dict[int, str]:
    """Every tenant's name by id (the outbox worker's and the metrics' labels)."""
    return dict(conn.execute(select(tenants.c.id, tenants.c.name)).tuples().all())


def stored_seat_limits(conn: Connection) -> dict[str, int | None]:
    """Every tenant's stored seat limit by name (None: no stored limit)."""
    return dict(conn.execute(select(tenants.c.name, tenants.c.seat_limit)).tuples().all())


@dataclass(frozen=True)
class TenantSummary:
    """A tenant's line in the operator's list: accounts by status (every status, 0 included),
    its newest sync run (a `sync_runs` row, None before the first), and how many outbox rows
    need an operator (dead and failed)."""

    id: int
    name: str
    seat_limit: int | None
    accounts: dict[str, int]
    last_run: Any | None
    mail_problems: int


def tenant_summaries(conn: Connection) -> list[TenantSummary]:
    """Every tenant's summary, by name, in four queries whatever the number of tenants."""
    by_status: dict[int, dict[str, int]] = {}
    for tenant_id, status, count in account_counts(conn):
        by_status.setdefault(tenant_id, {})[status] = count
    runs = newest_runs(conn)
    problems = problem_counts(conn)
    return [
        TenantSummary(
            id=t.id,
            name=t.name,
            seat_limit=t.seat_limit,
            accounts={s.value: by_status.get(t.id, {}).get(s.value, 0) for s in Status},
            last_run=runs.get(t.id),
            mail_problems=problems.get(t.id, 0),
        )
        for t in list_tenants(conn)
    ]
