"""Queries shared by the sync engine, the CLI and the HTTP layer. Every one takes a tenant id."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Text, bindparam, cast, func, insert, or_, select, update

from bridge.core.lifecycle import SEAT_STATES, Status
from bridge.core.mapping import RoleMapping
from bridge.core.plan import CAPACITY_DENIALS, AccountState, Usage
from bridge.errors import Ambiguous, NotFound
from bridge.store.tables import Account, AuditEvent, Credential, Identity, RoleGrant, ScimToken, SyncRun, Tenant

log = logging.getLogger(__name__)

accounts = Account.__table__
identities = Identity.__table__
role_grants = RoleGrant.__table__
tenants = Tenant.__table__
tokens = ScimToken.__table__
audit = AuditEvent.__table__
credentials = Credential.__table__
sync_runs = SyncRun.__table__


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered ids keep inserts at the right-hand end of the primary-key and foreign-key
    B-trees instead of scattering them: a first sync of 100k accounts wrote its rows in less
    than half the time with the same SQLite page cache (docs/benchmarks.md). The random part is
    as unguessable as before; ids still reveal nothing but their creation time.
    """
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | (random_bits & 0x3FFF_FFFF_FFFF_FFFF)
    )
    text = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without building the object
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def fold(value: str | None) -> str | None:
    """The normalised form used for case-insensitive lookups and uniqueness (userName, email)."""
    return value.casefold() if value is not None else None


# ---- tenants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantRow:
    id: int
    name: str
    seat_limit: int | None
    created_at: datetime


def ensure_tenant(
    conn: Connection, name: str, seat_limit: int | None, now: datetime, *, update_limit: bool
) -> TenantRow:
    """Create the tenant if missing (idempotent); `update_limit` makes the given limit authoritative."""
    row = conn.execute(select(tenants).where(tenants.c.name == name)).first()
    if row is None:
        conn.execute(insert(tenants).values(name=name, seat_limit=seat_limit, created_at=now))
    elif update_limit and row.seat_limit != seat_limit:
        conn.execute(update(tenants).where(tenants.c.id == row.id).values(seat_limit=seat_limit))
    return get_tenant(conn, name)


_TENANT_BY_NAME = select(tenants).where(tenants.c.name == bindparam("name"))  # every SCIM write


def get_tenant(conn: Connection, name: str) -> TenantRow:
    row = conn.execute(_TENANT_BY_NAME, {"name": name}).first()
    if row is None:
        raise NotFound(f'no tenant named "{name}"')
    return TenantRow(row.id, row.name, row.seat_limit, row.created_at)


def list_tenants(conn: Connection) -> list[TenantRow]:
    rows = conn.execute(select(tenants).order_by(tenants.c.name)).all()
    return [TenantRow(r.id, r.name, r.seat_limit, r.created_at) for r in rows]


# ---- tokens --------------------------------------------------------------------------------


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


