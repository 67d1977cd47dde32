"""Bearer tokens to tenants. A token sees its own tenant only; read-only tokens cannot write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Dialect

from bridge.scim import quirks
from bridge.scim.errors import ScimError
from bridge.store.tokens import hash_token, token_by_digest, token_problem, token_use

# RFC 6750 3: a 401 names the scheme; the error JSON is SCIM's (RFC 7644 3.12).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="bridge SCIM"'}


@dataclass(frozen=True)
class Caller:
    tenant_id: int
    tenant_name: str
    read_only: bool
    actor: str  # for the audit log: "scim:<token label or id>"
    token_id: str = ""
    last_used_at: datetime | None = None

    def note_use(self, engine: Any) -> None:
        token_use.note(engine, self.token_id, self.last_used_at, datetime.now(UTC))


def token_digest(header: str | None) -> str:
    """The stored form of the request's bearer token; 401 when there is none."""
    token = quirks.bearer_token(header)
    if not token:
        raise ScimError(401, "missing bearer token", headers=CHALLENGE)
    return hash_token(token)


def caller_of(row: Any, digest: str) -> Caller:
    """The caller from a row of TOKEN_COLUMNS found by `digest` (None: no such token): 401 unless
    the token is there and not revoked."""
    problem = token_problem(row, digest, datetime.now(UTC))
    if problem == "invalid":
        raise ScimError(401, "invalid or revoked bearer token", headers=CHALLENGE)
    if problem == "expired":
        raise ScimError(401, "expired bearer token", headers=CHALLENGE)
    return Caller(
        tenant_id=row.tenant_id,
        tenant_name=row.tenant_name,
        read_only=bool(row.read_only),
        actor=f"scim:{row.token_label or row.token_id}",
        token_id=row.token_id,
        last_used_at=row.last_used_at,
    )


def authenticate(cursor: Any, dialect: Dialect, header: str | None) -> Caller:
    """The caller of a request, looked up on every request: a revoked token stops at once."""
    digest = token_digest(header)
    return caller_of(token_by_digest(cursor, dialect, digest), digest)


def require_write(caller: Caller) -> None:
    if caller.read_only:
        raise ScimError(403, "this token is read-only")
