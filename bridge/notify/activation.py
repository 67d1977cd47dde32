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

from sqlalchemy import Connection

from bridge.core import actions
from bridge.core.lifecycle import Status
from bridge.errors import BridgeError
from bridge.provision.apply import AccountMoved, ApplyContext, apply_account
from bridge.runtime import Runtime
from bridge.store import activation as store
from bridge.store.accounts import account_state, account_with_roles
from bridge.store.activation import ACTIVATION_TOPIC, REMINDER_TOPIC
from bridge.store.db import transaction

__all__ = ["ACTIVATION_TOPIC", "REMINDER_TOPIC"]  # and the functions below
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
    store.save_links(conn, values, now)
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


def look_up(conn: Connection, raw: str, now: datetime) -> LinkInfo:
    if not raw or len(raw) > 100:
        return LinkInfo(LinkState.UNKNOWN)
    row = store.find_link(conn, token_hash(raw))
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
    """Use the link: pending -> active, decided by the core (`actions.activate`) and written by
    `provision.apply` (the status, the audit event, the product event), with the password (if
    any), all on `conn` (the caller's one transaction)."""
    info = look_up(conn, raw, now)
    if info.state is not LinkState.VALID:
        raise LinkRefused(info.state)
    assert info.token_id is not None and info.account_id is not None and info.tenant_id is not None
    # Single use under concurrency: only one request can flip used_at.
    if not store.claim_link(conn, info.token_id, now):
        raise LinkRefused(LinkState.USED)
    found = account_with_roles(conn, info.tenant_id, info.account_id)
    if found is None:
        raise LinkRefused(LinkState.REPLACED)
    try:
        plan = actions.activate(account_state(*found), password=password_hash is not None)
    except actions.ActionRefused:
        raise LinkRefused(LinkState.REPLACED) from None
    ctx = ApplyContext(
        tenant_id=info.tenant_id,
        tenant_name=info.tenant or "",
        actor=actor,
        correlation_id=correlation_id,
        now=now,
        webhooks=webhooks,
    )
    try:
        apply_account(conn, plan, ctx)
    except AccountMoved:
        raise LinkRefused(LinkState.REPLACED) from None
    if password_hash is not None:
        store.set_password(conn, info.tenant_id, info.account_id, password_hash, now)
    return Activation(account_id=info.account_id, tenant=info.tenant or "", user_name=info.user_name or "")


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
        for row in store.links_to_remind(conn, now, horizon):
            if not store.claim_reminder(conn, row.id, now):
                continue
            payload = {
                **row.payload,
                "to": row.email or row.payload.get("to"),
                "activationOutboxId": row.outbox_id,
                "activationKey": row.idempotency_key,
            }
            store.queue_reminder(
                conn, token_id=row.id, tenant_id=row.tenant_id, account_id=row.account_id, payload=payload, now=now
            )
            queued += 1
    return queued


def purge_activation_tokens(runtime: Runtime, now: datetime, *, keep_days: int = KEEP_DAYS) -> int:
    """Delete links used, replaced or expired more than `keep_days` ago. Returns the count."""
    cutoff = now - timedelta(days=keep_days)
    with transaction(runtime.engine) as conn:
        return store.purge_links(conn, cutoff)
