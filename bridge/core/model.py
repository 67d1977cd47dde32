"""What a source says about people and groups, in a form the core can reason about.

Sources (LDIF, LDAP, SCIM) produce these; the core never sees ldap3 entries or HTTP bodies.
All of it is immutable so a snapshot can be shared between the planner and the writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.core.groups import closure


def _frozen(attributes: Mapping[str, tuple[str, ...]] | None) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(dict(attributes or {}))


@dataclass(frozen=True, slots=True)
class SourceUser:
    """A person as one source reports them.

    `anchor` is the stable key (entryUUID, objectGUID as a UUID string, SCIM externalId or id):
    never the DN or the email, which change. `groups` holds the anchors of the groups the person
    is a *direct* member of; nesting is resolved by `expand_groups`.
    `attributes` keys are lower-case attribute names (directory names, or SCIM paths such as
    `department`, `title`, `employeetype`, `usertype`); values are tuples of strings.
    """

    anchor: str
    user_name: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    active: bool = True
    dn: str | None = None
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _frozen(None))
    groups: tuple[str, ...] = ()
    scim_roles: tuple[str, ...] = ()
    preferred_language: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.attributes, MappingProxyType):
            object.__setattr__(self, "attributes", _frozen(self.attributes))


@dataclass(frozen=True, slots=True)
class SourceGroup:
    """A group as one source reports it. `members` are anchors of users or of other groups."""

    anchor: str
    name: str
    dn: str | None = None
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupRef:
    """A group as the mapping rules see it: by DN and by name (both matched case-insensitively)."""

    anchor: str
    name: str
    dn: str | None = None


@dataclass(slots=True)
class Snapshot:
    """A complete read of one source's scope. A sync plans from it only if `complete` is true."""

    users: dict[str, SourceUser] = field(default_factory=dict)
    groups: dict[str, SourceGroup] = field(default_factory=dict)
    complete: bool = True


def expand_groups(snapshot: Snapshot) -> dict[str, tuple[GroupRef, ...]]:
    """Each user's effective groups (direct and nested), keyed by user anchor.

    Membership is read from both sides (a group's `members` and a user's `groups`) because some
    directories only fill one of them. Cycles (A in B in A) are cut by the visited set.
    """
    parents: dict[str, set[str]] = {}
    for group in snapshot.groups.values():
        for member in group.members:
            parents.setdefault(member, set()).add(group.anchor)
    for user in snapshot.users.values():
        for group_anchor in user.groups:
            if group_anchor in snapshot.groups:
                parents.setdefault(user.anchor, set()).add(group_anchor)

    ancestors_cache: dict[str, frozenset[str]] = {}

    def ancestors(group_anchor: str) -> frozenset[str]:
        cached = ancestors_cache.get(group_anchor)
        if cached is None:
            cached = ancestors_cache[group_anchor] = frozenset(closure((group_anchor,), parents))
        return cached

    refs = {g.anchor: GroupRef(anchor=g.anchor, name=g.name, dn=g.dn) for g in snapshot.groups.values()}
    effective: dict[str, tuple[GroupRef, ...]] = {}
    # People share their direct groups far more often than not: each distinct set is expanded
    # once, and its people share one tuple (100k people in a few thousand sets).
    by_direct: dict[frozenset[str], tuple[GroupRef, ...]] = {frozenset(): ()}
    for user in snapshot.users.values():
        direct = frozenset(parents.get(user.anchor, ()))
        groups = by_direct.get(direct)
        if groups is None:
            found: set[str] = set()
            for group_anchor in direct:
                found |= ancestors(group_anchor)
            groups = by_direct[direct] = tuple(refs[a] for a in sorted(found) if a in refs)
        effective[user.anchor] = groups
    return effective
