"""The writer of one account change: account row, grants, identity link, audit event, outbox rows.

`write_rows` writes a batch's rows, built by `bridge.provision.apply` (one dict per row, keyed by
column; `b_id`/`b_tenant`/`b_role` bind the WHERE of the prebuilt UPDATE and DELETE statements),
in dependency order: identities, accounts, grant deletes, grants, audit events. The caller fills
every column, ids included (`store.ids.new_id`); rows of one table go out as one executemany.
Outbox rows (`insert_outbox_rows`) carry the same keys whatever their channel.
`supersede_queued_activations` marks an account's queued activation mails "superseded" in the
same transaction as the new one, so an older mail never goes out after it. Database errors are
SQLAlchemy's, unchanged: apply retries a failed batch one account per transaction.

Contract: `bridge.provision.apply` is the only caller that writes a transition. It turns a `Plan`
into rows and hands them here; the account's status, its grants, its audit events and its outbox
rows are written on the caller's connection, in the caller's transaction, so they commit together
or not at all. Nothing here commits, decides a transition or checks a rule.

`set_account_flags` writes the two columns a transition does not carry: `admin_hold` (set by an
administrator's or the expiry job's archive, cleared by a reactivation, so that a sync does not
bring the account back meanwhile) and `expires_at` (renewed when an external account is
reactivated). `bridge.provision.replan` calls it after the transition in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from bridge.errors import BridgeError
from bridge.store.bulk import insert_many
from bridge.store.tables import Account, ActivationToken, AuditEvent, Identity, OutboxMessage, RoleGrant


class AccountMoved(BridgeError):
    """The account is no longer in the state its plan starts from (only checked for an
    activation, the one change a person makes on their own; the caller's transaction is void)."""


accounts = Account.__table__
identities = Identity.__table__
role_grants = RoleGrant.__table__
audit = AuditEvent.__table__
outbox = OutboxMessage.__table__
activation_tokens = ActivationToken.__table__

# Statements built once: building `insert(...).values(**literals)` per row cost more than the
# database work itself on a first sync (SQLAlchemy coerces and cache-keys every literal).
# Parameters are bound instead, and rows of one table go out as one executemany.
# By anchor, not id (uq_identities_anchor serves it): an account made by a rename under
# `recreate` has an id of its own, and its identity keeps the one it had.
_UPDATE_IDENTITY = (
    update(identities)
    .where(
        identities.c.tenant_id == bindparam("b_tenant"),
        identities.c.source == bindparam("b_source"),
        identities.c.kind == "user",
        identities.c.anchor == bindparam("b_anchor"),
    )
    .values(version=identities.c.version + 1)
)
_DELETE_GRANT = delete(role_grants).where(
    role_grants.c.account_id == bindparam("b_id"), role_grants.c.role == bindparam("b_role")
)
_DELETE_ALL_GRANTS = delete(role_grants).where(role_grants.c.account_id == bindparam("b_id"))
_UPDATE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"), accounts.c.tenant_id == bindparam("b_tenant"))
    .values(version=accounts.c.version + 1)
)
# The activation's transition, only from the state it was planned from: a sync or an administrator
# may have moved the account since the link was checked (on PostgreSQL, in another transaction).
_ACTIVATE_ACCOUNT = (
    update(accounts)
    .where(
        accounts.c.id == bindparam("b_id"),
        accounts.c.tenant_id == bindparam("b_tenant"),
        accounts.c.status == bindparam("b_status"),
    )
    .values(version=accounts.c.version + 1)
)
_MAIL_FIELDS = select(
    accounts.c.id,
    accounts.c.email,
    accounts.c.user_name,
    accounts.c.version,
    accounts.c.given_name,
    identities.c.preferred_language,
).join(identities, identities.c.id == accounts.c.identity_id)