def revoke_token(conn: Connection, token_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return result.rowcount == 1


def tenant_for_token(conn: Connection, token: str, now: datetime) -> Any:
    """The token's row (tenant_id, read_only, id, last_used_at) if it is valid: not revoked, not
    expired. The lookup is by hash, so timing reveals nothing about the stored tokens' characters."""
    row = conn.execute(
        select(
            tokens.c.id,
            tokens.c.tenant_id,
            tokens.c.read_only,
            tokens.c.token_hash,
            tokens.c.last_used_at,
            tokens.c.expires_at,
        ).where(tokens.c.token_hash == hash_token(token), tokens.c.revoked_at.is_(None))
    ).first()
    if row is None or not secrets.compare_digest(row.token_hash, hash_token(token)):
        return None
    return None if token_expired(row.expires_at, now) else row


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


# ---- accounts ------------------------------------------------------------------------------


_STATUS_BY_VALUE = {s.value: s for s in Status}
# Only what the planner reads: the JSON and timestamp columns it does not need cost a decode per
# row (SQLite stores datetimes as text), a third of load_account_states at 100k rows. Prebuilt,
# since re-planning a few people (every SCIM write) runs them: building a statement per call cost
# about as much as running it.
_STATES = (
    select(
        accounts.c.id,
        accounts.c.anchor,
        accounts.c.source,
        accounts.c.user_name,
        accounts.c.email,
        accounts.c.given_name,
        accounts.c.family_name,
        accounts.c.display_name,
        accounts.c.status,
        accounts.c.status_before_suspend,
        accounts.c.user_type,
        accounts.c.expires_at,
        accounts.c.admin_hold,
        # As text: nearly always "{}", which is cheaper to recognise than to decode per row.
        cast(accounts.c.denied, Text).label("denied_text"),
        identities.c.digest,
    )
    .join(identities, identities.c.id == accounts.c.identity_id)
    .where(accounts.c.tenant_id == bindparam("tenant_id"), accounts.c.source == bindparam("source"))
)
_STATE_GRANTS = (
    select(role_grants.c.account_id, role_grants.c.role)
    .join(accounts, accounts.c.id == role_grants.c.account_id)
    .where(role_grants.c.tenant_id == bindparam("tenant_id"), accounts.c.source == bindparam("source"))
)
_STATES_OF = _STATES.where(accounts.c.anchor.in_(bindparam("anchors", expanding=True)))
_STATE_GRANTS_OF = _STATE_GRANTS.where(accounts.c.anchor.in_(bindparam("anchors", expanding=True)))


def _account_state(
    r: Any, roles: frozenset[str], denied: Mapping[str, str] | None, digest: str | None = None
) -> AccountState:
    return AccountState(
        id=r.id,
        anchor=r.anchor,
        source=r.source,
        user_name=r.user_name,
        email=r.email,
        given_name=r.given_name,
        family_name=r.family_name,
        display_name=r.display_name,
        status=_STATUS_BY_VALUE[r.status],
        status_before_suspend=_STATUS_BY_VALUE[r.status_before_suspend] if r.status_before_suspend else None,
        roles=roles,
        user_type=r.user_type,
        identity_digest=digest,
        expires_at=r.expires_at,
        admin_hold=bool(r.admin_hold),
        denied=denied,
    )


def account_state(row: Any, roles: Iterable[str]) -> AccountState:
    """An account row (of `accounts`) and its roles, as the core sees an account."""
    return _account_state(row, frozenset(roles), row.denied or None)


def account_of_identity(conn: Connection, tenant_id: int, identity_id: str) -> tuple[Any, list[str]] | None:
    """The account of an identity (its row and its roles), or None."""
    row = conn.execute(
        select(accounts).where(accounts.c.identity_id == identity_id, accounts.c.tenant_id == tenant_id)
    ).first()
    if row is None:
        return None
    roles = sorted(conn.execute(select(role_grants.c.role).where(role_grants.c.account_id == row.id)).scalars())
    return row, roles


def load_account_states(
    conn: Connection, tenant_id: int, source: str, anchors: Sequence[str] | None = None
) -> dict[str, AccountState]:
    """The source's accounts keyed by anchor (all of them, or only `anchors`)."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "source": source}
    if anchors is None:
        rows = conn.execute(_STATES, params).all()
        grants = conn.execute(_STATE_GRANTS, params)
    else:
        params["anchors"] = list(anchors)
        rows = conn.execute(_STATES_OF, params).all()
        grants = conn.execute(_STATE_GRANTS_OF, params)
    roles: dict[str, set[str]] = {}
    for account_id, role in grants:
        roles.setdefault(account_id, set()).add(role)
    # Most accounts hold one of a few role sets: one frozenset per distinct set, not per account.
    role_sets: dict[frozenset[str], frozenset[str]] = {}
    held = {account_id: role_sets.setdefault(frozenset(r), frozenset(r)) for account_id, r in roles.items()}
    none: frozenset[str] = frozenset()
    return {r.anchor: _account_state(r, held.get(r.id, none), _denied(r.denied_text), r.digest) for r in rows}


def _denied(text: str | None) -> dict[str, str] | None:
    if not text or text == "{}" or text == "null":
        return None
    return json.loads(text) or None


def _usage_queries(by_source: bool, by_ids: bool) -> tuple[Any, Any]:
    conditions = [accounts.c.tenant_id == bindparam("tenant_id")]
    if by_source:
        conditions.append(accounts.c.source != bindparam("source"))
    if by_ids:
        conditions.append(accounts.c.id.not_in(bindparam("ids", expanding=True)))
    seats = (
        select(func.count(func.distinct(accounts.c.id)))
        .join(role_grants, role_grants.c.account_id == accounts.c.id)
        .where(
            *conditions,
            accounts.c.status.in_(bindparam("seat_states", expanding=True)),
            role_grants.c.tenant_id == bindparam("tenant_id"),
            role_grants.c.role.in_(bindparam("billable", expanding=True)),
        )
    )
    holders = (
        select(role_grants.c.role, func.count())
        .join(accounts, accounts.c.id == role_grants.c.account_id)
        # role_grants.tenant_id lets the (tenant_id, role) index drive the query instead of a
        # walk over every account of the tenant (70 ms at 100k accounts on SQLite).
        .where(
            *conditions,
            accounts.c.status != bindparam("archived"),
            role_grants.c.tenant_id == bindparam("tenant_id"),
            role_grants.c.role.in_(bindparam("limited", expanding=True)),
        )
        .group_by(role_grants.c.role)
    )
    return seats, holders


# Prebuilt for each combination of exclusions (a sync excludes its source, a re-plan its people).
_USAGE = {(s, i): _usage_queries(s, i) for s in (False, True) for i in (False, True)}


def usage_outside(
    conn: Connection,
    tenant_id: int,
    mapping: RoleMapping,
    *,
    exclude_source: str | None = None,
    exclude_ids: Iterable[str] = (),
    suspended_counts_as_seat: bool = True,
) -> Usage:
    """Seats and limited-role holders among accounts that a plan will not touch."""
    seat_states = [s.value for s in SEAT_STATES if suspended_counts_as_seat or s is not Status.SUSPENDED]
    billable = [r.id for r in mapping.roles.values() if r.billable]
    limited = [r.id for r in mapping.roles.values() if r.max_holders is not None]
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "source": exclude_source,
        "ids": list(exclude_ids),
        "seat_states": seat_states,
        "billable": billable,
        "limited": limited,
        "archived": Status.ARCHIVED.value,
    }
    seats_query, holders_query = _USAGE[(exclude_source is not None, bool(params["ids"]))]
    seats = conn.execute(seats_query, params).scalar_one() if billable else 0
    holders: dict[str, int] = dict(conn.execute(holders_query, params).all()) if limited else {}
    return Usage(seats=seats, holders=holders)


def live_accounts(conn: Connection, tenant_id: int, *, waiting_only: bool = False) -> dict[str, list[str]]:
    """source -> anchors of the tenant's accounts that are not archived, in userName order (the
    order in which newcomers are admitted to a seat or a limited role).

    `waiting_only`: only those a seat limit or a role's max_holders left without a role they are
    granted (their `denied` names one). The match is on the JSON's text, so it works alike on
    SQLite and PostgreSQL; it reads each live account of the tenant once.
    """
    query = select(accounts.c.source, accounts.c.anchor).where(
        accounts.c.tenant_id == tenant_id, accounts.c.status != Status.ARCHIVED.value
    )
    if waiting_only:
        text = cast(accounts.c.denied, Text)
        query = query.where(or_(*(text.like(f'%"{why}"%') for why in CAPACITY_DENIALS)))
    out: dict[str, list[str]] = {}
    for source, anchor in conn.execute(query.order_by(accounts.c.source, accounts.c.user_name_norm, accounts.c.id)):
        out.setdefault(source, []).append(anchor)
    return out


def stored_fingerprint(conn: Connection, tenant_id: int) -> str | None:
    """The fingerprint of the mapping the tenant's accounts were last planned with (None: never)."""
    return conn.execute(  # type: ignore[no-any-return]
        select(tenants.c.mapping_fingerprint).where(tenants.c.id == tenant_id)
    ).scalar_one_or_none()


