"""Accounts: the product's users, their role grants, and the reads the planner needs.

Contract: this module only reads, but for `rehash_password` (a sign-in that verified against an
outdated argon2 hash stores the new one; the account row is not touched). An account row and
its grants are written by `bridge.provision.apply` and `bridge.provision.replan` (through
`bridge.store.changes`) in the transaction that writes the audit event and the outbox rows of
the change; nothing else updates `accounts`. Reads return rows (SQLAlchemy `Row`s of
`accounts`) or `bridge.core.plan.AccountState`s, the form the core plans with. `find_account`
raises `bridge.errors.NotFound` when nothing matches and `bridge.errors.Ambiguous` when a name
matches several accounts and no rule picks one; both are one-line errors for the CLI and 404/409
for the HTTP doors.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, bindparam, cast, func, or_, select, union, update

from bridge.core.lifecycle import SEAT_STATES, Status
from bridge.core.mapping import RoleMapping
from bridge.core.plan import CAPACITY_DENIALS, MODULE_SEAT_LIMIT, AccountState, Usage
from bridge.errors import Ambiguous, InvalidValue, NotFound
from bridge.store.ids import fold
from bridge.store.tables import Account, AuditEvent, Credential, Identity, RoleGrant

accounts = Account.__table__
identities = Identity.__table__
role_grants = RoleGrant.__table__
credentials = Credential.__table__


_STATUS_BY_VALUE = {s.value: s for s in Status}
STATUSES = tuple(s.value for s in Status)  # what a status filter may name
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
        cast(accounts.c.login_hours, Text).label("login_hours_text"),
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
# By account id, from the anchors' accounts: with the tenant's condition on role_grants, SQLite
# walked the tenant's grants (ix_role_grants_role) to find a few people's (30 ms at 100k).
_STATE_GRANTS_OF = select(role_grants.c.account_id, role_grants.c.role).where(
    role_grants.c.account_id.in_(
        select(accounts.c.id).where(
            accounts.c.tenant_id == bindparam("tenant_id"),
            accounts.c.source == bindparam("source"),
            accounts.c.anchor.in_(bindparam("anchors", expanding=True)),
        )
    )
)


def _account_state(
    r: Any,
    roles: frozenset[str],
    denied: Mapping[str, str] | None,
    digest: str | None = None,
    login_hours: Mapping[str, Any] | None = None,
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
        login_hours=login_hours,
    )


def account_state(row: Any, roles: Iterable[str]) -> AccountState:
    """An account row (of `accounts`) and its roles, as the core sees an account."""
    return _account_state(row, frozenset(roles), row.denied or None, login_hours=row.login_hours or None)


def account_of_identity(conn: Connection, tenant_id: int, identity_id: str) -> tuple[Any, list[str]] | None:
    """The account of an identity (its row and its roles), or None."""
    row = conn.execute(
        select(accounts).where(accounts.c.identity_id == identity_id, accounts.c.tenant_id == tenant_id)
    ).first()
    return _with_roles(conn, row)


def account_with_roles(conn: Connection, tenant_id: int, account_id: str) -> tuple[Any, list[str]] | None:
    """An account by id (its row and its roles), or None: the account an activation link names."""
    row = conn.execute(select(accounts).where(accounts.c.id == account_id, accounts.c.tenant_id == tenant_id)).first()
    return _with_roles(conn, row)


def _with_roles(conn: Connection, row: Any) -> tuple[Any, list[str]] | None:
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
    return {
        r.anchor: _account_state(r, held.get(r.id, none), _denied(r.denied_text), r.digest, _denied(r.login_hours_text))
        for r in rows
    }


def _denied(text: str | None) -> dict[str, str] | None:
    if not text or text == "{}" or text == "null":
        return None
    return json.loads(text) or None


# Most accounts hold one of a few role sets: each set's text is built once (a first sync writes
# it for every account; json.dumps per account was about a tenth of building its rows).
_HELD_TEXTS: dict[frozenset[str], str] = {}


def held_roles_text(roles: Iterable[str]) -> str:
    """`accounts.held_roles`: the account's roles as a sorted JSON array (migration 0017)."""
    key = roles if isinstance(roles, frozenset) else frozenset(roles)
    text = _HELD_TEXTS.get(key)
    if text is None:
        text = json.dumps(sorted(key))
        if len(_HELD_TEXTS) < 4096:  # role sets are few; a bound all the same
            _HELD_TEXTS[key] = text
    return text


