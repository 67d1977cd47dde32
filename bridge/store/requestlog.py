"""The SCIM request log (issue 16): one row per request a tenant's identity provider sent.

Contract:
- `insert_requests` writes rows whose bodies are already redacted and cut by the caller
  (`bridge.scim.requestlog`): nothing here looks inside a body, and nothing reaches this module
  unredacted.
- Rows are never updated. `purge_requests` deletes a tenant's rows older than a cutoff (the
  scheduler's purge job, with the tenant's `request_log_days`).
- The account changes a request caused are the audit events of its tenant whose correlation id
  is the request's id and that were written while it ran (`changes_of`): the request id is the
  client's `X-Request-ID` when usable, so a client that sends one id twice would otherwise see
  the changes of both requests under each.
- Every read is scoped by `tenant_id`; a row of another tenant is "not found" (None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from bridge.store.bulk import insert_many
from bridge.store.tables import Account, AuditEvent, ScimRequest

requests = ScimRequest.__table__
audit = AuditEvent.__table__
accounts = Account.__table__
_c = requests.c

# Audit events are stamped with the request transaction's `now`, taken after the request arrived
# and before it ended; a quarter of a second either side covers clocks read at different
# moments (perf_counter for the duration, the wall clock for the events).
_SLACK = timedelta(milliseconds=250)
# The columns of a list row: the bodies are read only on the request's own page.
_LIST_COLUMNS = [c for c in requests.c if c.name not in ("request_body", "response_body")]

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def insert_requests(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Append rows; each has every column of `scim_requests` but `id`."""
    if rows:
        insert_many(conn, requests, rows)


def purge_requests(conn: Connection, tenant_id: int, cutoff: datetime) -> int:
    """Delete the tenant's requests that arrived before `cutoff`; returns how many."""
    return conn.execute(requests.delete().where(_c.tenant_id == tenant_id, _c.occurred_at < cutoff)).rowcount


@dataclass(frozen=True)
class TokenActivity:
    """What one token's client did: its last request (ever kept) and the last 24 hours."""

    token_id: str
    last_at: datetime | None
    user_agent: str | None
    client: str | None
    requests: int
    errors: int  # status 400 and above


def token_activity(
    conn: Connection, tenant_id: int, token_ids: Sequence[str], since: datetime
) -> dict[str, TokenActivity]:
    """Per token of `token_ids` (the tenant's): its last request still kept, and its requests and
    errors since `since`. The last request is one index seek per token (a GROUP BY would read the
    whole log's index); the counts read the index range of `since` onwards once."""
    counts = {
        r.token_id: (int(r.n), int(r.errors or 0))
        for r in conn.execute(
            select(
                _c.token_id,
                func.count().label("n"),
                func.sum(case((_c.status >= 400, 1), else_=0)).label("errors"),
            )
            .where(_c.tenant_id == tenant_id, _c.occurred_at >= since, _c.token_id.is_not(None))
            .group_by(_c.token_id)
        )
    }
    out: dict[str, TokenActivity] = {}
    for token_id in token_ids:
        last = conn.execute(
            select(_c.occurred_at, _c.user_agent, _c.client)
            .where(_c.tenant_id == tenant_id, _c.token_id == token_id)
            .order_by(_c.id.desc())
            .limit(1)
        ).first()
        n, errors = counts.get(token_id, (0, 0))
        if last is None:
            out[token_id] = TokenActivity(token_id, None, None, None, n, errors)
        else:
            out[token_id] = TokenActivity(token_id, last.occurred_at, last.user_agent, last.client, n, errors)
    return out


def list_requests(
    conn: Connection,
    tenant_id: int,
    *,
    status_class: str | None = None,
    method: str | None = None,
    token_id: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[Any], int | None]:
    """One page of the tenant's requests newest first, without their bodies: (rows, the
    `before_id` of the next page, or None on the last). Keyset paging on `id`, as the audit
    log's: requests logged meanwhile do not shift the pages."""
    query = select(*_LIST_COLUMNS).where(_c.tenant_id == tenant_id)
    if status_class in STATUS_CLASSES:
        low = int(status_class[0]) * 100
        query = query.where(_c.status >= low, _c.status < low + 100)
    if method:
        query = query.where(_c.method == method.upper())
    if token_id:
        query = query.where(_c.token_id == token_id)
    if before_id is not None:
        query = query.where(_c.id < before_id)
    rows = list(conn.execute(query.order_by(_c.id.desc()).limit(limit + 1)).all())
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def get_request(conn: Connection, tenant_id: int, request_row_id: int) -> Any | None:
    """One request of the tenant, bodies included; None if there is none of that id here."""
    return conn.execute(select(requests).where(_c.tenant_id == tenant_id, _c.id == request_row_id)).first()


def _window(row: Any) -> Any:
    return and_(
        audit.c.correlation_id == row.request_id,
        audit.c.occurred_at >= row.occurred_at - _SLACK,
        audit.c.occurred_at <= row.occurred_at + timedelta(milliseconds=row.duration_ms) + _SLACK,
    )


def changes_of(conn: Connection, tenant_id: int, row: Any) -> list[Any]:
    """The audit events (account changes, and tenant-wide events such as a group's) that the
    request `row` caused, oldest first, each with its account's `user_name` (None for a
    tenant-wide event)."""
    joined = audit.outerjoin(
        accounts, and_(accounts.c.tenant_id == audit.c.tenant_id, accounts.c.id == audit.c.account_id)
    )
    return list(
        conn.execute(
            select(audit, accounts.c.user_name)
            .select_from(joined)
            .where(audit.c.tenant_id == tenant_id, _window(row))
            .order_by(audit.c.id)
        ).all()
    )


def change_counts(conn: Connection, tenant_id: int, rows: Sequence[Any]) -> dict[int, int]:
    """How many audit events each of `rows` caused (by row id): one query for a page."""
    if not rows:
        return {}
    found = conn.execute(
        select(audit.c.correlation_id, audit.c.occurred_at).where(
            audit.c.tenant_id == tenant_id, audit.c.correlation_id.in_({r.request_id for r in rows})
        )
    ).all()
    counts: dict[int, int] = {}
    for row in rows:
        end = row.occurred_at + timedelta(milliseconds=row.duration_ms) + _SLACK
        start = row.occurred_at - _SLACK
        counts[row.id] = sum(1 for e in found if e.correlation_id == row.request_id and start <= e.occurred_at <= end)
    return counts
