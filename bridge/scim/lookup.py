"""The lookup identity providers send most (`userName eq "x"`, before every create and on every
sync cycle), answered on a DB-API cursor (bridge/store/fast.py): one module for the Flask handler
and the WSGI fast lane (bridge/scim/fastlane.py), which must give the same answer.
"""

from __future__ import annotations

from typing import Any

from bridge.scim.auth import Caller, caller_of, token_digest
from bridge.scim.query import Query
from bridge.scim.resources import list_response, render_user
from bridge.scim.schema import ACCOUNT
from bridge.store import scim as storage


def fast_user_lookup(cursor: Any, dialect: Any, caller: Caller, query: Query, base_url: str) -> dict[str, Any] | None:
    """`userName eq "x"` (and externalId, id) as identity providers send it before every create,
    on a DB-API cursor (bridge/store/fast.py); None when the request needs the general path (a
    page that may not hold every match, sorting, or the product's roles in the answer)."""
    if not _fast_lookup_answers(query, caller):
        return None
    assert query.lookup is not None
    rows = storage.fast_lookup(cursor, dialect, caller.tenant_id, "user", *query.lookup, query.count)
    return _fast_user_page(cursor, dialect, caller, query, rows, base_url)


def fast_token_user_lookup(
    cursor: Any, dialect: Any, header: str | None, query: Query, base_url: str, engine: Any = None
) -> tuple[Caller | None, dict[str, Any] | None]:
    """`fast_user_lookup` for a request not authenticated yet: the token is checked by the
    lookup's own statement (the fast lane's). A token that does not authenticate raises the 401.
    Returns the caller too (for the access log), and None for the page the lane does not answer."""
    if query.lookup is None:
        return None, None
    digest = token_digest(header)
    token, rows = storage.fast_lookup_with_token(cursor, dialect, digest, *query.lookup, query.count)
    caller = caller_of(token, digest)
    if engine is not None:
        caller.note_use(engine)
    if not _fast_lookup_answers(query, caller):
        return caller, None
    return caller, _fast_user_page(cursor, dialect, caller, query, rows, base_url)


def _fast_lookup_answers(query: Query, caller: Caller) -> bool:
    if query.lookup is None or query.start != 1 or query.count <= 0 or len(query.order) != 2:
        return False
    projection = query.projection
    return not (projection.wants(ACCOUNT) if caller.read_only else projection.names(ACCOUNT))


def _fast_user_page(
    cursor: Any, dialect: Any, caller: Caller, query: Query, rows: list[Any], base_url: str
) -> dict[str, Any] | None:
    if len(rows) >= query.count:
        return None  # maybe more than one page: the general path counts them
    projection = query.projection
    anchors = [r.anchor for r in rows] if projection.wants("groups") else []
    groups = storage.fast_groups_of(cursor, dialect, caller.tenant_id, anchors, base_url)
    resources = [render_user(r, base_url, groups.get(r.anchor), None, projection) for r in rows]
    return list_response(resources, len(rows), 1)
