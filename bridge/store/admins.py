"""The console's administrators and their sessions.

Contract: an administrator is found by folded email (`fold`), unique across bridge. `invite`
creates one, or gives an existing one a new setup link (the previous link stops working); only
the SHA-256 of a link's token is stored, as for activation links and SCIM tokens. A setup link
is used once: `complete_setup` clears it in the same statement that sets the password, and
refuses (returns False) a link used, replaced or expired meanwhile. Removing an administrator
deletes the row and every session of it. Sessions are keyed by the SHA-256 of the cookie's
value; `session_admin` is the one read every console request makes, and refuses a session past
its idle or absolute limit (the caller passes both cut-offs).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from bridge.store.ids import fold, new_id
from bridge.store.tables import Admin, AdminSession, Tenant

admins = Admin.__table__
sessions = AdminSession.__table__
tenants = Tenant.__table__


@dataclass(frozen=True)
class AdminRow:
    id: str
    email: str
    tenant_id: int | None
    tenant_name: str | None
    password_hash: str | None
    totp_secret: str | None
    created_at: datetime
    last_login_at: datetime | None
    setup_expires_at: datetime | None

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None

    def may_see(self, tenant_id: int) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id


def secret_hash(value: str) -> str:
    """A setup token or a session cookie is 256 random bits: SHA-256 is enough, as for SCIM tokens."""
    return hashlib.sha256(value.encode()).hexdigest()


_COLUMNS = (
    admins.c.id,
    admins.c.email,
    admins.c.tenant_id,
    tenants.c.name.label("tenant_name"),
    admins.c.password_hash,
    admins.c.totp_secret,
    admins.c.created_at,
    admins.c.last_login_at,
    admins.c.setup_expires_at,
)
_FROM = admins.outerjoin(tenants, tenants.c.id == admins.c.tenant_id)


def _row(row: Any) -> AdminRow | None:
    return AdminRow(**row._mapping) if row is not None else None


def invite(
    conn: Connection, email: str, tenant_id: int | None, expires_at: datetime, now: datetime
) -> tuple[AdminRow, str]:
    """Create the administrator, or renew an existing one's setup link; returns the clear token once.

    Re-inviting someone with a different tenant changes their scope: the invitation is what an
    operator decided last."""
    token = secrets.token_urlsafe(32)
    existing = admin_by_email(conn, email)
    if existing is None:
        admin_id = new_id()
        conn.execute(
            insert(admins).values(
                id=admin_id,
                email=email,
                email_norm=fold(email),
                tenant_id=tenant_id,
                setup_token_hash=secret_hash(token),
                setup_expires_at=expires_at,
                created_at=now,
            )
        )
    else:
        admin_id = existing.id
        conn.execute(
            update(admins)
            .where(admins.c.id == admin_id)
            .values(tenant_id=tenant_id, setup_token_hash=secret_hash(token), setup_expires_at=expires_at)
        )
        if existing.tenant_id != tenant_id:
            conn.execute(delete(sessions).where(sessions.c.admin_id == admin_id))
    row = admin_by_id(conn, admin_id)
    assert row is not None
    return row, token


def admin_by_email(conn: Connection, email: str) -> AdminRow | None:
    return _row(conn.execute(select(*_COLUMNS).select_from(_FROM).where(admins.c.email_norm == fold(email))).first())


def admin_by_id(conn: Connection, admin_id: str) -> AdminRow | None:
    return _row(conn.execute(select(*_COLUMNS).select_from(_FROM).where(admins.c.id == admin_id)).first())


def admin_by_setup_token(conn: Connection, token: str, now: datetime) -> AdminRow | None:
    """The administrator a setup link is for, while it is unused and unexpired."""
    row = _row(
        conn.execute(
            select(*_COLUMNS).select_from(_FROM).where(admins.c.setup_token_hash == secret_hash(token))
        ).first()
    )
    if row is None or row.setup_expires_at is None or row.setup_expires_at <= now:
        return None
    return row


def complete_setup(conn: Connection, token: str, password_hash: str, now: datetime) -> AdminRow | None:
    """Set the password and use the link up, in one statement; None when the link no longer works."""
    result = conn.execute(
        update(admins)
        .where(admins.c.setup_token_hash == secret_hash(token), admins.c.setup_expires_at > now)
        .values(password_hash=password_hash, setup_token_hash=None, setup_expires_at=None)
        .returning(admins.c.id)
    ).first()
    if result is None:
        return None
    # A new password ends every session opened with the old one.
    conn.execute(delete(sessions).where(sessions.c.admin_id == result.id))
    return admin_by_id(conn, result.id)


def list_admins(conn: Connection) -> list[AdminRow]:
    rows = conn.execute(select(*_COLUMNS).select_from(_FROM).order_by(admins.c.email_norm)).all()
    return [AdminRow(**r._mapping) for r in rows]


def remove_admin(conn: Connection, email: str) -> bool:
    existing = admin_by_email(conn, email)
    if existing is None:
        return False
    conn.execute(delete(sessions).where(sessions.c.admin_id == existing.id))
    conn.execute(delete(admins).where(admins.c.id == existing.id))
    return True


def set_totp_secret(conn: Connection, admin_id: str, secret: str | None) -> None:
    conn.execute(update(admins).where(admins.c.id == admin_id).values(totp_secret=secret))


def rehash_admin_password(conn: Connection, admin_id: str, password_hash: str) -> None:
    conn.execute(update(admins).where(admins.c.id == admin_id).values(password_hash=password_hash))


# ---- sessions ---------------------------------------------------------------------------------


def open_session(conn: Connection, admin_id: str, stage: str, now: datetime) -> str:
    """A new session; returns the cookie's value (shown once, stored hashed)."""
    value = secrets.token_urlsafe(32)
    conn.execute(
        insert(sessions).values(
            id_hash=secret_hash(value), admin_id=admin_id, stage=stage, created_at=now, last_seen_at=now
        )
    )
    if stage == "full":
        conn.execute(update(admins).where(admins.c.id == admin_id).values(last_login_at=now))
    return value