def set_account_flags(conn: Connection, account_id: str, **values: Any) -> None:
    """Set `admin_hold` and/or `expires_at` on one account."""
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def stored_identity_ids(
    conn: Connection, tenant_id: int, wanted: Mapping[str, Sequence[str]]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(source, anchor) -> (id, digest) of the stored user identity, for the anchors wanted per
    source."""
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    for source, anchors in wanted.items():
        params = {"tenant_id": tenant_id, "source": source, "anchors": list(anchors)}
        for row in conn.execute(_STORED_IDENTITIES, params):
            found[(source, row.anchor)] = (row.id, row.digest)
    return found


# Prebuilt: every SCIM POST looks up the identity it stored before planning.
_STORED_IDENTITIES = select(identities.c.id, identities.c.anchor, identities.c.digest).where(
    identities.c.tenant_id == bindparam("tenant_id"),
    identities.c.source == bindparam("source"),
    identities.c.kind == "user",
    identities.c.anchor.in_(bindparam("anchors", expanding=True)),
)


def stored_roles(conn: Connection, ids: Sequence[str]) -> dict[str, set[str]]:
    """The roles granted now, by account id."""
    roles: dict[str, set[str]] = {}
    if ids:
        for account_id, role in conn.execute(
            select(role_grants.c.account_id, role_grants.c.role).where(role_grants.c.account_id.in_(ids))
        ):
            roles.setdefault(account_id, set()).add(role)
    return roles


def write_rows(conn: Connection, rows: Any) -> None:
    """Write a batch's `identity_inserts`, `identity_updates`, `tombstones` and `detaches` (the
    old accounts of renames under `recreate`), `account_inserts`, `account_updates`
    (lists by the set of columns they set), `activations` (each only if the account is still in
    `b_status`, else `AccountMoved`), `grant_deletes`, `archive_deletes` (every grant of an
    archived account), `grant_inserts` and `audit`, in that order."""
    if rows.identity_inserts:
        insert_many(conn, identities, rows.identity_inserts)
    if rows.identity_updates:
        conn.execute(_UPDATE_IDENTITY, rows.identity_updates)
    if rows.tombstones:
        insert_many(conn, identities, rows.tombstones)
        # Before the new accounts: they take the anchor and the identity the old ones leave.
        conn.execute(_UPDATE_ACCOUNT, rows.detaches)
    if rows.account_inserts:
        insert_many(conn, accounts, rows.account_inserts)
    for update_rows in rows.account_updates.values():
        conn.execute(_UPDATE_ACCOUNT, update_rows)
    for row in rows.activations:
        if conn.execute(_ACTIVATE_ACCOUNT, row).rowcount != 1:
            raise AccountMoved(f"account {row['b_id']} is no longer {row['b_status']}")
    if rows.grant_deletes:
        conn.execute(_DELETE_GRANT, rows.grant_deletes)
    if rows.archive_deletes:
        conn.execute(_DELETE_ALL_GRANTS, rows.archive_deletes)
    if rows.grant_inserts:
        insert_many(conn, role_grants, rows.grant_inserts)
    if rows.audit:
        insert_many(conn, audit, rows.audit)  # in change order: ids grow with the list


def supersede_queued_activations(conn: Connection, tenant_id: int, account_ids: Sequence[str]) -> None:
    conn.execute(
        update(outbox)
        .where(
            outbox.c.tenant_id == tenant_id,
            outbox.c.account_id.in_(account_ids),
            outbox.c.topic == "activation",
            outbox.c.status == "queued",
        )
        .values(status="superseded")
    )


def mail_fields(conn: Connection, account_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What an activation mail needs of each account (address, names, language), by account id."""
    return {row.id: row._asdict() for row in conn.execute(_MAIL_FIELDS.where(accounts.c.id.in_(account_ids)))}


def newest_activations(conn: Connection, tenant_id: int, account_ids: Sequence[str]) -> Any:
    """Each account's newest activation outbox row (status, payload), its current address, and
    the link delivered with it if any (`link_email`, `used_at`, `revoked_at`, `expires_at`)."""
    newest = (
        select(func.max(outbox.c.id))
        .where(
            outbox.c.tenant_id == tenant_id,
            outbox.c.account_id.in_(list(account_ids)),
            outbox.c.topic == "activation",
        )
        .group_by(outbox.c.account_id)
    )
    return conn.execute(
        select(
            outbox.c.account_id,
            outbox.c.status,
            outbox.c.payload,
            accounts.c.email,
            activation_tokens.c.email.label("link_email"),
            activation_tokens.c.used_at,
            activation_tokens.c.revoked_at,
            activation_tokens.c.expires_at,
        )
        .join(accounts, accounts.c.id == outbox.c.account_id)
        .join(activation_tokens, activation_tokens.c.outbox_id == outbox.c.id, isouter=True)
        .where(outbox.c.id.in_(newest))
    )


def insert_outbox_rows(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_many(conn, outbox, rows)