def _usage_queries(by_source: bool, by_ids: bool) -> tuple[Any, Any, Any, Any, Any]:
    conditions = [accounts.c.tenant_id == bindparam("tenant_id")]
    if by_source:
        conditions.append(accounts.c.source != bindparam("source"))
    seat_state = accounts.c.status.in_(bindparam("seat_states", expanding=True))
    # The seat-state accounts by role set, from ix_accounts_seats alone: a few groups however
    # many accounts (the join below walks every billable grant and looks its account up: 150-400
    # ms at 100,000 accounts on SQLite, this about 15). The excluded ids are taken off after.
    by_roles = (
        select(accounts.c.held_roles, func.count())
        .where(*conditions, seat_state)
        .group_by(accounts.c.status, accounts.c.held_roles)
    )
    excluded = select(accounts.c.held_roles).where(
        *conditions, seat_state, accounts.c.id.in_(bindparam("ids", expanding=True))
    )
    if by_ids:
        conditions.append(accounts.c.id.not_in(bindparam("ids", expanding=True)))
    # Accounts whose held_roles is unknown (null: written by other means than provision.apply)
    # are counted from their grants, as every account was before migration 0017.
    unknown = (
        select(func.count(func.distinct(accounts.c.id)))
        .join(role_grants, role_grants.c.account_id == accounts.c.id)
        .where(
            *conditions,
            seat_state,
            accounts.c.held_roles.is_(None),
            role_grants.c.tenant_id == bindparam("tenant_id"),
            role_grants.c.role.in_(bindparam("billable", expanding=True)),
        )
    )
    # The same accounts' billable grants, for the seats per module (a mapping with [modules]).
    unknown_roles = (
        select(accounts.c.id, role_grants.c.role)
        .join(role_grants, role_grants.c.account_id == accounts.c.id)
        .where(
            *conditions,
            seat_state,
            accounts.c.held_roles.is_(None),
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
    return by_roles, excluded, unknown, holders, unknown_roles


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
    seats: bool = True,
) -> Usage:
    """Seats (`seats_outside`), seats per module (`seat_counts`) and limited-role holders
    among accounts that a plan will not touch. Without `seats` (a caller whose plan checks no
    seat limit, of the tenant or of a module), only the holders are counted: seats 0, no modules."""
    params = _usage_params(tenant_id, mapping, exclude_source, exclude_ids, suspended_counts_as_seat)
    holders: dict[str, int] = {}
    if params["limited"]:
        holders = dict(conn.execute(_USAGE[(exclude_source is not None, bool(params["ids"]))][3], params).all())
    if not seats:
        return Usage(seats=0, holders=holders, module_seats={})
    counted, modules = _seats(conn, params, mapping)
    return Usage(seats=counted, holders=holders, module_seats=modules)


def seats_outside(
    conn: Connection,
    tenant_id: int,
    mapping: RoleMapping,
    *,
    exclude_source: str | None = None,
    exclude_ids: Iterable[str] = (),
    suspended_counts_as_seat: bool = True,
) -> int:
    """Seats among accounts outside the exclusions: accounts in a seat state (suspended ones
    only if `suspended_counts_as_seat`) holding at least one billable role of `mapping`, each
    counted once however many it holds. The count the seat limit is checked against."""
    return _seats(conn, _usage_params(tenant_id, mapping, exclude_source, exclude_ids, suspended_counts_as_seat))[0]


def seat_counts(
    conn: Connection, tenant_id: int, mapping: RoleMapping, *, suspended_counts_as_seat: bool = True
) -> tuple[int, dict[str, int]]:
    """The tenant's seats (`seats_outside` of everyone) and its seats per module of `mapping`
    (every module, 0 included, in file order): the accounts `seats_outside` counts, each once in
    every module of its billable roles (`RoleMapping.seat_modules`). One read of the seat groups:
    what `tenants list`, /metrics and the console show, and what the limits are checked against."""
    return _seats(conn, _usage_params(tenant_id, mapping, None, (), suspended_counts_as_seat), mapping)


def _usage_params(
    tenant_id: int,
    mapping: RoleMapping,
    exclude_source: str | None,
    exclude_ids: Iterable[str],
    suspended_counts_as_seat: bool,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "source": exclude_source,
        "ids": list(dict.fromkeys(exclude_ids)),
        "seat_states": [s.value for s in SEAT_STATES if suspended_counts_as_seat or s is not Status.SUSPENDED],
        "billable": sorted(r.id for r in mapping.roles.values() if r.billable),
        "limited": [r.id for r in mapping.roles.values() if r.max_holders is not None],
        "archived": Status.ARCHIVED.value,
    }


def _seats(conn: Connection, params: dict[str, Any], mapping: RoleMapping | None = None) -> tuple[int, dict[str, int]]:
    """(seats, seats per module) from the same few groups of role sets: the modules cost no
    query of their own, but for the accounts whose held_roles is unknown."""
    billable = set(params["billable"])
    modules = dict.fromkeys(mapping.modules if mapping is not None else (), 0)
    if not billable:
        return 0, modules
    by_roles, excluded, unknown, _, unknown_roles = _USAGE[(params["source"] is not None, bool(params["ids"]))]
    takes_seat: dict[str | None, tuple[bool, frozenset[str]]] = {}

    def seat_of(held: str | None) -> tuple[bool, frozenset[str]]:
        if held not in takes_seat:
            roles = json.loads(held) if held is not None else ()
            in_modules = mapping.seat_modules(roles) if modules and mapping is not None else frozenset()
            takes_seat[held] = (held is not None and not billable.isdisjoint(roles), in_modules)
        return takes_seat[held]

    def add(held: str | None, n: int) -> int:
        seat, in_modules = seat_of(held)
        for module in in_modules:
            modules[module] += n
        return n if seat else 0

    groups = conn.execute(by_roles, params).all()
    seats = sum(add(held, n) for held, n in groups)
    if params["ids"]:
        seats += sum(add(held, -1) for (held,) in conn.execute(excluded, params))
    if any(held is None for held, _ in groups):
        seats += conn.execute(unknown, params).scalar_one()
        if modules and mapping is not None:
            by_account: dict[str, list[str]] = {}
            for account_id, role in conn.execute(unknown_roles, params):
                by_account.setdefault(account_id, []).append(role)
            for roles in by_account.values():
                for module in mapping.seat_modules(roles):
                    modules[module] += 1
    return seats, modules


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
        waiting = [text.like(f'%"{why}"%') for why in CAPACITY_DENIALS]
        waiting.append(text.like(f'%"{MODULE_SEAT_LIMIT}%'))  # seat_limit:<module>
        query = query.where(or_(*waiting))
    out: dict[str, list[str]] = {}
    for source, anchor in conn.execute(query.order_by(accounts.c.source, accounts.c.user_name_norm, accounts.c.id)):
        out.setdefault(source, []).append(anchor)
    return out


def find_account(conn: Connection, tenant_id: int, user: str) -> Any:
    """An account by id, userName or email (case-insensitive); ambiguity is an error, not a guess."""
    folded = fold(user)
    # Three index lookups united: SQLite does not split an OR of columns beside tenant_id into
    # them, and walked every account of the tenant for one name (70-180 ms at 100k).
    matching = union(
        select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, accounts.c.id == user),
        select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, accounts.c.user_name_norm == folded),
        select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, accounts.c.email_norm == folded),
    )
    rows = conn.execute(select(accounts).where(accounts.c.id.in_(matching))).all()
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
    # Two index lookups united, as in find_account (an OR walked the tenant's active accounts).
    matching = union(
        select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, accounts.c.user_name_norm == folded),
        select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, accounts.c.email_norm == folded),
    )
    rows = conn.execute(
        select(accounts.c.id, accounts.c.user_name_norm, accounts.c.login_hours, credentials.c.password_hash)
        .join(credentials, credentials.c.account_id == accounts.c.id, isouter=True)
        .where(accounts.c.id.in_(matching), accounts.c.status == Status.ACTIVE.value)
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


def list_accounts(conn: Connection, tenant_id: int, status: str | None = None) -> list[Any]:
    """The tenant's account rows (all of them, or those in `status`), by folded userName."""
    query = select(accounts).where(accounts.c.tenant_id == tenant_id)
    if status:
        query = query.where(accounts.c.status == status)
    return list(conn.execute(query.order_by(accounts.c.user_name_norm)).all())


def long_suspended_ids(conn: Connection, tenant_id: int, cutoff: datetime) -> list[str]:
    """Ids of the tenant's accounts suspended since `cutoff` or earlier: the time of their newest
    `suspend` audit event (index ix_audit_account), or their creation for an account created
    suspended. A person suspended, resumed and suspended again counts from the last suspension."""
    audit = AuditEvent.__table__
    suspended_at = (
        select(func.max(audit.c.occurred_at))
        .where(audit.c.tenant_id == tenant_id, audit.c.account_id == accounts.c.id, audit.c.action == "suspend")
        .scalar_subquery()
    )
    return list(
        conn.execute(
            select(accounts.c.id).where(
                accounts.c.tenant_id == tenant_id,
                accounts.c.status == Status.SUSPENDED.value,
                func.coalesce(suspended_at, accounts.c.created_at) <= cutoff,
            )
        )
        .scalars()
        .all()
    )


def expired_external_ids(conn: Connection, tenant_id: int, now: datetime) -> list[str]:
    """Ids of the tenant's external accounts, not archived, whose expiry date is `now` or earlier."""
    return list(
        conn.execute(
            select(accounts.c.id).where(
                accounts.c.tenant_id == tenant_id,
                accounts.c.user_type == "external",
                accounts.c.status != Status.ARCHIVED.value,
                accounts.c.expires_at.is_not(None),
                accounts.c.expires_at <= now,
            )
        )
        .scalars()
        .all()
    )


def get_account(conn: Connection, tenant_id: int, account_id: str) -> Any:
    """The account row with this id in the tenant; sqlalchemy's `NoResultFound` if there is none
    (the callers hold an id they have just read)."""
    return conn.execute(select(accounts).where(accounts.c.id == account_id, accounts.c.tenant_id == tenant_id)).one()


def rehash_password(conn: Connection, account_id: str, password_hash: str, now: datetime) -> None:
    """Replace the account's password hash by one made with the current parameters."""
    conn.execute(
        update(credentials)
        .where(credentials.c.account_id == account_id)
        .values(password_hash=password_hash, updated_at=now)
    )


def account_statuses(conn: Connection, account_ids: Iterable[str]) -> dict[str, str]:
    """The status of each of `account_ids` that still exists (a deleted one is absent)."""
    ids = set(account_ids)
    if not ids:
        return {}
    return dict(conn.execute(select(accounts.c.id, accounts.c.status).where(accounts.c.id.in_(ids))).tuples().all())


def account_identities(conn: Connection, account_ids: Sequence[str]) -> list[Any]:
    """Who the accounts are, as they are now: rows with `id`, `user_name`, `email`, `user_type`
    and their identity's `external_id` and `anchor` (the product matches its users on these)."""
    return list(
        conn.execute(
            select(
                accounts.c.id,
                accounts.c.user_name,
                accounts.c.email,
                accounts.c.user_type,
                accounts.c.login_hours,
                identities.c.external_id,
                identities.c.anchor,
            )
            .join(identities, identities.c.id == accounts.c.identity_id)
            .where(accounts.c.id.in_(account_ids))
        ).all()
    )


def account_refs(conn: Connection, account_ids: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """Who each event is about, for the product to match its user: the `account` of a webhook
    and of a feed entry, as the account is when it is sent (its status and roles at the time
    of the event are in the event's `change`)."""
    ids = sorted({a for a in account_ids if a})
    if not ids:
        return {}
    return {
        r.id: {
            "id": r.id,
            "userName": r.user_name,
            "email": r.email,
            "userType": r.user_type,
            "externalId": r.external_id or r.anchor,
            # When the person may sign in (docs/operations/login-hours.md); null: any time.
            "loginHours": r.login_hours or None,
        }
        for r in account_identities(conn, ids)
    }


def accounts_after(
    conn: Connection, tenant_id: int, after_id: str | None, limit: int, status: str | None = None
) -> list[Any]:
    """Up to `limit` of the tenant's account rows with an id above `after_id`, by id (keyset
    paging on the primary key: a page costs the same at the end of 100k accounts as at the start)."""
    query = select(accounts).where(accounts.c.tenant_id == tenant_id)
    if after_id is not None:
        query = query.where(accounts.c.id > after_id)
    if status:
        query = query.where(accounts.c.status == status)
    return list(conn.execute(query.order_by(accounts.c.id).limit(limit)).all())


def account_counts(conn: Connection) -> list[tuple[int, str, int]]:
    """(tenant id, status, count) for every status a tenant has accounts in."""
    return [
        (tenant_id, status, count)
        for tenant_id, status, count in conn.execute(
            select(accounts.c.tenant_id, accounts.c.status, func.count()).group_by(
                accounts.c.tenant_id, accounts.c.status
            )
        )
    ]


# ---- the console's reads ---------------------------------------------------------------------


def status_counts(conn: Connection, tenant_id: int) -> dict[str, int]:
    """The tenant's accounts by status: every status of the lifecycle, 0 included, in the table's
    order. One index-only count over (tenant_id, status)."""
    counts = {s.value: 0 for s in Status}
    for status, count in conn.execute(
        select(accounts.c.status, func.count()).where(accounts.c.tenant_id == tenant_id).group_by(accounts.c.status)
    ):
        counts[status] = count
    return counts


@dataclass(frozen=True)
class AccountPage:
    """One page of `search_accounts`: its rows (with `roles`, a list of (role, rule)), and the
    cursor of the next page (None on the last)."""

    rows: list[AccountListRow]
    next_after: str | None


class BadCursor(InvalidValue):
    """A paging cursor that `search_accounts` did not make (edited, truncated)."""


def _encode_cursor(name_norm: str, account_id: str) -> str:
    raw = json.dumps([name_norm, account_id], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        value = None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadCursor("not a page cursor of this list")
    return value[0], value[1]


# The folded columns a search's text is matched against, as a prefix.
_SEARCHED = (accounts.c.user_name_norm, accounts.c.email_norm, accounts.c.given_name_norm, accounts.c.family_name_norm)
# U+10FFFF sorts after every character in SQLite's BINARY order (UTF-8 bytes = code points).
_TOP = "\U0010ffff"
# A role held by more accounts than this, or a prefix matching as many, is matched while walking
# the userName order (dense enough to fill a page within about limit * tenant / _DENSE index
# entries); a rarer one drives the query from its own index and sorts what it found.
_DENSE_ROLE = 2000
_DENSE = 2000


def _prefix(conn: Connection, column: Any, folded: str) -> Any:
    if conn.dialect.name == "postgresql":
        # LIKE with a constant prefix is what the text_pattern_ops indexes serve whatever the
        # database's collation (a range on text follows the collation, which may ignore case,
        # accents or punctuation: not a prefix).
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(escaped + "%", escape="\\")
    return (column >= folded) & (column < folded + _TOP)


def search_accounts(
    conn: Connection,
    tenant_id: int,
    *,
    text: str | None = None,
    status: str | None = None,
    role: str | None = None,
    source: str | None = None,
    user_type: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> AccountPage:
    """The tenant's accounts matching every filter given, in folded-userName order (then id),
    `limit` at a time.

    `text` matches a *prefix* of the folded (`ids.fold`) userName, email, given name or family
    name: "ann" finds "Anna Smith" and "ann.lee@x", not "Joanna". Prefixes, not substrings,
    because a prefix is an index range (on PostgreSQL a LIKE 'x%' on text_pattern_ops indexes), so
    a search reads the matching rows only, at any tenant size; a substring would read them all.
    Blank text is no filter. `status`, `role`, `source`, `user_type` are exact values.
    `after` is the page's cursor (`next_after` of the page before): keyset paging, so a page costs
    the same at the end of the list as at its start, and rows added meanwhile do not shift the
    pages. A cursor this function did not make raises `BadCursor` (an `InvalidValue`).

    Rows carry id, user_name, email, given_name, family_name, display_name, status, user_type,
    source and `roles` (a list of (role, rule) in role order, read in one more query).
    """
    limit = max(1, min(limit, 500))
    columns = (
        accounts.c.id,
        accounts.c.user_name,
        accounts.c.user_name_norm,
        accounts.c.email,
        accounts.c.given_name,
        accounts.c.family_name,
        accounts.c.display_name,
        accounts.c.status,
        accounts.c.user_type,
        accounts.c.source,
    )
    conditions: list[Any] = [accounts.c.tenant_id == tenant_id]
    if status:
        conditions.append(accounts.c.status == status)
    if source:
        conditions.append(accounts.c.source == source)
    if user_type:
        conditions.append(accounts.c.user_type == user_type)
    if after is not None:
        name, last_id = _decode_cursor(after)
        # The first term is an index range; the second breaks ties between equal userNames.
        conditions.append(accounts.c.user_name_norm >= name)
        conditions.append(or_(accounts.c.user_name_norm > name, accounts.c.id > last_id))
    folded = fold(text.strip()) if text and text.strip() else None
    query: Any
    if folded and _prefix_matches(conn, tenant_id, folded) >= _DENSE:
        # Many matches ("a"): walk the userName order and keep the matching rows; at this
        # density a page is found within a few thousand index entries, where sorting every
        # match would read them all.
        prefixes = or_(*(_prefix(conn, c, folded) for c in _SEARCHED))
        # SQLite would rather sort the union of the four ranges; the index that gives the order
        # is named (on PostgreSQL the planner's statistics choose).
        walk = "ix_accounts_status_name" if status else "ix_accounts_user_name"
        query = select(*columns).with_hint(accounts, f"INDEXED BY {walk}", "sqlite")
        conditions.append(prefixes)
    elif folded:
        # Few matches: each column's index range gives ids; their union is joined to the rows and
        # sorted. The work grows with the matches, never with the tenant.
        matches = union(
            *(
                select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, _prefix(conn, c, folded))
                for c in _SEARCHED
            )
        ).subquery("matches")
        query = select(*columns).select_from(matches.join(accounts, accounts.c.id == matches.c.id))
    elif role and _holders(conn, tenant_id, role) <= _DENSE_ROLE:
        query = (
            select(*columns)
            .select_from(role_grants.join(accounts, accounts.c.id == role_grants.c.account_id))
            .where(role_grants.c.tenant_id == tenant_id, role_grants.c.role == role)
        )
        role = None  # the join is the filter
    else:
        query = select(*columns)
    if role:
        conditions.append(
            select(role_grants.c.role)
            .where(role_grants.c.account_id == accounts.c.id, role_grants.c.role == role)
            .exists()
        )
    rows = list(
        conn.execute(query.where(*conditions).order_by(accounts.c.user_name_norm, accounts.c.id).limit(limit + 1)).all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    roles = account_roles(conn, [r.id for r in rows])
    page = [AccountListRow(**r._asdict(), roles=roles.get(r.id, [])) for r in rows]
    next_after = _encode_cursor(rows[-1].user_name_norm, rows[-1].id) if more else None
    return AccountPage(page, next_after)


@dataclass(frozen=True)
class AccountListRow:
    """One row of an account list: the account's columns a list shows, and its roles."""

    id: str
    user_name: str
    user_name_norm: str
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    status: str
    user_type: str
    source: str
    roles: list[tuple[str, str | None]]


def _prefix_matches(conn: Connection, tenant_id: int, folded: str) -> int:
    """How many index entries the four prefix ranges hold, counting at most _DENSE in each
    (index-only, so at most 4 * _DENSE entries read)."""
    total = 0
    for column in _SEARCHED:
        capped = (
            select(column)
            .where(accounts.c.tenant_id == tenant_id, _prefix(conn, column, folded))
            .limit(_DENSE)
            .subquery()
        )
        total += int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
        if total >= _DENSE:
            break
    return total


def _holders(conn: Connection, tenant_id: int, role: str) -> int:
    """How many accounts hold `role` (an index-only count over (tenant_id, role))."""
    return int(
        conn.execute(
            select(func.count()).where(role_grants.c.tenant_id == tenant_id, role_grants.c.role == role)
        ).scalar_one()
    )


@dataclass(frozen=True)
class Refusal:
    account_id: str
    user_name: str
    email: str | None
    source: str
    user_type: str
    denied: Mapping[str, str]  # role -> reason (seat_limit, max_holders, external_not_allowed)


def refused_accounts(conn: Connection, tenant_id: int, *, limit: int = 1000) -> tuple[list[Refusal], int]:
    """The tenant's live accounts the rules grant a role that was left out (their stored `denied`
    is not empty), in userName order: (the first `limit`, how many in all).

    The `denied` each plan stores is the reason (`seat_limit`, `max_holders`,
    `external_not_allowed`), so this is what the last plan of each person decided, not a guess
    from today's mapping. Reads each live account of the tenant once, like `live_accounts`
    (the JSON is matched as text, alike on SQLite and PostgreSQL)."""
    text = cast(accounts.c.denied, Text)
    query = (
        select(
            accounts.c.id,
            accounts.c.user_name,
            accounts.c.email,
            accounts.c.source,
            accounts.c.user_type,
            text.label("denied_text"),
        )
        .where(
            accounts.c.tenant_id == tenant_id,
            accounts.c.status != Status.ARCHIVED.value,
            accounts.c.denied.is_not(None),
            text.not_in(["{}", "null"]),
        )
        .order_by(accounts.c.user_name_norm, accounts.c.id)
    )
    out: list[Refusal] = []
    total = 0
    for r in conn.execute(query):
        denied = _denied(r.denied_text)
        if not denied:
            continue
        total += 1
        if len(out) < limit:
            out.append(Refusal(r.id, r.user_name, r.email, r.source, r.user_type, denied))
    return out, total
