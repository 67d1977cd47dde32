"""The product's change feed: every account event, at a per-tenant position in commit order.

Contract:
- `queue_event` is called by `bridge.provision.apply` for every account event (the webhook's
  payload, built once there), inside the transaction of the change. Nothing is written at once:
  the events are written by `bridge.store.db.transaction` as the transaction's last step before
  COMMIT, nothing when it rolls back. A transaction opened otherwise that queued events is
  refused at commit (bridge.store.db), so a change never commits without its events.
- Positions: writing a tenant's events first bumps that tenant's `event_positions` row (an
  upsert that returns the new last position). The row stays locked until COMMIT, so a second
  writer of the tenant waits there and takes its positions after the first one's, once the
  first is committed (and visible: PostgreSQL makes a commit visible before it releases its
  locks). Positions are therefore strictly in commit order, and a reader that sees position N+1
  already sees every position up to N: a cursor (the last position read) can never pass over an
  event committed late. On SQLite one writer holds the database anyway. Taking the lock as the
  last step keeps it held only for the insert and the commit.
- Positions are never reused; purging deletes a prefix (every event up to the newest one older
  than the cutoff) and remembers it in `purged_through`. A cursor behind `purged_through` has
  lost events: `read_events` raises `CursorExpired`.
- Cursors are opaque to the product (`encode_cursor`): the tenant and the position. A cursor
  that does not decode, or names another tenant, raises `BadCursor`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, text, update

from bridge.errors import BridgeError, InvalidValue
from bridge.store.bulk import insert_many
from bridge.store.db import at_commit
from bridge.store.tables import AccountEventRow, EventPosition

events = AccountEventRow.__table__
positions = EventPosition.__table__

MAX_LIMIT = 1000
_PREFIX = "ev1."


class BadCursor(InvalidValue):
    """A cursor bridge did not make for this tenant."""


class CursorExpired(BridgeError):
    """The events after this cursor were purged (older than `event_retention_days`)."""


# ---- cursors -------------------------------------------------------------------------------------


def encode_cursor(tenant_id: int, position: int) -> str:
    raw = f"{tenant_id}:{position}".encode()
    return _PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, tenant_id: int) -> int:
    """The position a cursor of `tenant_id` stands at (BadCursor otherwise)."""
    if not cursor.startswith(_PREFIX) or len(cursor) > 80:
        raise BadCursor("malformed cursor")
    body = cursor[len(_PREFIX) :]
    try:
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        tenant_text, position_text = text.split(":")
        owner, position = int(tenant_text), int(position_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("malformed cursor") from None
    if owner != tenant_id or position < 0:
        raise BadCursor("this cursor belongs to another tenant" if owner != tenant_id else "malformed cursor")
    return position


# ---- writing -------------------------------------------------------------------------------------


def queue_event(conn: Connection, tenant_id: int, occurred_at: datetime, payload: dict[str, Any]) -> None:
    """Append an event to the feed when `conn`'s transaction commits (see the contract)."""
    at_commit(conn, "account_events", _write).append((tenant_id, occurred_at, payload))


def _write(conn: Connection, queued: Sequence[tuple[int, datetime, dict[str, Any]]]) -> None:
    by_tenant: dict[int, list[tuple[datetime, dict[str, Any]]]] = {}
    for tenant_id, occurred_at, payload in queued:
        by_tenant.setdefault(tenant_id, []).append((occurred_at, payload))
    # Tenants in one order, so two transactions that both write several never wait on each other
    # in a cycle (in practice a transaction writes one tenant).
    for tenant_id in sorted(by_tenant):
        rows = by_tenant[tenant_id]
        last = _advance(conn, tenant_id, len(rows))
        first = last - len(rows) + 1
        insert_many(
            conn,
            events,
            [
                {"tenant_id": tenant_id, "position": first + i, "occurred_at": occurred_at, "payload": payload}
                for i, (occurred_at, payload) in enumerate(rows)
            ],
        )


# One statement for both databases (PostgreSQL and SQLite 3.35+ share the upsert and RETURNING),
# prebuilt: building and compiling a dialect INSERT ... ON CONFLICT per transaction cost more
# than running it (0.75 ms of a SCIM write on SQLite, measured).
_ADVANCE = text(
    "INSERT INTO event_positions (tenant_id, position, purged_through) VALUES (:tenant_id, :count, 0) "
    "ON CONFLICT (tenant_id) DO UPDATE SET position = event_positions.position + excluded.position "
    "RETURNING position"
)


def _advance(conn: Connection, tenant_id: int, count: int) -> int:
    """Take `count` positions for the tenant; returns the last. Locks the tenant's row until COMMIT."""
    return int(conn.execute(_ADVANCE, {"tenant_id": tenant_id, "count": count}).scalar_one())


# ---- reading -------------------------------------------------------------------------------------


def current_position(conn: Connection, tenant_id: int) -> int:
    """The last position committed for the tenant as `conn` sees it (0: no event yet). Read
    before a snapshot's rows, every change missing from those rows has a later position."""
    value = conn.execute(select(positions.c.position).where(positions.c.tenant_id == tenant_id)).scalar()
    return int(value or 0)


@dataclass(frozen=True)
class EventsPage:
    events: list[dict[str, Any]]  # the stored payloads, oldest first
    last: int  # the position the next page starts after
    has_more: bool


def read_events(conn: Connection, tenant_id: int, after: int | None, limit: int) -> EventsPage:
    """Up to `limit` events after position `after` (None: from the oldest kept), oldest first.

    CursorExpired when events after `after` were purged. The purge mark is read after the events
    on purpose: on PostgreSQL each statement sees its own snapshot, and a purge committed between
    the two reads is then seen by the second (a 410), never silently skipped."""
    start = after or 0
    rows = conn.execute(
        select(events.c.position, events.c.payload)
        .where(events.c.tenant_id == tenant_id, events.c.position > start)
        .order_by(events.c.position)
        .limit(limit + 1)
    ).all()
    if after is not None:
        purged = conn.execute(select(positions.c.purged_through).where(positions.c.tenant_id == tenant_id)).scalar()
        if purged is not None and purged > after:
            raise CursorExpired("the events after this cursor are no longer kept")
    page = rows[:limit]
    return EventsPage(
        events=[dict(r.payload) for r in page],
        last=page[-1].position if page else start,
        has_more=len(rows) > limit,
    )


# ---- purging -------------------------------------------------------------------------------------


def purge_events(conn: Connection, cutoff: datetime) -> int:
    """Delete every tenant's events up to its newest one that occurred before `cutoff` (a prefix
    of the feed, so it never has holes: `occurred_at` is the change's clock, not its commit
    order). Returns how many rows went."""
    removed = 0
    for tenant_id, purged_through in conn.execute(select(positions.c.tenant_id, positions.c.purged_through)).all():
        boundary = conn.execute(
            select(func.max(events.c.position)).where(events.c.tenant_id == tenant_id, events.c.occurred_at < cutoff)
        ).scalar()
        if boundary is None or boundary <= purged_through:
            continue
        result = conn.execute(delete(events).where(events.c.tenant_id == tenant_id, events.c.position <= boundary))
        removed += int(result.rowcount or 0)
        conn.execute(update(positions).where(positions.c.tenant_id == tenant_id).values(purged_through=boundary))
    return removed
