"""SQL for the SCIM channel: SCIM Users and Groups are identities of the source "scim".

Contract: readers return rows (or None: not found); writers raise `bridge.errors.Conflict` when
a name is taken in the tenant and `InvalidValue` for a value no column can hold, which the SCIM
door renders as 409 uniqueness and 400 invalidValue; the SCIM document is parsed by the door
(`identity_of`), never here.

Every query is scoped by tenant, source "scim" and `deleted_at IS NULL`, so another tenant's ids
(and deleted ones) are simply not found. Writers run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from bridge.core.groups import explore
from bridge.core.model import SourceUser
from bridge.core.plan import identity_digest
from bridge.errors import Conflict, InvalidValue
from bridge.store.bulk import insert_many
from bridge.store.fast import FastQuery
from bridge.store.identities import identity_values, remove_group
from bridge.store.ids import fold
from bridge.store.tables import Account, AuditEvent, Identity, Membership, RoleGrant, ScimEmail
from bridge.store.tokens import TOKEN_COLUMNS, TOKEN_FROM, TOKEN_MATCHES, tokens

SOURCE = "scim"
identities = Identity.__table__
accounts = Account.__table__
memberships = Membership.__table__
role_grants = RoleGrant.__table__
emails = ScimEmail.__table__
audit = AuditEvent.__table__
CHUNK = 500

_USER_COLUMNS = (
    identities.c.id,
    identities.c.anchor,
    identities.c.resource,
    identities.c.active,
    identities.c.created_at,
    identities.c.updated_at,
    identities.c.version,
    accounts.c.status,
    accounts.c.user_type,
    accounts.c.version.label("account_version"),
    accounts.c.login_hours,
    # Not always the identity's id: an account made by a rename (user_name_changes = "recreate")
    # has its own, and the SCIM resource keeps the identity's.
    accounts.c.id.label("account_id"),
)
_GROUP_COLUMNS = (
    identities.c.id,
    identities.c.anchor,
    identities.c.name,
    identities.c.resource,
    identities.c.created_at,
    identities.c.updated_at,
    identities.c.version,
)


def _live(tenant_id: int, kind: str) -> ColumnElement[bool]:
    return and_(
        identities.c.tenant_id == tenant_id,
        identities.c.source == SOURCE,
        identities.c.kind == kind,
        identities.c.deleted_at.is_(None),
    )


def _from(kind: str) -> Any:
    if kind == "user":
        return identities.outerjoin(accounts, accounts.c.identity_id == identities.c.id)
    return identities


def base_query(tenant_id: int, kind: str, *, driven_by_subquery: bool = False) -> Select[Any]:
    columns = _USER_COLUMNS if kind == "user" else _GROUP_COLUMNS
    live = _live_unindexed(tenant_id, kind) if driven_by_subquery else _live(tenant_id, kind)
    return select(*columns).select_from(_from(kind)).where(live)


def _live_unindexed(tenant_id: int, kind: str) -> ColumnElement[bool]:
    """The tenant/source/kind terms written `+column = value`, which SQLite will not serve from an
    index (and PostgreSQL reads as the same comparison). Used when a filter's subquery on emails or
    memberships is selective: without statistics SQLite otherwise walks every identity of the
    tenant through the (tenant, source, kind, ...) indexes and tests the subquery per row."""
    return and_(
        literal_column("+identities.tenant_id") == tenant_id,
        literal_column("+identities.source") == SOURCE,
        literal_column("+identities.kind") == kind,
        identities.c.deleted_at.is_(None),
    )


_LOOKUP_COLUMNS = {
    ("user", "username"): identities.c.name_norm,
    ("user", "externalid"): identities.c.external_id,
    ("user", "id"): identities.c.anchor,
    ("group", "displayname"): identities.c.name_norm,
    ("group", "externalid"): identities.c.external_id,
    ("group", "id"): identities.c.anchor,
}
_USER_FROM = _from("user")
LOOKUP_ATTRIBUTES = frozenset(_LOOKUP_COLUMNS)


def _scim_source(lookup_column: Any) -> ColumnElement[bool]:
    """`source = 'scim'` for a lookup by `lookup_column`. A literal, so that SQLite can use the
    partial unique indexes on userName and displayName. For externalId it is written so that no
    index serves it: SQLite (which has no statistics) otherwise walks every identity of the
    tenant through the (tenant, source, kind, created) index instead of using the externalId one."""
    if lookup_column is identities.c.external_id:
        return identities.c.source.concat(literal_column("''")) == literal_column("'scim'")
    return identities.c.source == literal_column("'scim'")


def _lookup_statement(kind: str, column: Any) -> Select[Any]:
    i = identities.c
    base = select(*_USER_COLUMNS).select_from(_USER_FROM) if kind == "user" else select(*_GROUP_COLUMNS)
    # No ORDER BY: it tempted SQLite into walking the creation-order index; the few matches
    # are sorted in Python.
    return base.where(
        i.tenant_id == bindparam("tenant_id"),
        _scim_source(column),
        i.kind == kind,
        i.deleted_at.is_(None),
        column == bindparam("value"),
    ).limit(bindparam("limit"))


# Built once: executing a prebuilt statement skips building and cache-keying a new one each time
# (about half the cost of a lookup in SQLAlchemy Core).
_LOOKUPS = {key: _lookup_statement(key[0], column) for key, column in _LOOKUP_COLUMNS.items()}


def lookup(conn: Connection, tenant_id: int, kind: str, attribute: str, value: str, limit: int) -> list[Any]:
    """`attribute eq "value"` on an indexed column: the identity providers' hot path (match
    before create)."""
    params = {"tenant_id": tenant_id, "value": _lookup_value(attribute, value), "limit": limit}
    return sorted(conn.execute(_LOOKUPS[(kind, attribute)], params), key=_creation_order)


def _lookup_value(attribute: str, value: str) -> str:
    return value.casefold() if attribute in ("username", "displayname") else value


def _creation_order(row: Any) -> tuple[Any, Any]:
    # No ORDER BY in the statement (see _lookup_statement): the few matches are sorted here.
    return row.created_at, row.id


def count_query(
    tenant_id: int, kind: str, where: ColumnElement[bool] | None, *, driven_by_subquery: bool = False
) -> Select[Any]:
    live = _live_unindexed(tenant_id, kind) if driven_by_subquery else _live(tenant_id, kind)
    query = select(func.count()).select_from(_from(kind)).where(live)
    return query.where(where) if where is not None else query


def _get_statement(kind: str, lock: bool) -> Select[Any]:
    columns = _USER_COLUMNS if kind == "user" else _GROUP_COLUMNS
    query = (
        select(*columns)
        .select_from(_from(kind))
        .where(
            identities.c.tenant_id == bindparam("tenant_id"),
            identities.c.source == SOURCE,
            identities.c.kind == kind,
            identities.c.deleted_at.is_(None),
            identities.c.anchor == bindparam("anchor"),
        )
    )
    # PostgreSQL: serialise writers of one resource (SQLite writers are serial already).
    return query.with_for_update(of=identities) if lock else query


# Prebuilt: every GET, PUT, PATCH and DELETE of one resource starts here.
_GETS = {(kind, lock): _get_statement(kind, lock) for kind in ("user", "group") for lock in (False, True)}


def get(conn: Connection, tenant_id: int, kind: str, anchor: str, *, lock: bool = False) -> Any:
    return conn.execute(_GETS[(kind, lock)], {"tenant_id": tenant_id, "anchor": anchor}).first()


def ensure_unique_name(conn: Connection, tenant_id: int, kind: str, name: str, anchor: str | None) -> None:
    params = {"tenant_id": tenant_id, "kind": kind, "name": fold(name), "anchor": anchor}
    if conn.execute(_NAME_TAKEN[anchor is not None], params).first() is not None:
        what = "userName" if kind == "user" else "displayName"
        raise Conflict(f'{what} "{name}" is already taken in this tenant')


# Prebuilt: every POST and PUT checks the name.
_NAME_TAKEN = {
    other: select(identities.c.anchor)
    .where(
        identities.c.tenant_id == bindparam("tenant_id"),
        identities.c.source == SOURCE,
        identities.c.kind == bindparam("kind"),
        identities.c.deleted_at.is_(None),
        identities.c.name_norm == bindparam("name"),
        *([identities.c.anchor != bindparam("anchor")] if other else []),
    )
    .limit(1)
    for other in (False, True)
}


# ---- users ---------------------------------------------------------------------------------


def direct_groups(conn: Connection, tenant_id: int, anchor: str) -> tuple[str, ...]:
    rows = conn.execute(
        select(memberships.c.group_anchor).where(
            memberships.c.tenant_id == tenant_id,
            memberships.c.source == SOURCE,
            memberships.c.member_anchor == anchor,
        )
    ).scalars()
    return tuple(sorted(rows))


IdentityOf = Callable[[str, dict[str, Any], tuple[str, ...]], SourceUser]


def write_user(
    conn: Connection,
    tenant_id: int,
    anchor: str,
    doc: dict[str, Any],
    now: datetime,
    *,
    create: bool,
    identity_of: IdentityOf,
) -> None:
    """Store a user's resource and the columns the core and the filters read; `identity_of`
    (the door's) says what the core sees of the document, given the user's direct groups.

    The digest is the one `load_subjects` will compute, so re-planning sees the identity as
    already stored and does not rewrite it."""
    groups = () if create else direct_groups(conn, tenant_id, anchor)
    user = identity_of(anchor, doc, groups)
    values = identity_values(user)
    values["digest"] = identity_digest(user)
    values.update(resource=doc, external_id=doc.get("externalId"), updated_at=now)
    if create:
        row = {"id": anchor, "tenant_id": tenant_id, "source": SOURCE, "kind": "user", "anchor": anchor}
        insert_many(conn, identities, [{**row, "created_at": now, "version": 1, **values}])
    else:
        conn.execute(
            update(identities)
            .where(identities.c.id == anchor, identities.c.tenant_id == tenant_id)
            .values(version=identities.c.version + 1, **values)
        )
        conn.execute(delete(emails).where(emails.c.identity_id == anchor))
    rows = [
        {
            "tenant_id": tenant_id,
            "identity_id": anchor,
            "value": e["value"],
            "value_norm": fold(e["value"]),
            "type_norm": fold(e.get("type")),
            "primary": e.get("primary") is True,
        }
        for e in doc.get("emails") or ()
        if isinstance(e.get("value"), str)
    ]
    for row in rows:
        if len(row["value"]) > 320:
            raise InvalidValue("an email address is longer than 320 characters")
    if rows:
        insert_many(conn, emails, rows)


def user_anchors(conn: Connection, tenant_id: int) -> list[str]:
    """Every live SCIM user of the tenant (the re-plan a resumed tenant runs), in anchor order."""
    statement = select(identities.c.anchor).where(_live(tenant_id, "user")).order_by(identities.c.anchor)
    return list(conn.execute(statement).scalars())


def deleted_with_live_account(conn: Connection, tenant_id: int) -> list[str]:
    """SCIM users deleted whose account is not archived: the DELETEs a paused tenant received."""
    return list(
        conn.execute(
            select(identities.c.anchor)
            .select_from(identities.join(accounts, accounts.c.identity_id == identities.c.id))
            .where(
                identities.c.tenant_id == tenant_id,
                identities.c.source == SOURCE,
                identities.c.kind == "user",
                identities.c.deleted_at.is_not(None),
                accounts.c.status != "archived",
            )
            .order_by(identities.c.anchor)
        ).scalars()
    )


def mark_deleted(conn: Connection, tenant_id: int, anchor: str, now: datetime) -> None:
    conn.execute(
        update(identities)
        .where(identities.c.id == anchor, identities.c.tenant_id == tenant_id)
        .values(deleted_at=now, updated_at=now, version=identities.c.version + 1)
    )
    conn.execute(delete(emails).where(emails.c.identity_id == anchor))
    conn.execute(
        delete(memberships).where(
            memberships.c.tenant_id == tenant_id,
            memberships.c.source == SOURCE,
            memberships.c.member_anchor == anchor,
        )
    )


def groups_of(
    conn: Connection, tenant_id: int, anchors: Sequence[str], base_url: str
) -> dict[str, list[dict[str, Any]]]:
    """Each user's direct groups, as the read-only `groups` attribute (RFC 7643 4.1.2)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(anchors), CHUNK):
        params = {"tenant_id": tenant_id, "anchors": list(anchors[start : start + CHUNK])}
        _add_group_refs(out, conn.execute(_GROUPS_OF, params), base_url)
    return out


def _add_group_refs(out: dict[str, list[dict[str, Any]]], rows: Iterable[Any], base_url: str) -> None:
    # In name order, sorted here (see _groups_of_statement).
    for member, group_anchor, name, _ in sorted(rows, key=lambda row: row[3]):
        out.setdefault(member, []).append(
            {"value": group_anchor, "$ref": f"{base_url}/Groups/{group_anchor}", "display": name, "type": "direct"}
        )


_GROUPS = identities.alias("g")


class _NotIndexed(ColumnElement[Any]):
    """`+column` on SQLite, where it keeps the term from being served by an index on that column
    (the planner's choice without statistics is then the one meant); the column elsewhere."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012 - cacheable

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_NotIndexed)
def _not_indexed(element: _NotIndexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column, **kw))


@compiles(_NotIndexed, "sqlite")
def _not_indexed_sqlite(element: _NotIndexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.column, **kw))


def _groups_of_statement(member: ColumnElement[bool]) -> Select[Any]:
    """Memberships by member, joined to the group's name. No ORDER BY: it tempted SQLite into
    walking every group of the tenant in name order (a user's groups took 13 ms at 5,000 groups,
    0.3 ms at one); the caller sorts the few rows."""
    return (
        select(memberships.c.member_anchor, _GROUPS.c.anchor, _GROUPS.c.name, _GROUPS.c.name_norm)
        .join(
            _GROUPS,
            and_(
                _GROUPS.c.tenant_id == memberships.c.tenant_id,
                _GROUPS.c.source == memberships.c.source,
                _GROUPS.c.kind == "group",
                # Memberships by member first, then each group by its key. For one member SQLite
                # otherwise walked every group of the tenant and probed its memberships.
                _GROUPS.c.anchor == _NotIndexed(memberships.c.group_anchor),
            ),
        )
        .where(
            memberships.c.tenant_id == bindparam("tenant_id"),
            memberships.c.source == SOURCE,
            member,
            _GROUPS.c.deleted_at.is_(None),
        )
    )


# Prebuilt (it runs for every user returned).
_GROUPS_OF = _groups_of_statement(memberships.c.member_anchor.in_(bindparam("anchors", expanding=True)))


# ---- the identity providers' hot path on the DB-API cursor (bridge/store/fast.py) ------------
_FAST_LOOKUPS = {key: FastQuery(statement) for key, statement in _LOOKUPS.items()}
_FAST_GROUPS_OF_ONE = FastQuery(_groups_of_statement(memberships.c.member_anchor == bindparam("anchor")))


def fast_lookup(
    cursor: Any, dialect: Dialect, tenant_id: int, kind: str, attribute: str, value: str, limit: int
) -> list[Any]:
    """`lookup` on a DB-API cursor: the same rows, in the same order."""
    params = {"tenant_id": tenant_id, "value": _lookup_value(attribute, value), "limit": limit}
    return sorted(_FAST_LOOKUPS[(kind, attribute)].rows(cursor, dialect, params), key=_creation_order)


def _token_lookup_statement(column: Any) -> Select[Any]:
    """A request's token (TOKEN_COLUMNS) and its tenant's users with `column = value`, in one
    statement: one row per user, one row without a user when none matches, no row when the
    token is unknown or revoked. The fast lane's lookup (bridge/scim/fastlane.py)."""
    i = identities.c
    match = and_(
        i.tenant_id == tokens.c.tenant_id,
        _scim_source(column),
        i.kind == "user",
        i.deleted_at.is_(None),
        column == bindparam("value"),
    )
    return (
        select(*TOKEN_COLUMNS, *_USER_COLUMNS)
        .select_from(TOKEN_FROM.outerjoin(identities, match).outerjoin(accounts, accounts.c.identity_id == i.id))
        .where(TOKEN_MATCHES)
        .limit(bindparam("limit"))
    )


_FAST_TOKEN_LOOKUPS = {
    attribute: FastQuery(_token_lookup_statement(column))
    for (kind, attribute), column in _LOOKUP_COLUMNS.items()
    if kind == "user"
}


def fast_lookup_with_token(
    cursor: Any, dialect: Dialect, digest: str, attribute: str, value: str, limit: int
) -> tuple[Any | None, list[Any]]:
    """The token's row (for `auth.caller_of`; None when the token is unknown or revoked) and
    `fast_lookup`'s users, in creation order, from one statement."""
    params = {"digest": digest, "value": _lookup_value(attribute, value), "limit": limit}
    rows = _FAST_TOKEN_LOOKUPS[attribute].rows(cursor, dialect, params)
    if not rows:
        return None, []
    return rows[0], sorted((r for r in rows if r.id is not None), key=_creation_order)


def fast_groups_of(
    cursor: Any, dialect: Dialect, tenant_id: int, anchors: Sequence[str], base_url: str
) -> dict[str, list[dict[str, Any]]]:
    """`groups_of` on a DB-API cursor, one statement per user (called for a page of a few)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for anchor in anchors:
        _add_group_refs(
            out, _FAST_GROUPS_OF_ONE.rows(cursor, dialect, {"tenant_id": tenant_id, "anchor": anchor}), base_url
        )
    return out


def roles_of(conn: Connection, ids: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {i: [] for i in ids}
    for start in range(0, len(ids), CHUNK):
        for account_id, role in conn.execute(
            select(role_grants.c.account_id, role_grants.c.role)
            .where(role_grants.c.account_id.in_(list(ids[start : start + CHUNK])))
            .order_by(role_grants.c.role)
        ):
            out[account_id].append(role)
    return out


# ---- groups --------------------------------------------------------------------------------


def write_group(
    conn: Connection, tenant_id: int, anchor: str, doc: dict[str, Any], now: datetime, *, create: bool
) -> None:
    name = doc["displayName"]
    values = {
        "name": name,
        "name_norm": fold(name),
        "display_name": name,
        "external_id": doc.get("externalId"),
        "resource": doc,
    }
    if create:
        conn.execute(
            insert(identities).values(
                id=anchor,
                tenant_id=tenant_id,
                source=SOURCE,
                kind="group",
                anchor=anchor,
                active=True,
                attributes={},
                scim_roles=[],
                created_at=now,
                updated_at=now,
                version=1,
                **values,
            )
        )
    else:
        touch(conn, tenant_id, anchor, now, **values)


def touch(conn: Connection, tenant_id: int, anchor: str, now: datetime, **values: Any) -> None:
    """A new version of a resource (ETag, meta.lastModified) without rewriting its members."""
    if values:
        conn.execute(
            update(identities)
            .where(identities.c.id == anchor, identities.c.tenant_id == tenant_id)
            .values(version=identities.c.version + 1, updated_at=now, **values)
        )
    else:
        conn.execute(_TOUCH, {"b_id": anchor, "b_tenant": tenant_id, "now": now})


def touch_users(conn: Connection, tenant_id: int, anchors: Sequence[str], now: datetime) -> None:
    """A new version of each user (ETag, meta.lastModified: their `groups` changed) without
    re-planning them: a membership change no mapping rule can see (`provision.replan.membership_matters`)."""
    for start in range(0, len(anchors), CHUNK):
        conn.execute(_TOUCH_USERS, {"b_tenant": tenant_id, "anchors": list(anchors[start : start + CHUNK]), "now": now})


# Prebuilt: every member change of a group bumps its version.
_TOUCH = (
    update(identities)
    .where(identities.c.id == bindparam("b_id"), identities.c.tenant_id == bindparam("b_tenant"))
    .values(version=identities.c.version + 1, updated_at=bindparam("now"))
)
_TOUCH_USERS = (
    update(identities)
    .where(
        identities.c.tenant_id == bindparam("b_tenant"),
        identities.c.source == SOURCE,
        identities.c.kind == "user",
        identities.c.anchor.in_(bindparam("anchors", expanding=True)),
    )
    .values(version=identities.c.version + 1, updated_at=bindparam("now"))
)


def members_of(conn: Connection, tenant_id: int, group_anchor: str, base_url: str) -> list[dict[str, Any]]:
    m = identities.alias("m")
    rows = conn.execute(
        select(m.c.anchor, m.c.kind)
        .select_from(memberships)
        .join(
            m,
            and_(
                m.c.tenant_id == memberships.c.tenant_id,
                m.c.source == memberships.c.source,
                m.c.anchor == memberships.c.member_anchor,
            ),
        )
        .where(
            memberships.c.tenant_id == tenant_id,
            memberships.c.source == SOURCE,
            memberships.c.group_anchor == group_anchor,
            m.c.deleted_at.is_(None),
        )
        .order_by(m.c.anchor)
    )
    out = []
    for anchor, kind in rows:
        endpoint = "Users" if kind == "user" else "Groups"
        # No "display": it is what the client sent with the member, which is not kept per member
        # (scim2-tester compares it with what it sent; Entra and Okta never read it back).
        out.append(
            {"value": anchor, "$ref": f"{base_url}/{endpoint}/{anchor}", "type": "User" if kind == "user" else "Group"}
        )
    return out


def member_anchors(conn: Connection, tenant_id: int, group_anchor: str) -> set[str]:
    return set(
        conn.execute(
            select(memberships.c.member_anchor).where(
                memberships.c.tenant_id == tenant_id,
                memberships.c.source == SOURCE,
                memberships.c.group_anchor == group_anchor,
            )
        ).scalars()
    )


def kinds(conn: Connection, tenant_id: int, anchors: Iterable[str]) -> dict[str, str]:
    """user/group of each live SCIM identity among `anchors`; unknown ids are left out."""
    wanted = list(dict.fromkeys(anchors))
    out: dict[str, str] = {}
    for start in range(0, len(wanted), CHUNK):
        params = {"tenant_id": tenant_id, "anchors": wanted[start : start + CHUNK]}
        for anchor, kind in conn.execute(_KINDS, params):
            out[anchor] = kind
    return out


_KINDS = select(identities.c.anchor, identities.c.kind).where(
    # kind IN (...) lets the (tenant, source, kind, anchor) index serve the lookup
    identities.c.tenant_id == bindparam("tenant_id"),
    identities.c.source == SOURCE,
    identities.c.kind.in_(("user", "group")),
    identities.c.deleted_at.is_(None),
    identities.c.anchor.in_(bindparam("anchors", expanding=True)),
)


def add_members(conn: Connection, tenant_id: int, group_anchor: str, ids: Sequence[str]) -> list[str]:
    """Insert the memberships that are missing; returns the ids actually added."""
    present: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        params = {"tenant_id": tenant_id, "group": group_anchor, "anchors": list(ids[start : start + CHUNK])}
        present |= set(conn.execute(_PRESENT_MEMBERS, params).scalars())
    added = [i for i in dict.fromkeys(ids) if i not in present]
    insert_many(
        conn,
        memberships,
        [{"tenant_id": tenant_id, "source": SOURCE, "group_anchor": group_anchor, "member_anchor": i} for i in added],
    )
    return added


_PRESENT_MEMBERS = select(memberships.c.member_anchor).where(
    memberships.c.tenant_id == bindparam("tenant_id"),
    memberships.c.source == SOURCE,
    memberships.c.group_anchor == bindparam("group"),
    memberships.c.member_anchor.in_(bindparam("anchors", expanding=True)),
)


def remove_members(conn: Connection, tenant_id: int, group_anchor: str, ids: Sequence[str] | None) -> list[str]:
    """Delete the given memberships (all of them for None); returns the ids actually removed."""
    scope = and_(
        memberships.c.tenant_id == tenant_id, memberships.c.source == SOURCE, memberships.c.group_anchor == group_anchor
    )
    removed: list[str] = []
    if ids is None:
        removed = sorted(member_anchors(conn, tenant_id, group_anchor))
        conn.execute(delete(memberships).where(scope))
        return removed
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        found = list(
            conn.execute(
                select(memberships.c.member_anchor).where(scope, memberships.c.member_anchor.in_(chunk))
            ).scalars()
        )
        if found:
            conn.execute(delete(memberships).where(scope, memberships.c.member_anchor.in_(found)))
            removed.extend(found)
    return removed


def users_under(conn: Connection, tenant_id: int, anchors: Iterable[str]) -> list[str]:
    """The users among `anchors` and, for groups among them, every user nested below."""
    users: set[str] = set()

    def members_of(frontier: set[str]) -> dict[str, set[str]]:
        kind_of = kinds(conn, tenant_id, frontier)
        users.update(a for a, k in kind_of.items() if k == "user")
        groups = [a for a, k in kind_of.items() if k == "group"]
        found: dict[str, set[str]] = {}
        for start in range(0, len(groups), CHUNK):
            for group_anchor, member_anchor in conn.execute(
                select(memberships.c.group_anchor, memberships.c.member_anchor).where(
                    memberships.c.tenant_id == tenant_id,
                    memberships.c.source == SOURCE,
                    memberships.c.group_anchor.in_(groups[start : start + CHUNK]),
                )
            ):
                found.setdefault(group_anchor, set()).add(member_anchor)
        return found

    explore(anchors, members_of)
    return sorted(users)


def delete_group(conn: Connection, tenant_id: int, anchor: str, actor: str, correlation_id: str, now: datetime) -> None:
    remove_group(
        conn,
        tenant_id,
        SOURCE,
        anchor,
        anchor,  # a SCIM identity's id is its anchor
        actor=actor,
        correlation_id=correlation_id,
        reason="deleted by the SCIM client",
        now=now,
    )
