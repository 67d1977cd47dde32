"""The planner: desired state (what sources say, through the mapping) vs current accounts.

The result is a `Plan`: typed changes per account, each with its reason. Printing, JSON,
seat counting and the deletion threshold all read the same plan, and `provision.apply`
carries it out. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from bridge.core.address import ADDRESS_UNUSABLE, address_problem
from bridge.core.lifecycle import Event, Status, apply_event, is_seat
from bridge.core.mapping import RoleMapping, decide_roles, login_hours_of
from bridge.core.model import GroupRef, SourceUser


@dataclass(frozen=True, slots=True)
class AccountState:
    """An existing account as the planner needs to see it."""

    id: str
    anchor: str
    source: str
    user_name: str
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    status: Status
    status_before_suspend: Status | None
    roles: frozenset[str]
    user_type: str
    identity_digest: str | None = None
    expires_at: datetime | None = None
    admin_hold: bool = False  # archived by an administrator: stays archived until reactivated by hand
    # Roles the last plan left out, and why (None: none). Kept current even when nothing else
    # changes, so `explain` and the freed-capacity re-plan see who waits for a seat or a role.
    denied: Mapping[str, str] | None = None
    # When the person may sign in, as stored (`LoginHours.to_json`); None: no restriction.
    login_hours: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Subject:
    """A person in scope: what the source says, with groups already expanded (nested included)."""

    user: SourceUser
    groups: tuple[GroupRef, ...]


@dataclass(frozen=True, slots=True)
class Usage:
    """Seats and limited-role holders among accounts *outside* the plan; they keep what they hold."""

    seats: int = 0
    holders: Mapping[str, int] = field(default_factory=dict)
    module_seats: Mapping[str, int] = field(default_factory=dict)  # module id -> seats held in it


# ---- changes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    user_type: str
    expires_at: datetime | None
    login_hours: Mapping[str, Any] | None = None  # LoginHours.to_json(); None: no restriction
    reason: str = "new in source"
    kind: str = "create"


# The anchor a renamed account moves to (apply: `RENAMED_PREFIX + its id`). No source reports
# it, so no read finds the old account again: it stays archived, and the source's anchor is free
# for the new account under the unique (tenant, source, anchor).
RENAMED_PREFIX = "renamed:"


def was_replaced(account: AccountState) -> bool:
    """Whether a rename under `recreate` replaced this account by a new one."""
    return account.anchor.startswith(RENAMED_PREFIX)


@dataclass(frozen=True, slots=True)
class Recreate:
    """The source renamed the person and the tenant's userNames cannot change
    (`user_name_changes = "recreate"`): the account it knew them by, `replaces`, is archived
    (reason `renamed`) and detached from the identity, and the plan's `Create` makes the new
    account that the identity now belongs to. It is always the first change of a plan whose
    `account_id` is None; apply writes both accounts in one transaction, the old one's archive
    naming the new account (`renamedTo`) and the new one's creation naming the old (`replaces`).

    The old account keeps its id and its history; it is already archived when `old_status` is
    `archived` (a leaver back under a new name: no transition, only the link is recorded)."""

    replaces: str  # the old account's id
    old_user_name: str
    old_status: Status
    old_roles: tuple[str, ...]  # revoked with the archive
    reason: str = "renamed"
    kind: str = "recreate"


# The account fields a product sees (`GET /api/v1/accounts`, `users list --json`), by the name it
# sees them under. A change of any of them is an `account.updated` product event (feed and
# webhook), whatever else the plan changes; a change of a field not listed here is not. What the
# product does not get this way: the groups (membership is the source's; what the product acts on,
# the roles, has `account.roles_changed`), `leftOut` (bridge's explanation), the identity's
# `externalId`, and `lastModified`.
PRODUCT_FIELDS = {
    "user_name": "userName",
    "email": "email",
    "given_name": "givenName",
    "family_name": "familyName",
    "display_name": "displayName",
    "user_type": "userType",
    "login_hours": "loginHours",
}


@dataclass(frozen=True, slots=True)
class UpdateAttributes:
    fields: Mapping[str, tuple[object, object]]  # name -> (before, after)
    reason: str = "changed in source"
    kind: str = "update"

    def product_changes(self) -> dict[str, dict[str, object]]:
        """What of this change the product sees, by its JSON names (`{"email": {"from", "to"}}`):
        the `detail` of its `account.updated` event; empty, no event (see PRODUCT_FIELDS)."""
        return {
            PRODUCT_FIELDS[name]: {"from": old, "to": new}
            for name, (old, new) in self.fields.items()
            if name in PRODUCT_FIELDS and old != new
        }


@dataclass(frozen=True, slots=True)
class GrantRoles:
    roles: Mapping[str, str]  # role id -> rule that granted it
    event: Event | None  # GRANT_ROLES when the account gains its first roles
    reason: str = "mapping rules"
    kind: str = "grant_roles"


@dataclass(frozen=True, slots=True)
class RevokeRoles:
    roles: tuple[str, ...]
    event: Event | None  # REVOKE_ALL_ROLES when none are left
    reason: str = "no rule grants them any more"
    kind: str = "revoke_roles"


@dataclass(frozen=True, slots=True)
class Suspend:
    reason: str = "disabled in source"
    event: Event = Event.SUSPEND
    kind: str = "suspend"


@dataclass(frozen=True, slots=True)
class Resume:
    target: Status  # the state it had before suspension, adjusted for roles lost meanwhile
    reason: str = "enabled in source"
    event: Event = Event.RESUME
    kind: str = "resume"


@dataclass(frozen=True, slots=True)
class Archive:
    reason: str = "no longer in source"
    event: Event = Event.ARCHIVE
    kind: str = "archive"


@dataclass(frozen=True, slots=True)
class Reactivate:
    reason: str = "back in source"
    event: Event = Event.REACTIVATE
    kind: str = "reactivate"


@dataclass(frozen=True, slots=True)
class ResendActivation:
    reason: str = "email changed while pending"
    event: Event = Event.RESEND_ACTIVATION
    kind: str = "resend_activation"


@dataclass(frozen=True, slots=True)
class Activate:
    password: bool  # whether the person set a password (else an SSO tenant's confirmation)
    reason: str = "activation link"
    event: Event = Event.ACTIVATE
    kind: str = "activate"


Change = (
    Recreate
    | Create
    | UpdateAttributes
    | GrantRoles
    | RevokeRoles
    | Suspend
    | Resume
    | Archive
    | Reactivate
    | ResendActivation
    | Activate
)


@dataclass(slots=True)
class AccountPlan:
    anchor: str
    source: str
    account_id: str | None  # None: the account is created by this plan
    user_name: str
    before: Status | None
    after: Status
    status_before_suspend: Status | None  # after the plan
    roles_after: frozenset[str]
    changes: list[Change]
    granted: Mapping[str, str]  # role -> rule, for explanations (after limits)
    denied: Mapping[str, str]  # role -> reason it was left out
    user: SourceUser | None  # what to store as the identity; None when the person left
    identity_changed: bool
    seat_before: bool
    seat_after: bool
    user_type: str
    digest: str | None = None  # identity_digest(user), computed once by the planner
    # The roles left out differ from the stored ones: written even when `changes` is empty (a
    # person joining a group whose limited role is full changes nothing else).
    denied_changed: bool = False
    # The modules ([modules.*]) the account is a seat of, before and after the plan.
    modules_before: frozenset[str] = frozenset()
    modules_after: frozenset[str] = frozenset()

    def activation_problem(self) -> str | None:
        """Why the activation mail this plan queues cannot be sent ("address_unusable: ..."), or
        None (no mail queued, or a usable address). Apply refuses that mail for good."""
        queues_mail = any(
            c.kind == "resend_activation" or getattr(c, "event", None) is Event.GRANT_ROLES for c in self.changes
        )
        if not queues_mail or self.user is None:
            return None
        problem = address_problem(self.user.email)
        return None if problem is None else f"{ADDRESS_UNUSABLE}: {problem}"


# The `sync --json` count each kind of change adds to.
_COUNT_KEYS = {
    "create": "created",
    "update": "updated",
    "grant_roles": "rolesChanged",
    "revoke_roles": "rolesChanged",
    "suspend": "suspended",
    "archive": "archived",
    "reactivate": "reactivated",
}


@dataclass(slots=True)
class Plan:
    source: str
    accounts: list[AccountPlan]  # accounts with changes or a changed identity
    unchanged: int
    active_before: int  # accounts of this source that were not archived, for the threshold
    # userNames whose billable roles the seat limit left out, changed or not: a refusal repeated by
    # every run is still one an administrator must hear about (the summary's `seatRefused`).
    seat_refused: tuple[str, ...] = ()
    # The mapping's modules (the keys of the per-module seat delta, 0 included) and, per module
    # with a seat limit, the userNames it left out (they are in `seat_refused` too).
    modules: tuple[str, ...] = ()
    module_refused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("created", "updated", "rolesChanged", "suspended", "archived", "reactivated"), 0)
        unchanged = self.unchanged
        for account in self.accounts:
            if not account.changes:
                unchanged += 1
            for key in {_count_key(c) for c in account.changes}:
                if key is not None:
                    counts[key] += 1
        counts["unchanged"] = unchanged
        return counts

    @property
    def seat_delta(self) -> int:
        return sum(int(a.seat_after) - int(a.seat_before) for a in self.accounts)

    @property
    def seat_delta_by_module(self) -> dict[str, int]:
        delta = dict.fromkeys(self.modules, 0)
        for a in self.accounts:
            if a.modules_before != a.modules_after:
                for module in a.modules_after - a.modules_before:
                    delta[module] = delta.get(module, 0) + 1
                for module in a.modules_before - a.modules_after:
                    delta[module] = delta.get(module, 0) - 1
        return delta

    @property
    def archives(self) -> int:
        # A rename under `recreate` archives an account too: a mass rename (a mail domain changed
        # for everyone) re-invites everybody, which the deletion threshold must let a person decide.
        return sum(1 for a in self.accounts if any(_archives(c) for c in a.changes))

    def denials(self) -> list[tuple[str, str, str]]:
        return [(a.user_name, role, why) for a in self.accounts for role, why in sorted(a.denied.items())]


def _count_key(change: Change) -> str | None:
    # A rename's Recreate counts as the archive it makes (none when the old account was archived).
    if isinstance(change, Recreate):
        return "archived" if _archives(change) else None
    return _COUNT_KEYS.get(change.kind)


def _archives(change: Change) -> bool:
    if isinstance(change, Recreate):
        return change.old_status is not Status.ARCHIVED
    return change.kind == "archive"


def renamed(account: AccountState | None, user: SourceUser) -> bool:
    """Whether the source now calls the account's person by another userName. userNames compare
    without case (RFC 7643 4.1.1, caseExact false): "Alice" becoming "alice" is no rename."""
    return account is not None and account.user_name.casefold() != user.user_name.casefold()


def frees_capacity(plan: AccountPlan, mapping: RoleMapping, *, seats_limited: bool = True) -> bool:
    """Whether applying `plan` may leave room for someone waiting: it revokes a role with
    `max_holders`, or (when the tenant has a seat limit: `seats_limited`) a billable role, or the
    account stops counting as a seat; or it gives up a seat of a module with a seat limit.
    Without a seat limit nobody waits for a seat."""
    if seats_limited and plan.seat_before and not plan.seat_after:
        return True
    limited = mapping.limited_modules()
    if limited and not (plan.modules_before - plan.modules_after).isdisjoint(limited):
        return True
    for change in plan.changes:
        if isinstance(change, RevokeRoles):
            for role_id in change.roles:
                role = mapping.roles.get(role_id)
                if role is None:
                    continue
                if role.max_holders is not None or (seats_limited and role.billable):
                    return True
                if limited and role.billable and (role.all_modules or role.module in limited):
                    return True
    return False


# Denials that a freed seat or role slot can lift (`external_not_allowed` waits for nothing);
# a module's seat limit is `seat_limit:<module>` (MODULE_SEAT_LIMIT and the module's id).
CAPACITY_DENIALS = ("max_holders", "seat_limit")
MODULE_SEAT_LIMIT = "seat_limit:"


def module_denial(module: str) -> str:
    """The reason a role is left out by the seat limit of `module`."""
    return f"{MODULE_SEAT_LIMIT}{module}"


def is_seat_denial(why: str) -> bool:
    """Whether `why` is a seat limit's refusal: the tenant's pool or a module's."""
    return why == "seat_limit" or why.startswith(MODULE_SEAT_LIMIT)


