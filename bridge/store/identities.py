"""Identities (what sources said) and their memberships: writing groups, reading subjects back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, or_, select, text, update

from bridge.core.groups import closure, explore
from bridge.core.model import GroupRef, SourceGroup, SourceUser
from bridge.core.plan import Subject, identity_digest
from bridge.jsonfast import dumps
from bridge.store.audit import record_tenant_event
from bridge.store.bulk import insert_many
from bridge.store.ids import new_id
from bridge.store.tables import Identity, Membership

identities = Identity.__table__
memberships = Membership.__table__


def _group_digest(group: SourceGroup, members: Iterable[str]) -> str:
    import hashlib
    import json

    payload = [group.name, group.dn, sorted(set(members))]
    return hashlib.blake2b(json.dumps(payload).encode(), digest_size=16).hexdigest()


def identity_values(user: SourceUser, digest: str | None = None) -> dict[str, Any]:
    return {
        "dn": user.dn,
        "name": user.user_name,
        "name_norm": user.user_name.casefold(),
        "email": user.email,
        "email_norm": user.email.casefold() if user.email else None,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "display_name": user.display_name,
        "active": user.active,
        "attributes": {k: list(v) for k, v in user.attributes.items()},
        "scim_roles": list(user.scim_roles),
        "preferred_language": user.preferred_language,
        "digest": digest or identity_digest(user),
    }


def user_from_row(row: Any, groups: tuple[str, ...] = ()) -> SourceUser:
    """A stored user identity back as the SourceUser the source reported."""
    return SourceUser(
        anchor=row.anchor,
        user_name=row.name,
        email=row.email,
        given_name=row.given_name,
        family_name=row.family_name,
        display_name=row.display_name,
        active=row.active,
        dn=row.dn,
        attributes={k: tuple(v) for k, v in (row.attributes or {}).items()},
        groups=groups,
        scim_roles=tuple(row.scim_roles or ()),
        preferred_language=row.preferred_language,
    )


# Members per INSERT statement: each statement is one call into the database that runs without
# the GIL (see `GroupChanges.insert_members`); chunks bound the JSON text held at once (~0.4 MB;
# 100,000 per statement raised a first sync's peak RSS by 13 MB).
_MEMBERS_PER_STATEMENT = 10_000

# One statement inserts the memberships of many groups from a JSON object {group: [member, ...]}.
_INSERT_MEMBERS = {
    "sqlite": text(
        "INSERT INTO memberships (tenant_id, source, group_anchor, member_anchor) "
        "SELECT :tenant_id, :source, g.key, m.value FROM json_each(:groups) AS g, json_each(g.value) AS m"
    ),
    "postgresql": text(
        "INSERT INTO memberships (tenant_id, source, group_anchor, member_anchor) "
        "SELECT :tenant_id, :source, g.key, m.value "
        "FROM json_each(CAST(:groups AS json)) AS g, json_array_elements_text(g.value) AS m"
    ),
}


@dataclass
class GroupChanges:
    """What a write of the source's groups changes, computed by `diff_groups` without writing.

    `write` applies it on the caller's transaction: `write_rows` (group rows, old member rows),
    `insert_members`, then `remove_gone`. A full sync runs `insert_members` in a thread while it
    plans (bridge/engine/sync.py), which is why the three are also separate."""

    tenant_id: int
    source: str
    new_groups: list[dict[str, Any]]
    updated: list[tuple[str, dict[str, Any]]]  # (identity id, new values)
    members: dict[str, list[str]]  # group anchor -> its members, for each group (re)written
    gone: list[tuple[str, str]]  # (anchor, identity id) of groups no longer in the source
    now: datetime
    actor: str
    correlation_id: str | None

    @property
    def changed(self) -> int:
        return len(self.members) + len(self.gone)

    @property
    def member_rows(self) -> int:
        return sum(len(m) for m in self.members.values())

    def write(self, conn: Connection) -> int:
        """Store the groups and their direct members; returns how many groups changed."""
        self.write_rows(conn)
        self.insert_members(conn)
        self.remove_gone(conn)
        return self.changed

    def write_rows(self, conn: Connection) -> None:
        for identity_id, values in self.updated:
            conn.execute(
                update(identities)
                .where(identities.c.id == identity_id)
                .values(version=identities.c.version + 1, **values)
            )
        # The old member rows of every rewritten group, new ones included: a row left over from
        # elsewhere must not make every later sync fail on the primary key.
        rewritten = list(self.members)
        for start in range(0, len(rewritten), 500):
            conn.execute(
                delete(memberships).where(
                    memberships.c.tenant_id == self.tenant_id,
                    memberships.c.source == self.source,
                    memberships.c.group_anchor.in_(rewritten[start : start + 500]),
                )
            )
        insert_many(conn, identities, self.new_groups)  # one executemany (bridge/store/bulk.py)

    def insert_members(self, conn: Connection) -> None:
        """The member rows in a few statements, each a single call into the database: the driver
        releases the GIL for it, so a full sync plans in another thread meanwhile. (Row by row, a
        thread waits for the GIL after every row while another one computes: 300,000 rows took
        minutes instead of seconds.)"""
        statement = _INSERT_MEMBERS.get(conn.dialect.name)
        if statement is None:  # another dialect: the generic executemany
            rows = [
                {"tenant_id": self.tenant_id, "source": self.source, "group_anchor": g, "member_anchor": m}
                for g, ms in self.members.items()
                for m in ms
            ]
            insert_many(conn, memberships, rows)
            return
        chunk: dict[str, list[str]] = {}
        size = 0
        for anchor, members in self.members.items():
            # A group larger than a statement is split over several (a JSON key appears once).
            for start in range(0, len(members), _MEMBERS_PER_STATEMENT):
                part = members[start : start + _MEMBERS_PER_STATEMENT]
                if chunk and (anchor in chunk or size + len(part) > _MEMBERS_PER_STATEMENT):
                    self._insert(conn, statement, chunk)
                    chunk, size = {}, 0
                chunk[anchor] = part
                size += len(part)
        if chunk:
            self._insert(conn, statement, chunk)

    def _insert(self, conn: Connection, statement: Any, chunk: dict[str, list[str]]) -> None:
        conn.execute(statement, {"tenant_id": self.tenant_id, "source": self.source, "groups": dumps(chunk)})

    def remove_gone(self, conn: Connection) -> None:
        """After the member rows: removing a group also deletes the rows that name it as a member."""
        for anchor, identity_id in self.gone:
            remove_group(
                conn,
                self.tenant_id,
                self.source,
                anchor,
                identity_id,
                actor=self.actor,
                correlation_id=self.correlation_id,
                reason="no longer in source",
                now=self.now,
            )


def diff_groups(
    conn: Connection,
    tenant_id: int,
    source: str,
    groups: Mapping[str, SourceGroup],
    users: Mapping[str, SourceUser],
    now: datetime,
    *,
    complete_scope: bool,
    actor: str,
    correlation_id: str | None,
) -> GroupChanges:
    """Compare the source's groups with the stored ones (reads only).

    Membership comes from both sides (group `members`, user `groups`) since some directories
    fill only one. Unchanged groups (same digest) are not rewritten, so a no-change sync is cheap.
    """
    members: dict[str, set[str]] = {a: set(g.members) for a, g in groups.items()}
    for user in users.values():
        for group_anchor in user.groups:
            if group_anchor in members:
                members[group_anchor].add(user.anchor)
    existing = {
        r.anchor: r
        for r in conn.execute(
            select(identities.c.id, identities.c.anchor, identities.c.digest).where(
                identities.c.tenant_id == tenant_id, identities.c.source == source, identities.c.kind == "group"
            )
        )
    }
    new_groups: list[dict[str, Any]] = []
    updated: list[tuple[str, dict[str, Any]]] = []
    rewritten: dict[str, list[str]] = {}
    for anchor, group in sorted(groups.items()):  # primary-key order: appends on a first sync
        digest = _group_digest(group, members[anchor])
        row = existing.get(anchor)
        if row is not None and row.digest == digest:
            continue
        rewritten[anchor] = sorted(members[anchor])
        values = {
            "dn": group.dn,
            "name": group.name,
            "name_norm": group.name.casefold(),
            "display_name": group.name,
            "digest": digest,
            "updated_at": now,
        }
        if row is None:
            new_groups.append(
                {
                    "id": new_id(),
                    "tenant_id": tenant_id,
                    "source": source,
                    "kind": "group",
                    "anchor": anchor,
                    "active": True,
                    "attributes": {},
                    "scim_roles": [],
                    "created_at": now,
                    "version": 1,
                    **values,
                }
            )
        else:
            updated.append((row.id, values))
    gone = [(anchor, row.id) for anchor, row in existing.items() if anchor not in groups] if complete_scope else []
    return GroupChanges(
        tenant_id=tenant_id,
        source=source,
        new_groups=new_groups,
        updated=updated,
        members=rewritten,
        gone=gone,
        now=now,
        actor=actor,
        correlation_id=correlation_id,
    )


def remove_group(
    conn: Connection,
    tenant_id: int,
    source: str,
    anchor: str,
    identity_id: str,
    *,
    actor: str,
    correlation_id: str | None,
    reason: str,
    now: datetime,
) -> None:
    """Delete a group, its memberships on both sides (its members, and its own place in other
    groups), and record it. A full sync's snapshot has already dropped references to it, so the
    groups that listed it were rewritten without it; a SCIM DELETE relies on this to unlink it."""
    conn.execute(
        delete(memberships).where(
            memberships.c.tenant_id == tenant_id,
            memberships.c.source == source,
            or_(memberships.c.group_anchor == anchor, memberships.c.member_anchor == anchor),
        )
    )
    conn.execute(delete(identities).where(identities.c.id == identity_id, identities.c.tenant_id == tenant_id))
    record_tenant_event(
        conn,
        tenant_id,
        actor=actor,
        action="group_removed",
        before={"group": anchor, "source": source},
        after=None,
        reason=reason,
        correlation_id=correlation_id,
        now=now,
    )


# Prebuilt: these run on every SCIM write and every re-plan; building and cache-keying a new
# statement each time cost about as much as running it.
_PARENTS = select(memberships.c.group_anchor, memberships.c.member_anchor).where(
    memberships.c.tenant_id == bindparam("tenant_id"),
    memberships.c.source == bindparam("source"),
    memberships.c.member_anchor.in_(bindparam("anchors", expanding=True)),
)
_USERS_BY_ANCHOR = select(identities).where(
    identities.c.tenant_id == bindparam("tenant_id"),
    identities.c.source == bindparam("source"),
    identities.c.kind == "user",
    identities.c.anchor.in_(bindparam("anchors", expanding=True)),
)


def stored_groups(conn: Connection, tenant_id: int, source: str, anchors: Iterable[str]) -> dict[str, GroupRef]:
    out: dict[str, GroupRef] = {}
    batch = list(anchors)
    for start in range(0, len(batch), 500):
        params = {"tenant_id": tenant_id, "source": source, "anchors": batch[start : start + 500]}
        for row in conn.execute(_STORED_GROUPS, params):
            out[row.anchor] = GroupRef(anchor=row.anchor, name=row.name, dn=row.dn)
    return out


# Prebuilt: every re-plan (each SCIM write) names the groups of the people it plans.
_STORED_GROUPS = select(identities.c.anchor, identities.c.name, identities.c.dn).where(
    identities.c.tenant_id == bindparam("tenant_id"),
    identities.c.source == bindparam("source"),
    identities.c.kind == "group",
    identities.c.anchor.in_(bindparam("anchors", expanding=True)),
)


def effective_groups(
    conn: Connection, tenant_id: int, source: str, member_anchors: Sequence[str]
) -> dict[str, tuple[GroupRef, ...]]:
    """Each member's groups, direct and nested, read from stored memberships (cycle-safe)."""
    return _effective(conn, tenant_id, source, member_anchors, _parents(conn, tenant_id, source, member_anchors))


