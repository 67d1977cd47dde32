"""Alerts: one row per incident while it lasts (issue 17). Opening an incident that is already
open only refreshes it, which is what makes "one mail per incident, not per run" hold: the
caller (bridge.engine.alerts) mails only when `open_alert` says the row is new. Writers run in the
caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from bridge.store.tables import Alert

alerts = Alert.__table__

ALERT_TOPIC = "alert"  # the outbox topic of an alert mail (bridge.notify.worker renders it)


@dataclass(frozen=True)
class AlertRow:
    id: int
    kind: str
    subject: str
    summary: str
    path: str
    opened_at: datetime
    last_seen_at: datetime


def _open(tenant_id: int, kind: str, subject: str | None = None) -> list[object]:
    where = [alerts.c.tenant_id == tenant_id, alerts.c.kind == kind, alerts.c.closed_at.is_(None)]
    if subject is not None:
        where.append(alerts.c.subject == subject)
    return where


def open_alert(
    conn: Connection, tenant_id: int, kind: str, subject: str, summary: str, path: str, now: datetime
) -> int | None:
    """Open the incident; its id when it is new, None when it was open already (then refreshed:
    its summary and page are the newest, as for a held plan superseded by a newer one).
    The row is locked first, so two processes raising it at once open it once (PostgreSQL; SQLite
    has one writer)."""
    found = conn.execute(
        select(alerts.c.id).where(*_open(tenant_id, kind, subject)).with_for_update()  # type: ignore[arg-type]
    ).first()
    if found is not None:
        conn.execute(update(alerts).where(alerts.c.id == found.id).values(last_seen_at=now, summary=summary, path=path))
        return None
    inserted = conn.execute(
        insert(alerts).values(
            tenant_id=tenant_id,
            kind=kind,
            subject=subject,
            summary=summary,
            path=path,
            opened_at=now,
            last_seen_at=now,
            closed_at=None,
        )
    )
    return int(inserted.inserted_primary_key[0])


def close_alerts(conn: Connection, tenant_id: int, kind: str, now: datetime, subject: str | None = None) -> int:
    """Close the open incidents of that kind (and subject); how many were open."""
    done = conn.execute(update(alerts).where(*_open(tenant_id, kind, subject)).values(closed_at=now))  # type: ignore[arg-type]
    return done.rowcount or 0


def open_alerts(conn: Connection, tenant_id: int) -> list[AlertRow]:
    """The tenant's open incidents, newest first (the console's overview)."""
    rows = conn.execute(
        select(alerts).where(alerts.c.tenant_id == tenant_id, alerts.c.closed_at.is_(None)).order_by(alerts.c.id.desc())
    ).all()
    return [AlertRow(r.id, r.kind, r.subject, r.summary, r.path, r.opened_at, r.last_seen_at) for r in rows]