def lifts_with_capacity(why: str) -> bool:
    """Whether a freed seat or role slot can lift the denial `why`."""
    return why in CAPACITY_DENIALS or why.startswith(MODULE_SEAT_LIMIT)


def identity_digest(user: SourceUser) -> str:
    """A fingerprint of everything a source said about a person, to skip unchanged rows cheaply."""
    payload = [
        user.user_name,
        user.email,
        user.given_name,
        user.family_name,
        user.display_name,
        user.active,
        user.dn,
        sorted((k, list(v)) for k, v in user.attributes.items()),
        sorted(user.groups),
        sorted(user.scim_roles),
        user.preferred_language,
    ]
    return hashlib.blake2b(_digest_json(payload), digest_size=16).hexdigest()


def _digest_json(payload: list[Any]) -> bytes:
    """`json.dumps(payload, separators=(",", ":"))` as bytes: the form stored digests were made
    from. orjson writes the same bytes when it escaped nothing and wrote only printable ASCII
    (it leaves DEL and non-ASCII unescaped where the standard library escapes them)."""
    try:
        raw = orjson.dumps(payload)
    except TypeError:
        raw = b"\\"  # not its to write: the standard library below decides
    if raw.isascii() and b"\\" not in raw and b"\x7f" not in raw:
        return raw
    return json.dumps(payload, separators=(",", ":")).encode()


