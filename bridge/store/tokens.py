"""The SCIM tokens' statements that authenticate a request: one lookup by the token's hash, on
every request, and the columns that other statements join in to check the token while they read
(the fast lane's lookup, bridge/store/scim.py). A row of TOKEN_COLUMNS is what
`bridge.scim.auth.caller_of` turns into a caller; no row means no such token, or a revoked one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, select
from sqlalchemy.engine import Dialect

from bridge.store.fast import FastQuery
from bridge.store.tables import ScimToken, Tenant

tokens = ScimToken.__table__
tenants = Tenant.__table__

# The token's columns, for `_BY_HASH` and for statements that check the token while they read:
# `caller_of` reads them by these names.
TOKEN_COLUMNS = (
    tokens.c.id.label("token_id"),
    tokens.c.label.label("token_label"),
    tokens.c.read_only,
    tokens.c.token_hash,
    tokens.c.last_used_at,
    tokens.c.expires_at,
    tenants.c.id.label("tenant_id"),
    tenants.c.name.label("tenant_name"),
)
TOKEN_FROM = tokens.join(tenants, tenants.c.id == tokens.c.tenant_id)
TOKEN_MATCHES = and_(tokens.c.token_hash == bindparam("digest"), tokens.c.revoked_at.is_(None))

# Every request runs this: prebuilt, and run on the DB-API cursor (bridge/store/fast.py).
_BY_HASH = FastQuery(select(*TOKEN_COLUMNS).select_from(TOKEN_FROM).where(TOKEN_MATCHES))


def token_by_digest(cursor: Any, dialect: Dialect, digest: str) -> Any | None:
    """The token's row (TOKEN_COLUMNS) for the hash of a presented token; None when unknown or revoked."""
    rows = _BY_HASH.rows(cursor, dialect, {"digest": digest})
    return rows[0] if rows else None
