"""SCIM bearer tokens: created by `bridge tokens create`, listed, revoked; never stored in
clear (`token_hash` is the SHA-256 of a 256-bit random value, so a fast hash is enough).

Contract: `create_token` returns the clear token once and stores only its hash (the doors call
it through `bridge.provision.manual`, which audits it). A token is valid
while it is neither revoked nor expired; `token_problem` is that one check, for every door. The
reads are `tenant_for_token` (the product API, on a connection) and `token_by_digest` (every SCIM
request, on the DB-API cursor); TOKEN_COLUMNS are what both return and what other statements
join in to check the token while they read (the fast lane's lookup, bridge/store/scim.py).
`bridge.scim.auth.caller_of` turns such a row into a caller. `last_used_at` is bookkeeping,
written at most once a minute off the request's path (`token_use`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Dialect

from bridge.store.fast import FastQuery
from bridge.store.ids import new_id
from bridge.store.tables import ScimToken, Tenant

tokens = ScimToken.__table__
tenants = Tenant.__table__

log = logging.getLogger(__name__)

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


def hash_token(token: str) -> str:
    # Tokens are 256-bit random values, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    conn: Connection,
    tenant_id: int,
    label: str | None,
    read_only: bool,
    now: datetime,
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    token = "brg_" + secrets.token_urlsafe(32)
    token_id = new_id()
    conn.execute(
        insert(tokens).values(
            id=token_id,
            tenant_id=tenant_id,
            label=label,
            token_hash=hash_token(token),
            read_only=read_only,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return token_id, token


def list_tokens(conn: Connection, tenant_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(tokens).where(tokens.c.tenant_id == tenant_id).order_by(tokens.c.created_at)).all()
    return [
        {
            "id": r.id,
            "label": r.label,
            "readOnly": r.read_only,
            "created": r.created_at.isoformat(),
            "revoked": r.revoked_at.isoformat() if r.revoked_at else None,
            "lastUsed": r.last_used_at.isoformat() if r.last_used_at else None,
            "expires": r.expires_at.isoformat() if r.expires_at else None,
        }
        for r in rows
    ]


def get_token(conn: Connection, token_id: str) -> Any | None:
    """One token's row (its tenant, label, revocation; the hash too), or None."""
    return conn.execute(select(tokens).where(tokens.c.id == token_id)).first()


def revoke_token(conn: Connection, token_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return result.rowcount == 1


def token_problem(row: Any, digest: str, now: datetime) -> str | None:
    """The one token check, for every door: why a row of TOKEN_COLUMNS found by `digest` does
    not authenticate ("invalid": no such token, or revoked; "expired"), or None when it does."""
    # The lookup is by hash of the token, so its timing says nothing about stored tokens; the
    # comparison is constant-time anyway.
    if row is None or not secrets.compare_digest(row.token_hash, digest):
        return "invalid"
    return "expired" if token_expired(row.expires_at, now) else None


def tenant_for_token(conn: Connection, token: str, now: datetime) -> Any:
    """The token's row (TOKEN_COLUMNS) if the clear `token` authenticates, else None: the check
    of `token_problem`, on a SQLAlchemy connection (the product API's door)."""
    digest = hash_token(token)
    row = conn.execute(_BY_HASH.statement, {"digest": digest}).first()
    return None if token_problem(row, digest, now) else row


def token_expired(expires_at: datetime | None, now: datetime) -> bool:
    """A token without an expiry works until it is revoked."""
    return expires_at is not None and expires_at <= now


class TokenUse:
    """Writes a token's `last_used_at` at most once a minute, off the request's path: a write per
    request would take SQLite's write lock on every read, and a busy database must not slow the
    request that merely used the token. Best effort: a lost update is rewritten a minute later."""

    EVERY = timedelta(minutes=1)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[str, datetime] = {}
        self._pool: ThreadPoolExecutor | None = None

    def note(self, engine: Any, token_id: str, last_used_at: datetime | None, now: datetime) -> None:
        due = now - self.EVERY
        with self._lock:
            seen = max(filter(None, (last_used_at, self._written.get(token_id))), default=None)
            if seen is not None and seen > due:
                return
            self._written[token_id] = now
            if self._pool is None:
                # Made on first use, in the process that serves (never inherited across a fork).
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-use")
            pool = self._pool
        pool.submit(self._write, engine, token_id, now, due)

    @staticmethod
    def _write(engine: Any, token_id: str, now: datetime, due: datetime) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    update(tokens)
                    .where(tokens.c.id == token_id, or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at <= due))
                    .values(last_used_at=now)
                )
        except Exception as exc:  # bookkeeping: the request it records has been answered
            log.warning("could not record the use of token %s: %s", token_id, type(exc).__name__)


token_use = TokenUse()