# ---- planning ------------------------------------------------------------------------------


def _admit(candidates: list[tuple[str, str, bool]], capacity: int | None) -> tuple[set[str], set[str]]:
    """Split (anchor, user_name, already_holds) candidates into admitted and refused.

    Holders keep what they hold; newcomers are admitted in order of userName (the contract's
    rule), so the outcome does not depend on the order a source returned its entries in.
    """
    if capacity is None:
        return {a for a, _, _ in candidates}, set()
    keepers = [a for a, _, holds in candidates if holds]
    newcomers = sorted(((n.casefold(), a) for a, n, holds in candidates if not holds))
    room = max(capacity - len(keepers), 0)
    admitted = set(keepers) | {a for _, a in newcomers[:room]}
    refused = {a for _, a in newcomers[room:]}
    return admitted, refused


def _account_fields(user: SourceUser, user_type: str) -> dict[str, object]:
    return {
        "user_name": user.user_name,
        "email": user.email,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "display_name": user.display_name,
        "user_type": user_type,
    }


def build_plan(
    source: str,
    subjects: Iterable[Subject],
    accounts: Mapping[str, AccountState],
    mapping: RoleMapping,
    *,
    now: datetime,
    seat_limit: int | None,
    usage: Usage = Usage(),
    complete_scope: bool,
    suspended_counts_as_seat: bool = True,
    recreate_renamed: bool = False,
) -> Plan:
    """Plan the changes for `subjects` against `accounts` (this source's accounts, by anchor).

    With `complete_scope` (a full read), accounts of this source missing from `subjects` are
    leavers and get archived. `usage` counts seats and limited roles held by accounts outside
    this plan; they are never taken away to make room.

    With `recreate_renamed` (the tenant's `user_name_changes = "recreate"`), a person whose
    userName changed is planned as a newcomer: a `Recreate` of the old account, then the new
    account's `Create`. The old account's seat and limited roles are given up in this plan, and
    the new account is admitted as any newcomer is (in userName order, if room is left).
    """
    subject_list = []
    held = 0
    for subject in subjects:
        account = accounts.get(subject.user.anchor)
        if account is not None and account.admin_hold and account.status is Status.ARCHIVED:
            held += 1  # present in the source, but an administrator archived it: leave it be
            continue
        subject_list.append(subject)
    # The accounts a rename replaces; the planner sees their people as newcomers.
    replaced: dict[str, AccountState] = {}
    if recreate_renamed:
        for subject in subject_list:
            old = accounts.get(subject.user.anchor)
            if old is not None and renamed(old, subject.user):
                replaced[subject.user.anchor] = old
    decisions = {s.user.anchor: decide_roles(s.user, s.groups, mapping) for s in subject_list}
    names = {s.user.anchor: s.user.user_name for s in subject_list}
    granted: dict[str, dict[str, str]] = {a: dict(d.granted) for a, d in decisions.items()}
    denied: dict[str, dict[str, str]] = {a: dict(d.denied) for a, d in decisions.items()}

    def current(anchor: str) -> AccountState | None:
        return None if anchor in replaced else accounts.get(anchor)

    def holds(anchor: str, role: str) -> bool:
        account = current(anchor)
        return account is not None and account.status is not Status.ARCHIVED and role in account.roles

    # Roles with max_holders, in file order so the outcome is stable.
    for role in mapping.roles.values():
        if role.max_holders is None:
            continue
        wanting = [(a, names[a], holds(a, role.id)) for a, g in granted.items() if role.id in g]
        capacity = role.max_holders - usage.holders.get(role.id, 0)
        _, refused = _admit(wanting, max(capacity, 0))
        for anchor in refused:
            del granted[anchor][role.id]
            denied[anchor][role.id] = "max_holders"

    def billable(roles: Iterable[str]) -> bool:
        return any(mapping.roles[r].billable for r in roles if r in mapping.roles)

    def seat_now(account: AccountState | None) -> bool:
        return holds_seat(account, mapping, suspended_counts_as_seat)

    def modules_now(account: AccountState | None) -> frozenset[str]:
        return module_seats_held(account, mapping, suspended_counts_as_seat)

    # A person the source disables is suspended; where suspended accounts are not seats
    # (`suspended_counts_as_seat = false`) they neither take room nor wait for it: they keep the
    # roles the rules grant, and compete again, as newcomers, once enabled.
    seatless = set() if suspended_counts_as_seat else {s.user.anchor for s in subject_list if not s.user.active}

    # Each module with a seat limit, in file order, before the tenant's pool: a person a module
    # leaves out may still need a tenant seat for another module's role, never the reverse.
    module_refused: dict[str, tuple[str, ...]] = {}
    refused_any: set[str] = set()
    for module_id in mapping.limited_modules():
        limit = mapping.modules[module_id].seat_limit
        assert limit is not None
        wanting = [
            (a, names[a], module_id in modules_now(current(a)))
            for a, g in granted.items()
            if g and a not in seatless and module_id in mapping.seat_modules(g)
        ]
        _, refused = _admit(wanting, max(limit - usage.module_seats.get(module_id, 0), 0))
        module_refused[module_id] = tuple(sorted((names[a] for a in refused), key=str.casefold))
        refused_any |= refused
        for anchor in refused:
            for role_id in list(granted[anchor]):
                role = mapping.roles[role_id]
                if role.billable and (role.all_modules or role.module == module_id):
                    del granted[anchor][role_id]
                    denied[anchor][role_id] = module_denial(module_id)

    if seat_limit is not None:
        wanting = [(a, names[a], seat_now(current(a))) for a, g in granted.items() if a not in seatless and billable(g)]
        _, refused = _admit(wanting, max(seat_limit - usage.seats, 0))
        refused_any |= refused
        for anchor in refused:
            for role_id in [r for r in granted[anchor] if mapping.roles[r].billable]:
                del granted[anchor][role_id]
                denied[anchor][role_id] = "seat_limit"
    seat_refused = tuple(sorted((names[a] for a in refused_any), key=str.casefold))

    plans: list[AccountPlan] = []
    unchanged = held
    # A plan keeps its role set until applied: one frozenset per distinct set (a first sync
    # plans every account; 100k copies of a handful of sets are about 20 MB).
    role_sets: dict[frozenset[str], frozenset[str]] = {}
    for subject in subject_list:
        user = subject.user
        decision = decisions[user.anchor]

        hours = login_hours_of(user, subject.groups, mapping)
        plan = _plan_one(
            source,
            user,
            current(user.anchor),
            decision.user_type,
            granted[user.anchor],
            denied[user.anchor],
            mapping,
            now,
            hours.to_json() if hours is not None else None,
        )
        account = accounts.get(user.anchor)
        old = replaced.get(user.anchor)
        if old is not None:
            plan.changes.insert(
                0,
                Recreate(
                    replaces=old.id,
                    old_user_name=old.user_name,
                    old_status=old.status,
                    old_roles=tuple(sorted(old.roles)),
                ),
            )
            create = plan.changes[1]
            assert isinstance(create, Create)
            plan.changes[1] = replace(create, reason=f"renamed from {old.user_name}")
        # A replaced account's seat is given up by this plan (seat_before), the new one counted
        # in seat_after: the seat delta and freed capacity read them as for any other plan.
        plan.seat_before = seat_now(account)
        plan.seat_after = is_seat(plan.after, billable(plan.roles_after), suspended_counts_as_seat)
        if mapping.modules:
            plan.modules_before = modules_now(account)
            if is_seat(plan.after, True, suspended_counts_as_seat):
                plan.modules_after = mapping.seat_modules(plan.roles_after)
        plan.denied_changed = old is None and account is not None and dict(plan.denied) != dict(account.denied or {})
        if plan.changes or plan.identity_changed or plan.denied_changed:
            plan.roles_after = role_sets.setdefault(plan.roles_after, plan.roles_after)
            plans.append(plan)
        else:
            unchanged += 1

    if complete_scope:
        present = {s.user.anchor for s in subject_list}
        for anchor, account in accounts.items():
            if anchor in present or account.status is Status.ARCHIVED:
                continue
            plans.append(
                archive_plan(
                    account, revoke_reason="left", seat_before=seat_now(account), modules_before=modules_now(account)
                )
            )
    active_before = sum(1 for a in accounts.values() if a.status is not Status.ARCHIVED)
    return Plan(
        source=source,
        accounts=plans,
        unchanged=unchanged,
        active_before=active_before,
        seat_refused=seat_refused,
        modules=tuple(mapping.modules),
        module_refused=module_refused,
    )


