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

from sqlalchemy import Connection, insert, select, update

from bridge.store.tables import SyncRun, Tenant

sync_runs = SyncRun.__table__
tenants = Tenant.__table__


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


def purge_sync_runs(conn: Connection, cutoff: datetime) -> int:
    """Delete the runs finished before `cutoff`; returns how many."""
    return conn.execute(sync_runs.delete().where(sync_runs.c.finished_at < cutoff)).rowcount
