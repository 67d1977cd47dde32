"""Bearer tokens to tenants. A token sees its own tenant only; read-only tokens cannot write."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Dialect

from bridge.scim import quirks
from bridge.scim.errors import ScimError
from bridge.store.fast import FastQuery
from bridge.store.repo import hash_token
from bridge.store.tables import ScimToken, Tenant

tokens = ScimToken.__table__
tenants = Tenant.__table__

# RFC 6750 3: a 401 names the scheme; the error JSON is SCIM's (RFC 7644 3.12).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="bridge SCIM"'}


# Every request runs this: prebuilt, and run on the DB-API cursor (bridge/store/fast.py).
_BY_HASH = FastQuery(
    select(
        tokens.c.id,
        tokens.c.label,
        tokens.c.read_only,
        tokens.c.token_hash,
        tenants.c.id.label("tenant_id"),
        tenants.c.name,
    )
    .join(tenants, tenants.c.id == tokens.c.tenant_id)
    .where(tokens.c.token_hash == bindparam("digest"), tokens.c.revoked_at.is_(None))
)


@dataclass(frozen=True)
class Caller:
    tenant_id: int
    tenant_name: str
    read_only: bool
    actor: str  # for the audit log: "scim:<token label or id>"


def authenticate(cursor: Any, dialect: Dialect, header: str | None) -> Caller:
    """The caller of a request, looked up on every request: a revoked token stops at once."""
    token = quirks.bearer_token(header)
    if not token:
        raise ScimError(401, "missing bearer token", headers=CHALLENGE)
    digest = hash_token(token)
    # The lookup is by hash of the token, so its timing says nothing about stored tokens; the
    # comparison below is constant-time anyway.
    rows = _BY_HASH.rows(cursor, dialect, {"digest": digest})
    row = rows[0] if rows else None
    if row is None or not secrets.compare_digest(row.token_hash, digest):
        raise ScimError(401, "invalid or revoked bearer token", headers=CHALLENGE)
    return Caller(
        tenant_id=row.tenant_id,
        tenant_name=row.name,
        read_only=bool(row.read_only),
        actor=f"scim:{row.label or row.id}",
    )


def require_write(caller: Caller) -> None:
    if caller.read_only:
        raise ScimError(403, "this token is read-only")