def effective_seat_limit(configured: int | None, stored: int | None) -> int | None:
    """The seat limit that holds: the config's `seat_limit` when it sets one (the file is what the
    operator reviews), else the one stored with the tenant (`tenants add --seat-limit`)."""
    return configured if configured is not None else stored


def holds_seat(account: AccountState | None, mapping: RoleMapping, suspended_counts_as_seat: bool = True) -> bool:
    """Whether the account counts against the seat limit now (a billable role, in a seat state)."""
    if account is None:
        return False
    billable = any(mapping.roles[r].billable for r in account.roles if r in mapping.roles)
    return is_seat(account.status, billable, suspended_counts_as_seat)


def module_seats_held(
    account: AccountState | None, mapping: RoleMapping, suspended_counts_as_seat: bool = True
) -> frozenset[str]:
    """The modules the account is a seat of now: those of its billable roles (every module for an
    `all_modules` role), when its state is a seat state (a suspended account as for the tenant's
    pool: `suspended_counts_as_seat`)."""
    if account is None or not mapping.modules or not is_seat(account.status, True, suspended_counts_as_seat):
        return frozenset()
    return mapping.seat_modules(account.roles)


def archive_plan(
    account: AccountState,
    *,
    reason: str | None = None,
    revoke_reason: str | None = None,
    denied: Mapping[str, str] | None = None,
    seat_before: bool = False,
    modules_before: frozenset[str] = frozenset(),
) -> AccountPlan:
    """The one plan of an archive, whoever asks (a leaver, SCIM DELETE, an administrator, an
    expiry): revoke every role, then archive, through the lifecycle table (which raises
    `InvalidTransition` for an account that is archived already). `denied` is what stays recorded
    of the roles left out (a leaver's are cleared)."""
    after, _ = apply_event(account.status, Event.ARCHIVE)
    changes: list[Change] = []
    if account.roles:
        revoke = revoke_reason or reason
        roles = tuple(sorted(account.roles))
        changes.append(RevokeRoles(roles=roles, event=None, reason=revoke) if revoke else RevokeRoles(roles, None))
    changes.append(Archive(reason=reason) if reason else Archive())
    return plan_without_source(
        account, changes, after, denied=denied, seat_before=seat_before, modules_before=modules_before
    )