def _parents(conn: Connection, tenant_id: int, source: str, member_anchors: Sequence[str]) -> dict[str, set[str]]:
    """The groups each node directly belongs to, for the members and every group above them."""

    def parents_of(frontier: set[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        batch = list(frontier)
        for start in range(0, len(batch), 500):
            params = {"tenant_id": tenant_id, "source": source, "anchors": batch[start : start + 500]}
            for group_anchor, member_anchor in conn.execute(_PARENTS, params):
                found.setdefault(member_anchor, set()).add(group_anchor)
        return found

    return explore(member_anchors, parents_of)[1]


def _effective(
    conn: Connection, tenant_id: int, source: str, member_anchors: Sequence[str], parents: dict[str, set[str]]
) -> dict[str, tuple[GroupRef, ...]]:
    refs = stored_groups(conn, tenant_id, source, {g for gs in parents.values() for g in gs})
    return {
        member: tuple(refs[a] for a in sorted(closure(parents.get(member, ()), parents)) if a in refs)
        for member in member_anchors
    }


def effective_group_names(
    conn: Connection, tenant_id: int, members: Sequence[tuple[str, str, str]]
) -> dict[str, list[str]]:
    """(account id, source, anchor) -> sorted group names."""
    by_source: dict[str, list[tuple[str, str]]] = {}
    for account_id, source, anchor in members:
        by_source.setdefault(source, []).append((account_id, anchor))
    out: dict[str, list[str]] = {}
    for source, pairs in by_source.items():
        groups = effective_groups(conn, tenant_id, source, [a for _, a in pairs])
        for account_id, anchor in pairs:
            out[account_id] = sorted({g.name for g in groups.get(anchor, ())}, key=str.casefold)
    return out


def load_subjects(conn: Connection, tenant_id: int, source: str, anchors: Sequence[str]) -> list[Subject]:
    """Subjects rebuilt from stored identities, for re-planning a few people (SCIM, CLI)."""
    params = {"tenant_id": tenant_id, "source": source, "anchors": list(anchors)}
    rows = conn.execute(_USERS_BY_ANCHOR, params).all()
    found = [r.anchor for r in rows]
    # The walk's first level is each person's direct groups (the identity's `groups`).
    parents = _parents(conn, tenant_id, source, found)
    groups = _effective(conn, tenant_id, source, found, parents)
    subjects = []
    for r in rows:
        user = user_from_row(r, groups=tuple(sorted(parents.get(r.anchor, ()))))
        subjects.append(Subject(user=user, groups=groups.get(r.anchor, ())))
    return subjects


def account_groups(conn: Connection, tenant_id: int, accounts_rows: Sequence[Any]) -> dict[str, list[str]]:
    """Display names of each account's groups, nested membership included."""
    return effective_group_names(conn, tenant_id, [(r.id, r.source, r.anchor) for r in accounts_rows])


def external_ids(conn: Connection, identity_ids: Sequence[str]) -> dict[str, str | None]:
    """The externalId each identity shows, by identity id: the one its source gave, else its
    anchor. An id with no identity row is absent from the result."""
    external: dict[str, str | None] = {}
    for start in range(0, len(identity_ids), 500):
        for identity_id, external_id, anchor in conn.execute(
            select(identities.c.id, identities.c.external_id, identities.c.anchor).where(
                identities.c.id.in_(identity_ids[start : start + 500])
            )
        ):
            external[identity_id] = external_id or anchor
    return external
