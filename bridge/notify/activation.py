"""Activation links: minting, checking, using, reminding, purging.

Where the token comes from. The raw token is never stored. It is derived when the mail is
delivered, as HMAC-SHA256(server secret, the outbox row's idempotency key): 32 bytes, shown as
43 base64url characters. Only its SHA-256 goes into `activation_tokens`. A worker that crashes
after the SMTP server accepted a mail but before it marked the row sent delivers the row again
with the *same* link, so the person never holds a dead link, and nothing in the database is
enough to rebuild one. Every new activation row for an account (resend, changed address,
reactivation) gets a new key, hence a new token, and makes the older links invalid at once: a
link is only good while its mail is the account's newest activation mail (checked on use, so
this holds before the new mail is even delivered).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from bridge.core.lifecycle import Event, Status, apply_event
from bridge.errors import BridgeError
from bridge.provision.apply import ApplyContext, queue_webhook
from bridge.runtime import Runtime
from bridge.store.db import transaction
from bridge.store.tables import Account, ActivationToken, AuditEvent, Credential, OutboxMessage, RoleGrant, Tenant

tokens = ActivationToken.__table__
outbox = OutboxMessage.__table__
accounts = Account.__table__
audit = AuditEvent.__table__
credentials = Credential.__table__
role_grants = RoleGrant.__table__
tenants = Tenant.__table__

ACTIVATION_TOPIC = "activation"
REMINDER_TOPIC = "activation_reminder"
# Used and expired links are kept this long so their page can say "used" or "expired" rather
# than "unknown"; `purge_activation_tokens` deletes them afterwards.
KEEP_DAYS = 30


def derive_token(secret: bytes, idempotency_key: str) -> str:
    digest = hmac.new(secret, b"bridge-activation-link\x00" + idempotency_key.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_hash(raw: str) -> str:
    # The token carries 256 random-looking bits: a fast hash is enough, nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class LinkRequest:
    """An activation row about to be delivered."""

    outbox_id: int
    idempotency_key: str
    tenant_id: int
    account_id: str
    email: str | None
    expires_days: int


def mint_links(conn: Connection, requests: list[LinkRequest], *, secret: bytes, now: datetime) -> dict[int, Link]:
    """The links the activation mails carry, by outbox row id; idempotent per row.

    Another try of the same row yields the same token; its expiry restarts from this try, since
    the person's clock starts when the mail goes out, not when it was queued. Earlier links of
    the same accounts are revoked. One round of statements for the whole batch."""
    links: dict[int, Link] = {}
    values = []
    for req in requests:
        raw = derive_token(secret, req.idempotency_key)
        links[req.outbox_id] = Link(token=raw, expires_at=now + timedelta(days=req.expires_days))
        values.append(
            {
                "tenant_id": req.tenant_id,
                "account_id": req.account_id,
                "outbox_id": req.outbox_id,
                "token_hash": token_hash(raw),
                "email": req.email,
                "created_at": now,
                "expires_at": links[req.outbox_id].expires_at,
            }
        )
    if not values:
        return links
    ids = [v["outbox_id"] for v in values]
    existing = set(conn.execute(select(tokens.c.outbox_id).where(tokens.c.outbox_id.in_(ids))).scalars())
    fresh = [v for v in values if v["outbox_id"] not in existing]
    if fresh:
        conn.execute(insert(tokens), fresh)
    for v in values:
        if v["outbox_id"] in existing:
            # The same hash unless the server secret changed between tries; then the new link wins.
            conn.execute(
                update(tokens)
                .where(tokens.c.outbox_id == v["outbox_id"], tokens.c.used_at.is_(None))
                .values(token_hash=v["token_hash"], expires_at=v["expires_at"], email=v["email"])
            )
    # An account's newer activation row always supersedes its queued older ones (apply.py), so
    # any other live link of these accounts is an older one.
    conn.execute(
        update(tokens)
        .where(
            tokens.c.account_id.in_({v["account_id"] for v in values}),
            tokens.c.outbox_id.not_in(ids),
            tokens.c.used_at.is_(None),
            tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    return links


class LinkState(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    USED = "used"
    REPLACED = "replaced"  # a newer link was sent, or the account is no longer waiting for one
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LinkInfo:
    state: LinkState
    token_id: int | None = None
    tenant_id: int | None = None
    tenant: str | None = None
    account_id: str | None = None
    user_name: str | None = None
    given_name: str | None = None
    email: str | None = None
    language: str | None = None
    expires_at: datetime | None = None


def _newer_activation_exists() -> Any:
    newer = aliased(outbox)
    return exists().where(
        newer.c.tenant_id == tokens.c.tenant_id,
        newer.c.account_id == tokens.c.account_id,
        newer.c.topic == ACTIVATION_TOPIC,
        newer.c.id > tokens.c.outbox_id,
    )


def look_up(conn: Connection, raw: str, now: datetime) -> LinkInfo:
    if not raw or len(raw) > 100:
        return LinkInfo(LinkState.UNKNOWN)
    row = conn.execute(
        select(
            tokens,
            accounts.c.status,
            accounts.c.user_name,
            accounts.c.given_name,
            tenants.c.name.label("tenant"),
            outbox.c.payload,
            _newer_activation_exists().label("newer"),
        )
        .join(accounts, accounts.c.id == tokens.c.account_id)
        .join(tenants, tenants.c.id == tokens.c.tenant_id)
        .join(outbox, outbox.c.id == tokens.c.outbox_id, isouter=True)
        .where(tokens.c.token_hash == token_hash(raw))
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, token_hash(raw)):
        return LinkInfo(LinkState.UNKNOWN)
    if row.used_at is not None:
        state = LinkState.USED
    elif row.revoked_at is not None or row.newer or row.status != Status.PENDING.value:
        state = LinkState.REPLACED
    elif row.expires_at <= now:
        state = LinkState.EXPIRED
    else:
        state = LinkState.VALID
    return LinkInfo(
        state=state,
        token_id=row.id,
        tenant_id=row.tenant_id,
        tenant=row.tenant,
        account_id=row.account_id,
        user_name=row.user_name,
        given_name=row.given_name,
        email=row.email,
        language=(row.payload or {}).get("language"),
        expires_at=row.expires_at,
    )


class LinkRefused(BridgeError):
    def __init__(self, state: LinkState) -> None:
        super().__init__(f"activation link refused: {state.value}")
        self.state = state


@dataclass(frozen=True)
class Activation:
    account_id: str
    tenant: str
    user_name: str


def activate(
    conn: Connection,
    raw: str,
    now: datetime,
    *,
    password_hash: str | None,
    actor: str,
    correlation_id: str,
    webhooks: bool,
) -> Activation:
    """Use the link: pending -> active through the lifecycle table, with the password (if any),
    the audit event and the product event, all on `conn` (the caller's one transaction)."""
    info = look_up(conn, raw, now)
    if info.state is not LinkState.VALID:
        raise LinkRefused(info.state)
    assert info.token_id is not None and info.account_id is not None and info.tenant_id is not None
    # Single use under concurrency: only one request can flip used_at.
    used = conn.execute(
        update(tokens)
        .where(tokens.c.id == info.token_id, tokens.c.used_at.is_(None), tokens.c.revoked_at.is_(None))
        .values(used_at=now)
    )
    if used.rowcount != 1:
        raise LinkRefused(LinkState.USED)
    target, _ = apply_event(Status.PENDING, Event.ACTIVATE)
    moved = conn.execute(
        update(accounts)
        .where(
            accounts.c.id == info.account_id,
            accounts.c.tenant_id == info.tenant_id,
            accounts.c.status == Status.PENDING.value,
        )
        .values(status=target.value, activated_at=now, updated_at=now, version=accounts.c.version + 1)
    )
    if moved.rowcount != 1:
        raise LinkRefused(LinkState.REPLACED)
    if password_hash is not None:
        set_password(conn, info.tenant_id, info.account_id, password_hash, now)
    roles = sorted(
        conn.execute(select(role_grants.c.role).where(role_grants.c.account_id == info.account_id)).scalars()
    )
    before = {"status": Status.PENDING.value, "roles": roles}
    after = {"status": target.value, "roles": roles}
    conn.execute(
        insert(audit).values(
            tenant_id=info.tenant_id,
            account_id=info.account_id,
            actor=actor,
            action=Event.ACTIVATE.value,
            before=before,
            after={**after, "detail": {"password": password_hash is not None}},
            reason="activation link",
            correlation_id=correlation_id,
            occurred_at=now,
        )
    )
    if webhooks:
        ctx = ApplyContext(
            tenant_id=info.tenant_id,
            tenant_name=info.tenant or "",
            actor=actor,
            correlation_id=correlation_id,
            now=now,
            webhooks=True,
        )
        queue_webhook(conn, ctx, info.account_id, "account.activated", {"before": before, "after": after})
    return Activation(account_id=info.account_id, tenant=info.tenant or "", user_name=info.user_name or "")


def set_password(conn: Connection, tenant_id: int, account_id: str, password_hash: str, now: datetime) -> None:
    updated = conn.execute(
        update(credentials)
        .where(credentials.c.account_id == account_id, credentials.c.tenant_id == tenant_id)
        .values(password_hash=password_hash, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(
            insert(credentials).values(
                account_id=account_id, tenant_id=tenant_id, password_hash=password_hash, updated_at=now
            )
        )


# ---- for the scheduler ----------------------------------------------------------------------


def send_activation_reminders(runtime: Runtime, now: datetime) -> int:
    """Queue one reminder for each live link that expires within `[email] reminder_before_days`.

    The reminder carries the same link (derived from the original row's key), so it does not
    invalidate anything. Returns the number of reminders queued."""
    before_days = float(runtime.config.email.get("reminder_before_days") or 0)
    if before_days <= 0:
        return 0
    horizon = now + timedelta(days=before_days)
    queued = 0
    with transaction(runtime.engine) as conn:
        rows = conn.execute(
            select(
                tokens.c.id,
                tokens.c.tenant_id,
                tokens.c.account_id,
                tokens.c.email,
                outbox.c.payload,
                outbox.c.idempotency_key,
                outbox.c.id.label("outbox_id"),
            )
            .join(outbox, outbox.c.id == tokens.c.outbox_id)
            .join(accounts, accounts.c.id == tokens.c.account_id)
            .where(
                tokens.c.used_at.is_(None),
                tokens.c.revoked_at.is_(None),
                tokens.c.reminded_at.is_(None),
                tokens.c.expires_at > now,
                tokens.c.expires_at <= horizon,
                accounts.c.status == Status.PENDING.value,
                ~_newer_activation_exists(),
            )
            .order_by(tokens.c.id)
        ).all()
        for row in rows:
            claimed = conn.execute(
                update(tokens).where(tokens.c.id == row.id, tokens.c.reminded_at.is_(None)).values(reminded_at=now)
            )
            if claimed.rowcount != 1:
                continue
            payload = {
                **row.payload,
                "to": row.email or row.payload.get("to"),
                "activationOutboxId": row.outbox_id,
                "activationKey": row.idempotency_key,
            }
            conn.execute(
                insert(outbox).values(
                    tenant_id=row.tenant_id,
                    account_id=row.account_id,
                    channel="email",
                    topic=REMINDER_TOPIC,
                    payload=payload,
                    idempotency_key=f"reminder:{row.id}",
                    status="queued",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            queued += 1
    return queued


def purge_activation_tokens(runtime: Runtime, now: datetime, *, keep_days: int = KEEP_DAYS) -> int:
    """Delete links used, replaced or expired more than `keep_days` ago. Returns the count."""
    cutoff = now - timedelta(days=keep_days)
    with transaction(runtime.engine) as conn:
        result = conn.execute(
            delete(tokens).where(
                or_(
                    and_(tokens.c.used_at.is_not(None), tokens.c.used_at < cutoff),
                    and_(tokens.c.revoked_at.is_not(None), tokens.c.revoked_at < cutoff),
                    tokens.c.expires_at < cutoff,
                )
            )
        )
    return int(result.rowcount or 0)
