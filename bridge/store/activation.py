"""Activation links and passwords: `activation_tokens` and `credentials`.

Contract. The raw link is never given to this module: callers pass its SHA-256 (`token_hash`,
computed by bridge.notify.activation, which derives the link). A link row is written when its mail
is delivered (`save_links`, one per activation outbox row, `outbox_id` unique), and is then in one
of these states, decided by the reader from the row this module returns (`find_link`): used
(`used_at`), revoked (`revoked_at`, or a newer activation row of the account exists in `outbox`),
expired (`expires_at`), else valid while the account is pending. `claim_link` and
`claim_reminder` are the only writes that race (two requests on one link, two reminder jobs):
each is a conditional UPDATE that returns False to the loser. None of these functions commits;
they run on the caller's connection, inside its one transaction. The account's transition on
activation is not written here: it is an `AccountPlan` written by `bridge.provision.apply`.

`set_password` keeps one row per account in `credentials` (an argon2 hash, never a clear
password). `queue_reminder` writes the reminder's outbox row (channel `email`, topic
`activation_reminder`, one per link: its idempotency key is `reminder:<token id>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from bridge.core.lifecycle import Status
from bridge.store.tables import Account, ActivationToken, Credential, OutboxMessage, RoleGrant, Tenant

tokens = ActivationToken.__table__
outbox = OutboxMessage.__table__
accounts = Account.__table__
credentials = Credential.__table__
role_grants = RoleGrant.__table__
tenants = Tenant.__table__

ACTIVATION_TOPIC = "activation"
REMINDER_TOPIC = "activation_reminder"


def save_links(conn: Connection, values: Sequence[dict[str, Any]], now: datetime) -> None:
    """Store the links of a batch of activation rows (`values`: one `activation_tokens` row each).

    A row tried again keeps its row and takes the new hash and expiry (unless already used);
    every other live link of the same accounts is revoked. One round of statements for the batch."""
    if not values:
        return
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


def _newer_activation_exists() -> Any:
    newer = aliased(outbox)
    return exists().where(
        newer.c.tenant_id == tokens.c.tenant_id,
        newer.c.account_id == tokens.c.account_id,
        newer.c.topic == ACTIVATION_TOPIC,
        newer.c.id > tokens.c.outbox_id,
    )


def find_link(conn: Connection, digest: str) -> Any:
    """The link row of `digest` with what its page shows (account, tenant, the mail's payload) and
    `newer` (a newer activation row exists), or None."""
    return conn.execute(
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
        .where(tokens.c.token_hash == digest)
    ).first()


def claim_link(conn: Connection, token_id: int, now: datetime) -> bool:
    """Mark the link used; False when another request used it (or it was revoked) first."""
    used = conn.execute(
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.used_at.is_(None), tokens.c.revoked_at.is_(None))
        .values(used_at=now)
    )
    return used.rowcount == 1


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


def pending_accounts_by_email(conn: Connection, email_norm: str | None) -> list[Any]:
    """The pending accounts with this (folded) address, in every tenant, with `tenant_name`."""
    return list(
        conn.execute(
            select(accounts, tenants.c.name.label("tenant_name"))
            .join(tenants, tenants.c.id == accounts.c.tenant_id)
            .where(accounts.c.email_norm == email_norm, accounts.c.status == "pending")
        ).all()
    )


def links_to_remind(conn: Connection, now: datetime, horizon: datetime) -> list[Any]:
    """Live, not yet reminded links of pending accounts that expire in (now, horizon], with the
    payload and key of the activation row that carried them."""
    return list(
        conn.execute(
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
    )


def claim_reminder(conn: Connection, token_id: int, now: datetime) -> bool:
    """Mark the link reminded; False when another run reminded it first."""
    claimed = conn.execute(
        update(tokens).where(tokens.c.id == token_id, tokens.c.reminded_at.is_(None)).values(reminded_at=now)
    )
    return claimed.rowcount == 1


def queue_reminder(
    conn: Connection, *, token_id: int, tenant_id: int, account_id: str, payload: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        insert(outbox).values(
            tenant_id=tenant_id,
            account_id=account_id,
            channel="email",
            topic=REMINDER_TOPIC,
            payload=payload,
            idempotency_key=f"reminder:{token_id}",
            status="queued",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def purge_links(conn: Connection, cutoff: datetime) -> int:
    """Delete links used, revoked or expired before `cutoff`. Returns the count."""
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


def activation_links(conn: Connection, tenant_id: int, account_id: str, limit: int = 10) -> list[Any]:
    """The account's activation links, newest first: sent when, to which address, until when, and
    whether used or replaced (the console's account page; the clear link is never stored)."""
    return list(
        conn.execute(
            select(
                tokens.c.id,
                tokens.c.email,
                tokens.c.created_at,
                tokens.c.expires_at,
                tokens.c.used_at,
                tokens.c.revoked_at,
            )
            .where(tokens.c.tenant_id == tenant_id, tokens.c.account_id == account_id)
            .order_by(tokens.c.id.desc())
            .limit(limit)
        ).all()
    )
