"""The product's reads of accounts: the JSON of an account (`users list --json`, the snapshot)
and the paged snapshot of `GET /api/v1/accounts`.

Contract: reads only, on the caller's connection. `snapshot_page` raises
`bridge.store.events.BadCursor` for a cursor it did not make for this tenant. A snapshot's
first page reads the feed position before its rows (see `snapshot_page`), so the product that
follows the feed from `events_position` misses no change.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import NoResultFound

from bridge.store.accounts import account_roles, accounts_after, get_account
from bridge.store.events import BadCursor, current_position
from bridge.store.identities import account_groups, external_ids


def account_documents(conn: Connection, tenant_id: int, tenant_name: str, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The JSON of account rows, as `users list --json` and `GET /api/v1/accounts` show them."""
    ids = [r.id for r in rows]
    roles = account_roles(conn, ids)
    groups = account_groups(conn, tenant_id, rows)
    external = external_ids(conn, ids)
    return [
        {
            "id": r.id,
            "tenant": tenant_name,
            "userName": r.user_name,
            "externalId": external.get(r.id),
            "email": r.email,
            "givenName": r.given_name,
            "familyName": r.family_name,
            "displayName": r.display_name,
            "status": r.status,
            "userType": r.user_type,
            "roles": sorted(role for role, _ in roles.get(r.id, [])),
            "groups": groups.get(r.id, []),
            "source": r.source,
            "created": r.created_at.isoformat(),
            "lastModified": r.updated_at.isoformat(),
            "expires": r.expires_at.isoformat() if r.expires_at else None,
            "leftOut": dict(r.denied or {}),
            # When the person may sign in (docs/operations/login-hours.md); null: any time.
            "loginHours": r.login_hours or None,
        }
        for r in rows
    ]


def account_document(conn: Connection, tenant_id: int, tenant_name: str, account_id: str) -> dict[str, Any] | None:
    """One account of the tenant as the snapshot shows it, or None (not this tenant's, or no
    such id): the product's re-read of one account after an event it cannot apply by itself."""
    try:
        row = get_account(conn, tenant_id, account_id)
    except NoResultFound:
        return None
    return account_documents(conn, tenant_id, tenant_name, [row])[0]


@dataclass(frozen=True)
class SnapshotPage:
    """One page of the product's snapshot (`GET /api/v1/accounts`)."""

    accounts: list[dict[str, Any]]
    next_cursor: str | None
    events_position: int  # where the feed continues after the whole snapshot


_SNAPSHOT_PREFIX = "ac1."


def _snapshot_cursor(tenant_id: int, last_id: str, events_position: int) -> str:
    raw = json.dumps([tenant_id, last_id, events_position], separators=(",", ":")).encode()
    return _SNAPSHOT_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_snapshot_cursor(cursor: str, tenant_id: int) -> tuple[str, int]:
    body = cursor[len(_SNAPSHOT_PREFIX) :]
    try:
        value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        value = None
    if (
        not cursor.startswith(_SNAPSHOT_PREFIX)
        or not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[1], str)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in (value[0], value[2]))
    ):
        raise BadCursor("malformed cursor")
    if value[0] != tenant_id:
        raise BadCursor("this cursor belongs to another tenant")
    return value[1], value[2]


def snapshot_page(
    conn: Connection, tenant_id: int, tenant_name: str, cursor: str | None, limit: int, status: str | None
) -> SnapshotPage:
    """A page of every account of the tenant, by id, with the feed position the snapshot stands at.

    The first page reads the feed's position *before* its rows, on the same connection: a change
    committed before that read is in the rows (or in a later page), one committed after has a
    later position, so following the feed from there misses nothing. Changes committed while the
    product pages (and on PostgreSQL, between the two reads) may show in the pages too: the
    feed replays them, and applying an event to an account already in that state changes nothing.
    The position is carried in the cursor, so every page names the same one."""
    if cursor is None:
        after_id, position = None, current_position(conn, tenant_id)
    else:
        after_id, position = _read_snapshot_cursor(cursor, tenant_id)
    rows = accounts_after(conn, tenant_id, after_id, limit + 1, status)
    page = rows[:limit]
    return SnapshotPage(
        accounts=account_documents(conn, tenant_id, tenant_name, page),
        next_cursor=_snapshot_cursor(tenant_id, page[-1].id, position) if len(rows) > limit else None,
        events_position=position,
    )