def plan_without_source(
    account: AccountState,
    changes: list[Change],
    after: Status,
    *,
    denied: Mapping[str, str] | None,
    seat_before: bool = False,
    modules_before: frozenset[str] = frozenset(),
) -> AccountPlan:
    """A plan that no read of the source made (an archive, an administrator's action): no
    identity to store, no role granted by a rule, and no seat held afterwards."""
    return AccountPlan(
        anchor=account.anchor,
        source=account.source,
        account_id=account.id,
        user_name=account.user_name,
        before=account.status,
        after=after,
        status_before_suspend=None,
        roles_after=frozenset(),
        changes=changes,
        granted={},
        denied=dict(denied or {}),
        user=None,
        identity_changed=False,
        seat_before=seat_before,
        seat_after=False,
        user_type=account.user_type,
        modules_before=modules_before,
    )


def _plan_one(
    source: str,
    user: SourceUser,
    account: AccountState | None,
    user_type: str,
    granted: dict[str, str],
    denied: dict[str, str],
    mapping: RoleMapping,
    now: datetime,
    login_hours: Mapping[str, Any] | None = None,
) -> AccountPlan:
    changes: list[Change] = []
    desired = frozenset(granted)
    if account is None:
        expires = None
        if user_type == "external" and mapping.external_expires_after_days:
            expires = now + timedelta(days=mapping.external_expires_after_days)
        changes.append(Create(user_type=user_type, expires_at=expires, login_hours=login_hours))
        status, previous, roles = Status.NO_ACCESS, None, frozenset[str]()
        before_fields: dict[str, object] = {}
    else:
        status, previous, roles = account.status, account.status_before_suspend, account.roles
        if status is Status.ARCHIVED:
            changes.append(Reactivate())
            status, _ = apply_event(status, Event.REACTIVATE)
            roles = frozenset()
        before_fields = {
            "user_name": account.user_name,
            "email": account.email,
            "given_name": account.given_name,
            "family_name": account.family_name,
            "display_name": account.display_name,
            "user_type": account.user_type,
            "login_hours": account.login_hours or None,
        }
        after_fields = {**_account_fields(user, user_type), "login_hours": login_hours}
        diff = {k: (before_fields[k], v) for k, v in after_fields.items() if before_fields[k] != v}
        if diff:
            changes.append(UpdateAttributes(fields=diff))

    if not user.active:
        if status is not Status.SUSPENDED:
            changes.append(Suspend())
            previous = status
            status, _ = apply_event(status, Event.SUSPEND)
        # Roles follow the rules while suspended; the state to resume to follows the roles.
        added, removed = desired - roles, roles - desired
        if added:
            changes.append(GrantRoles(roles={r: granted[r] for r in sorted(added)}, event=None))
        if removed:
            changes.append(RevokeRoles(roles=tuple(sorted(removed)), event=None))
        if not desired and previous in (Status.PENDING, Status.ACTIVE):
            previous = Status.NO_ACCESS
        roles = desired
    else:
        if status is Status.SUSPENDED:
            status, _ = apply_event(status, Event.RESUME, previous)
            changes.append(Resume(target=status))
            previous = None
        added, removed = desired - roles, roles - desired
        if status is Status.NO_ACCESS and desired:
            changes.append(GrantRoles(roles={r: granted[r] for r in sorted(added)}, event=Event.GRANT_ROLES))
            if removed:
                changes.append(RevokeRoles(roles=tuple(sorted(removed)), event=None))
            status, _ = apply_event(status, Event.GRANT_ROLES)
        elif status in (Status.PENDING, Status.ACTIVE) and not desired:
            changes.append(RevokeRoles(roles=tuple(sorted(removed)), event=Event.REVOKE_ALL_ROLES))
            status, _ = apply_event(status, Event.REVOKE_ALL_ROLES)
        else:
            if added:
                changes.append(GrantRoles(roles={r: granted[r] for r in sorted(added)}, event=None))
            if removed:
                changes.append(RevokeRoles(roles=tuple(sorted(removed)), event=None))
            email_changed = account is not None and before_fields.get("email") != user.email
            if (
                status is Status.PENDING
                and email_changed
                and not any(c.kind == "grant_roles" and c.event for c in changes)
            ):
                changes.append(ResendActivation())
        roles = desired

    digest = identity_digest(user)
    return AccountPlan(
        anchor=user.anchor,
        source=source,
        account_id=account.id if account else None,
        user_name=user.user_name,
        before=account.status if account else None,
        after=status,
        status_before_suspend=previous if status is Status.SUSPENDED else None,
        roles_after=roles,
        changes=changes,
        granted=granted,  # build_plan's own per-person dicts: not copied again
        denied=denied,
        user=user,
        identity_changed=account is None or account.identity_digest != digest,
        digest=digest,
        seat_before=False,
        seat_after=False,
        user_type=user_type,
    )