def save_fingerprint(conn: Connection, tenant_id: int, fingerprint: str) -> None:
    conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(mapping_fingerprint=fingerprint))


def find_account(conn: Connection, tenant_id: int, user: str) -> Any:
    """An account by id, userName or email (case-insensitive); ambiguity is an error, not a guess."""
    folded = fold(user)
    rows = conn.execute(
        select(accounts).where(
            accounts.c.tenant_id == tenant_id,
            or_(accounts.c.id == user, accounts.c.user_name_norm == folded, accounts.c.email_norm == folded),
        )
    ).all()
    if not rows:
        raise NotFound(f'no account "{user}"')
    by_id = [r for r in rows if r.id == user]
    if by_id:
        return by_id[0]
    # A rehired person has an archived account and a live one with the same name or address:
    # the live one is meant. Within each tier (userName, then email) a single live account wins.
    for tier in ([r for r in rows if r.user_name_norm == folded], rows):
        live = [r for r in tier if r.status != Status.ARCHIVED.value]
        if len(tier) == 1:
            return tier[0]
        if len(live) == 1:
            return live[0]
    raise Ambiguous(f'"{user}" matches {len(rows)} accounts; use the account id (`bridge users list` shows it)')


def find_sign_in_account(conn: Connection, tenant_id: int, login: str) -> Any:
    """The account a login names, among those that may sign in (active), as `users show`
    resolves a name: the exact userName first, then the email. A rehired person's archived
    account with the same address is not a rival. None when nothing or more than one matches."""
    folded = fold(login)
    rows = conn.execute(
        select(accounts.c.id, accounts.c.user_name_norm, credentials.c.password_hash)
        .join(credentials, credentials.c.account_id == accounts.c.id, isouter=True)
        .where(
            accounts.c.tenant_id == tenant_id,
            accounts.c.status == Status.ACTIVE.value,
            or_(accounts.c.user_name_norm == folded, accounts.c.email_norm == folded),
        )
    ).all()
    by_name = [r for r in rows if r.user_name_norm == folded]
    candidates = by_name or rows
    return candidates[0] if len(candidates) == 1 else None


