"""Sync runs: one row per sync, delta or re-plan, written by the engine when the run ends
(with its counts and outcome) and read by `bridge sync status`, the metrics and the pages.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

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
