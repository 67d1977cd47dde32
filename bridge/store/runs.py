"""Sync runs: one row per sync, delta or re-plan, written by the engine when the run ends
(with its counts and outcome) and read by `bridge sync status`, the metrics and the pages.

Writes: a sync opens its row with `start_sync_run` (outcome "running") before it reads the source
and closes it with `finish_sync_run`, each in its own short transaction, so a run that dies midway
stays visible as "running". A re-plan writes its finished row at once (`record_sync_run`), in the
transaction that applied it. The engine fills every column; `counts`, `planned`, `forced`,
`errors` and `warnings` are JSON, cut by the caller. `purge_sync_runs` removes finished rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from bridge.store.tables import Account, AuditEvent, SyncRun, Tenant

sync_runs = SyncRun.__table__
tenants = Tenant.__table__
audit = AuditEvent.__table__
accounts = Account.__table__


def recent_sync_runs(
    conn: Connection, tenant_id: int | None = None, source: str | None = None, limit: int = 20
) -> list[Any]:
    query = select(sync_runs, tenants.c.name.label("tenant")).join(tenants, tenants.c.id == sync_runs.c.tenant_id)
    if tenant_id is not None:
        query = query.where(sync_runs.c.tenant_id == tenant_id)
    if source:
        query = query.where(sync_runs.c.source == source)
    return list(conn.execute(query.order_by(sync_runs.c.id.desc()).limit(limit)).all())


def start_sync_run(
    conn: Connection, *, tenant_id: int, source: str, mode: str, correlation_id: str, started_at: datetime
) -> int:
    """Open the run's row (outcome "running"); returns its id for `finish_sync_run`."""
    return conn.execute(
        insert(sync_runs).values(
            tenant_id=tenant_id,
            source=source,
            mode=mode,
            correlation_id=correlation_id,
            started_at=started_at,
            outcome="running",
        )
    ).inserted_primary_key[0]


def finish_sync_run(conn: Connection, run_id: int, **values: Any) -> None:
    """Close the run's row: `mode`, `finished_at`, `outcome`, `reason`, `counts`, `planned`,
    `forced`, `errors`, `warnings`."""
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(**values))


def record_sync_run(conn: Connection, **values: Any) -> None:
    """Write a finished run's row in one go (a re-plan): every column of `sync_runs` but `id`."""
    conn.execute(insert(sync_runs).values(**values))


def failed_in_a_row(conn: Connection, tenant_id: int, source: str, outcomes: tuple[str, ...], limit: int) -> int:
    """How many of the source's newest finished runs (at most `limit`) ended in one of `outcomes`,
    counted from the newest until one did not (the alert on a failing source)."""
    rows = conn.execute(
        select(sync_runs.c.outcome)
        .where(sync_runs.c.tenant_id == tenant_id, sync_runs.c.source == source, sync_runs.c.outcome != "running")
        .order_by(sync_runs.c.id.desc())
        .limit(limit)
    ).scalars()
    streak = 0
    for outcome in rows:
        if outcome not in outcomes:
            break
        streak += 1
    return streak


def purge_sync_runs(conn: Connection, cutoff: datetime) -> int:
    """Delete the runs finished before `cutoff`; returns how many."""
    return conn.execute(sync_runs.delete().where(sync_runs.c.finished_at < cutoff)).rowcount


# ---- the console's reads ---------------------------------------------------------------------


def last_runs(conn: Connection, tenant_id: int) -> list[Any]:
    """The newest run of each of the tenant's sources (a re-plan's row counts under its source),
    by source name: rows of `sync_runs`. One query: each source's highest id."""
    newest = select(func.max(sync_runs.c.id)).where(sync_runs.c.tenant_id == tenant_id).group_by(sync_runs.c.source)
    return list(
        conn.execute(
            select(sync_runs)
            .where(sync_runs.c.tenant_id == tenant_id, sync_runs.c.id.in_(newest))
            .order_by(sync_runs.c.source)
        ).all()
    )


def runs_page(
    conn: Connection, tenant_id: int, *, before_id: int | None = None, source: str | None = None, limit: int = 50
) -> tuple[list[Any], int | None]:
    """One page of the tenant's runs (of one source, or all), newest first: (rows of `sync_runs`,
    the `before_id` of the next page, or None on the last). Keyset paging on the id."""
    limit = max(1, min(limit, 1000))
    query = select(sync_runs).where(sync_runs.c.tenant_id == tenant_id)
    if source:
        query = query.where(sync_runs.c.source == source)
    if before_id is not None:
        query = query.where(sync_runs.c.id < before_id)
    rows = list(conn.execute(query.order_by(sync_runs.c.id.desc()).limit(limit + 1)).all())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def get_run(conn: Connection, tenant_id: int, run_id: int) -> Any | None:
    """The run with this id, if it is the tenant's (another tenant's run is None, as a missing one)."""
    return conn.execute(select(sync_runs).where(sync_runs.c.id == run_id, sync_runs.c.tenant_id == tenant_id)).first()


def run_changes(
    conn: Connection, tenant_id: int, run: Any, *, after_id: int | None = None, limit: int = 500
) -> tuple[list[Any], int | None]:
    """What the run changed, for whom and why: the tenant's audit events carrying the run's
    correlation id (every change its apply wrote, and a `--force` override), in the order they
    were written, with the account's current `user_name` (None for an event about no account, or
    an account since deleted). (rows, the `after_id` of the next page, or None on the last).
    A dry or aborted run wrote no event: its plan's counts are in `run.planned`."""
    limit = max(1, min(limit, 5000))
    query = (
        select(audit, accounts.c.user_name)
        .join(accounts, accounts.c.id == audit.c.account_id, isouter=True)
        .where(audit.c.tenant_id == tenant_id, audit.c.correlation_id == run.correlation_id)
    )
    if after_id is not None:
        query = query.where(audit.c.id > after_id)
    rows = list(conn.execute(query.order_by(audit.c.id).limit(limit + 1)).all())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def newest_runs(conn: Connection) -> dict[int, Any]:
    """Every tenant's newest run (whatever its source), by tenant id: one query."""
    newest = select(func.max(sync_runs.c.id)).group_by(sync_runs.c.tenant_id)
    return {r.tenant_id: r for r in conn.execute(select(sync_runs).where(sync_runs.c.id.in_(newest)))}