def account_roles(conn: Connection, account_ids: Sequence[str]) -> dict[str, list[tuple[str, str | None]]]:
    out: dict[str, list[tuple[str, str | None]]] = {}
    if not account_ids:
        return out
    for chunk_start in range(0, len(account_ids), 500):
        chunk = list(account_ids[chunk_start : chunk_start + 500])
        for row in conn.execute(
            select(role_grants.c.account_id, role_grants.c.role, role_grants.c.rule)
            .where(role_grants.c.account_id.in_(chunk))
            .order_by(role_grants.c.role)
        ):
            out.setdefault(row.account_id, []).append((row.role, row.rule))
    return out


def list_audit(
    conn: Connection, tenant_id: int, account_id: str | None = None, since: datetime | None = None, limit: int = 1000
) -> list[Any]:
    query = select(audit).where(audit.c.tenant_id == tenant_id)
    if account_id:
        query = query.where(audit.c.account_id == account_id)
    if since:
        query = query.where(audit.c.occurred_at >= since)
    return list(conn.execute(query.order_by(audit.c.id.desc()).limit(limit)).all())[::-1]


def record_tenant_event(
    conn: Connection,
    tenant_id: int,
    *,
    actor: str,
    action: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None,
    reason: str | None,
    correlation_id: str | None,
    now: datetime,
) -> None:
    """Append an audit event about no one account: the tenant as a whole (an overridden safety
    check), one of its groups, its webhook endpoint."""
    conn.execute(
        insert(audit).values(
            tenant_id=tenant_id,
            account_id=None,
            actor=actor,
            action=action,
            before=before,
            after=after,
            reason=reason,
            correlation_id=correlation_id,
            occurred_at=now,
        )
    )


def recent_sync_runs(
    conn: Connection, tenant_id: int | None = None, source: str | None = None, limit: int = 20
) -> list[Any]:
    query = select(sync_runs, tenants.c.name.label("tenant")).join(tenants, tenants.c.id == sync_runs.c.tenant_id)
    if tenant_id is not None:
        query = query.where(sync_runs.c.tenant_id == tenant_id)
    if source:
        query = query.where(sync_runs.c.source == source)
    return list(conn.execute(query.order_by(sync_runs.c.id.desc()).limit(limit)).all())
