"""Planning a delta: the changed entries of a source, and the people those changes touch.

A delta read holds the users and groups whose change stamp moved. The people to re-plan are the
changed users plus everyone whose memberships changed: membership changes move only the group's
stamp (trap 9), so each changed group's new member list is compared with the stored one, and a
group that gained or lost a nested group affects everyone below it. Their effective groups are
the stored graph with the changed groups' new lists laid over it. The plan never archives
(`complete_scope=False`): leavers are found by the full run. Seats and limited roles held by
everyone else are counted in the database (`usage_outside(exclude_ids=...)`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Engine

from bridge.core.dn import normalize_dn
from bridge.core.lifecycle import Status
from bridge.core.mapping import RoleMapping
from bridge.core.model import GroupRef, Snapshot, SourceGroup
from bridge.core.plan import Plan, Subject, build_plan
from bridge.store.accounts import load_account_states, usage_outside
from bridge.store.db import transaction
from bridge.store.delta import (
    MembershipOverlay,
    stored_members,
    stored_parents,
    stored_references,
    stored_users,
)
from bridge.store.identities import stored_groups

__all__ = ["MAX_DELTA_PEOPLE", "DeltaPlan", "DeltaTooLarge", "known_references", "plan_delta"]

# Beyond this many people a delta is no cheaper than a full run and its IN lists get long (the
# default of a source's `delta_max_people`).
MAX_DELTA_PEOPLE = 10_000


class DeltaTooLarge(Exception):
    """The changes touch so many people that a full run is the better tool."""


@dataclass
class DeltaPlan:
    plan: Plan
    groups: dict[str, SourceGroup]  # changed groups with their complete direct member lists
    affected: int


def known_references(
    engine: Engine, tenant_id: int, source: str
) -> tuple[dict[str, str], dict[str, str], frozenset[str]]:
    """(normalised DN -> anchor, lower-cased userName -> anchor, group anchors) of what is stored."""
    by_dn: dict[str, str] = {}
    by_login: dict[str, str] = {}
    groups: set[str] = set()
    with transaction(engine, write=False) as conn:
        rows = stored_references(conn, tenant_id, source)
    for kind, anchor, dn, name in rows:
        if dn:
            with contextlib.suppress(ValueError):
                by_dn[normalize_dn(dn)] = anchor
        if kind == "group":
            groups.add(anchor)
        if kind == "user" and name:
            login = name.lower()
            # Two people with one login: neither gets a memberUid membership by guesswork.
            by_login[login] = "" if login in by_login else anchor
    return by_dn, {k: v for k, v in by_login.items() if v}, frozenset(groups)


def plan_delta(
    engine: Engine,
    tenant_id: int,
    source: str,
    snapshot: Snapshot,
    mapping: RoleMapping,
    *,
    now: datetime,
    seat_limit: int | None,
    suspended_counts_as_seat: bool,
    recreate_renamed: bool = False,
    max_people: int = MAX_DELTA_PEOPLE,
) -> DeltaPlan:
    changed_users = snapshot.users
    new_members: dict[str, set[str]] = {a: set(g.members) for a, g in snapshot.groups.items()}
    joined: dict[str, set[str]] = {}  # unchanged groups a changed user's memberOf names
    for user in changed_users.values():
        for group_anchor in user.groups:
            if group_anchor in new_members:
                new_members[group_anchor].add(user.anchor)
            else:
                joined.setdefault(group_anchor, set()).add(user.anchor)

    with transaction(engine, write=False) as conn:
        changed_groups = dict(snapshot.groups)
        if joined:
            # Usually the stored lists have them already; only the rest needs a group rewritten.
            known = stored_parents(conn, tenant_id, source, {u for us in joined.values() for u in us})
            joined = {g: {u for u in us if g not in known.get(u, ())} for g, us in joined.items()}
            joined = {g: us for g, us in joined.items() if us}
        if joined:
            # Those groups keep their stored list, plus the people whose back-link names them.
            kept = stored_members(conn, tenant_id, source, joined)
            for anchor, ref in stored_groups(conn, tenant_id, source, joined).items():
                changed_groups[anchor] = SourceGroup(anchor=anchor, name=ref.name, dn=ref.dn)
                new_members[anchor] = kept.get(anchor, set()) | joined[anchor]
        old_members = stored_members(conn, tenant_id, source, new_members)
        old_refs = stored_groups(conn, tenant_id, source, new_members)
        moved: set[str] = set()
        for anchor, group in changed_groups.items():
            old = old_members.get(anchor, set())
            before = old_refs.get(anchor)
            if before is None or (before.name, before.dn) != (group.name, group.dn):
                # New or renamed group: rules match names and DNs, so every member is affected.
                moved |= new_members[anchor] | old
            else:
                moved |= new_members[anchor] ^ old
        overlay = MembershipOverlay(conn, tenant_id, source, new_members)
        # A nested group that joined or left passes the change on to everyone below it.
        below = overlay.descendants(moved, max_people)
        candidates = below | set(changed_users)
        if len(candidates) > max_people:
            raise DeltaTooLarge(f"the changes touch more than {max_people} people and groups")
        states = load_account_states(conn, tenant_id, source, list(candidates))
        # Unchanged people are re-planned only when an account is live: an archived person's
        # return shows as a change of their own entry (a move back into scope), never here.
        affected = sorted(
            set(changed_users) | {a for a in below if a in states and states[a].status is not Status.ARCHIVED}
        )
        states = {a: s for a, s in states.items() if a in set(affected)}
        direct, effective = overlay.ancestry(affected)
        all_groups = {g for groups in effective.values() for g in groups}
        refs = stored_groups(conn, tenant_id, source, all_groups - set(changed_groups))
        refs.update({a: GroupRef(anchor=a, name=g.name, dn=g.dn) for a, g in changed_groups.items()})
        unchanged = stored_users(conn, tenant_id, source, [a for a in affected if a not in changed_users])
        usage = usage_outside(
            conn,
            tenant_id,
            mapping,
            exclude_ids=[s.id for s in states.values()],
            suspended_counts_as_seat=suspended_counts_as_seat,
        )

    subjects = []
    for anchor in affected:
        user = changed_users.get(anchor) or unchanged.get(anchor)
        if user is None:
            continue  # a group, or a person the store never saw
        # The complete direct list, as a full read would give it (it feeds the identity digest).
        user = replace(user, groups=tuple(sorted(direct.get(anchor, ()))))
        groups = tuple(refs[g] for g in sorted(effective.get(anchor, ())) if g in refs)
        subjects.append(Subject(user=user, groups=groups))
    plan = build_plan(
        source,
        subjects,
        states,
        mapping,
        now=now,
        seat_limit=seat_limit,
        usage=usage,
        complete_scope=False,
        suspended_counts_as_seat=suspended_counts_as_seat,
        recreate_renamed=recreate_renamed,
    )
    groups = {a: replace(g, members=tuple(sorted(new_members[a]))) for a, g in changed_groups.items()}
    return DeltaPlan(plan=plan, groups=groups, affected=len(subjects))
