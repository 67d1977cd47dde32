"""What a delta sync reads from the store: bookmarks, stored memberships, stored identities.

A delta reads only the entries whose change stamp moved. Membership changes move only the
group's stamp (the memberOf back-link does not touch the user, trap 9 and the recipe's delta
findings), so the people to re-plan are found by comparing a changed group's new member list
with the stored one; their effective groups come from the stored graph with the changed groups'
new lists laid over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from bridge.core.groups import closure, explore
from bridge.core.model import SourceUser
from bridge.store.identities import user_from_row
from bridge.store.tables import Identity, Membership, SourceState

identities = Identity.__table__
memberships = Membership.__table__
source_state = SourceState.__table__

_CHUNK = 500
_BOOKMARK_PREFIX = "delta."


def load_bookmark(conn: Connection, tenant_id: int, source: str) -> dict[str, str | None]:
    rows = conn.execute(
        select(source_state.c.key, source_state.c.value).where(
            source_state.c.tenant_id == tenant_id,
            source_state.c.source == source,
            source_state.c.key.like(_BOOKMARK_PREFIX + "%"),
        )
    )
    return {key[len(_BOOKMARK_PREFIX) :]: value for key, value in rows}


def save_bookmark(conn: Connection, tenant_id: int, source: str, values: Mapping[str, str], now: datetime) -> None:
    conn.execute(
        delete(source_state).where(
            source_state.c.tenant_id == tenant_id,
            source_state.c.source == source,
            source_state.c.key.like(_BOOKMARK_PREFIX + "%"),
        )
    )
    conn.execute(
        insert(source_state),
        [
            {"tenant_id": tenant_id, "source": source, "key": _BOOKMARK_PREFIX + key, "value": value, "updated_at": now}
            for key, value in values.items()
        ],
    )


def stored_references(conn: Connection, tenant_id: int, source: str) -> list[tuple[str, str, str | None, str]]:
    """(kind, anchor, dn, name) of every stored identity of the source (but the tombstones of
    accounts a rename replaced: a group still naming the old login must not resolve to one)."""
    rows = conn.execute(
        select(identities.c.kind, identities.c.anchor, identities.c.dn, identities.c.name).where(
            identities.c.tenant_id == tenant_id, identities.c.source == source, identities.c.deleted_at.is_(None)
        )
    )
    return [(r.kind, r.anchor, r.dn, r.name) for r in rows]


def _chunks(items: Iterable[str]) -> Iterable[list[str]]:
    batch = list(items)
    for start in range(0, len(batch), _CHUNK):
        yield batch[start : start + _CHUNK]


def stored_members(conn: Connection, tenant_id: int, source: str, group_anchors: Iterable[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for chunk in _chunks(group_anchors):
        for group_anchor, member_anchor in conn.execute(
            select(memberships.c.group_anchor, memberships.c.member_anchor).where(
                memberships.c.tenant_id == tenant_id,
                memberships.c.source == source,
                memberships.c.group_anchor.in_(chunk),
            )
        ):
            out.setdefault(group_anchor, set()).add(member_anchor)
    return out


def stored_parents(conn: Connection, tenant_id: int, source: str, member_anchors: Iterable[str]) -> dict[str, set[str]]:
    """member anchor -> the groups whose stored list has it."""
    out: dict[str, set[str]] = {}
    for chunk in _chunks(member_anchors):
        for group_anchor, member_anchor in conn.execute(
            select(memberships.c.group_anchor, memberships.c.member_anchor).where(
                memberships.c.tenant_id == tenant_id,
                memberships.c.source == source,
                memberships.c.member_anchor.in_(chunk),
            )
        ):
            out.setdefault(member_anchor, set()).add(group_anchor)
    return out


def stored_users(conn: Connection, tenant_id: int, source: str, anchors: Iterable[str]) -> dict[str, SourceUser]:
    """People as last stored (what the source said then), without their groups."""
    out: dict[str, SourceUser] = {}
    for chunk in _chunks(anchors):
        for r in conn.execute(
            select(identities).where(
                identities.c.tenant_id == tenant_id,
                identities.c.source == source,
                identities.c.kind == "user",
                identities.c.anchor.in_(chunk),
            )
        ):
            out[r.anchor] = user_from_row(r)
    return out


@dataclass
class MembershipOverlay:
    """The stored membership graph with some groups' member lists replaced by fresh ones."""

    conn: Connection
    tenant_id: int
    source: str
    replaced: Mapping[str, set[str]]  # group anchor -> its new direct members
    _parents_in_replaced: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group, members in self.replaced.items():
            for member in members:
                self._parents_in_replaced.setdefault(member, set()).add(group)

    def children(self, groups: Iterable[str]) -> dict[str, set[str]]:
        wanted = list(groups)
        out: dict[str, set[str]] = {g: set(self.replaced[g]) for g in wanted if g in self.replaced}
        stored = stored_members(self.conn, self.tenant_id, self.source, [g for g in wanted if g not in self.replaced])
        out.update(stored)
        return out

    def parents(self, members: Iterable[str]) -> dict[str, set[str]]:
        wanted = list(members)
        out: dict[str, set[str]] = {m: set(self._parents_in_replaced.get(m, ())) for m in wanted}
        for chunk in _chunks(wanted):
            for group_anchor, member_anchor in self.conn.execute(
                select(memberships.c.group_anchor, memberships.c.member_anchor).where(
                    memberships.c.tenant_id == self.tenant_id,
                    memberships.c.source == self.source,
                    memberships.c.member_anchor.in_(chunk),
                )
            ):
                if group_anchor not in self.replaced:  # its stored list is stale
                    out[member_anchor].add(group_anchor)
        return out

    def descendants(self, anchors: Iterable[str], limit: int) -> set[str]:
        """Everything below `anchors` (cycle-safe); stops early once more than `limit` are found."""
        return explore(anchors, self.children, limit=limit)[0]

    def ancestry(self, members: Sequence[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """(direct groups, all groups through nesting) of each member; cycles are cut."""
        _, parents = explore(members, self.parents)
        direct = {m: parents.get(m, set()) for m in members}
        effective = {m: closure(parents.get(m, ()), parents) for m in members}
        return direct, effective