@dataclass(frozen=True)
class SessionRow:
    id_hash: str
    stage: str
    created_at: datetime
    last_seen_at: datetime
    admin: AdminRow


def session_admin(conn: Connection, value: str, *, idle_after: datetime, opened_after: datetime) -> SessionRow | None:
    """The session and its administrator; None (and the row deleted) past either limit."""
    row = conn.execute(
        select(
            sessions.c.id_hash.label("session_id_hash"),
            sessions.c.stage.label("session_stage"),
            sessions.c.created_at.label("session_created_at"),
            sessions.c.last_seen_at.label("session_last_seen_at"),
            *_COLUMNS,
        )
        .select_from(sessions.join(_FROM, admins.c.id == sessions.c.admin_id))
        .where(sessions.c.id_hash == secret_hash(value))
    ).first()
    if row is None:
        return None
    if row.session_last_seen_at <= idle_after or row.session_created_at <= opened_after:
        conn.execute(delete(sessions).where(sessions.c.id_hash == row.session_id_hash))
        return None
    values = dict(row._mapping)
    session_values = {k: values.pop(f"session_{k}") for k in ("id_hash", "stage", "created_at", "last_seen_at")}
    return SessionRow(**session_values, admin=AdminRow(**values))


def touch_session(conn: Connection, id_hash: str, now: datetime) -> None:
    conn.execute(update(sessions).where(sessions.c.id_hash == id_hash).values(last_seen_at=now))


def promote_session(conn: Connection, id_hash: str, admin_id: str, now: datetime) -> str:
    """Past the second factor: the half-open session is replaced by a full one with a new value
    (a value seen before the second factor never becomes a full session)."""
    conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))
    return open_session(conn, admin_id, "full", now)


def close_session(conn: Connection, id_hash: str) -> None:
    conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))


def purge_sessions(conn: Connection, *, idle_after: datetime, opened_after: datetime) -> int:
    result = conn.execute(
        delete(sessions).where((sessions.c.last_seen_at <= idle_after) | (sessions.c.created_at <= opened_after))
    )
    return int(result.rowcount or 0)
