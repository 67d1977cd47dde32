"""From raw directory entries to the core's `Snapshot`, whatever read them (LDIF file or ldap3).

An entry is `(dn, attributes)` with lower-cased attribute names and *raw* values (`str` or
`bytes`, as in an LDIF file or ldap3's `raw_attributes`), never values formatted through a
loaded schema: those change type with the schema (ad-ldap-traps.md trap 15), and ldap3's
timestamp formatting turns `accountExpires: 0` ("never") into 1601 (trap 3). A bare `str` or
`bytes` where a list is expected is accepted as a one-value list for the same reason.

`build_snapshot` reads the entries once and keeps only normalised data plus the DN references
still to resolve, so the entries can come from a generator (paged search, lazy LDIF parse).
Problems with single entries are collected in a `NormalizeReport`, never raised: whether a few
bad entries should stop a sync is the caller's decision, not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Literal

from bridge.core.dn import normalize_dn
from bridge.core.login_hours import LOGON_HOURS_ATTRIBUTE, LOGON_HOURS_BYTES
from bridge.core.model import Snapshot, SourceGroup, SourceUser
from bridge.directory.values import (
    FILETIME_NEVER,
    SAM_NORMAL_USER_ACCOUNT,
    UAC_ACCOUNTDISABLE,
    UAC_TRUST_ACCOUNTS,
    Flavor,
    decode_anchor,
    decode_sid,
    filetime,
    strip_unique_member_uid,
    text_of,
)

__all__ = [
    "DEFAULT_KEEP_ATTRIBUTES",
    "DirectorySettings",
    "EntryKind",
    "Flavor",
    "NormalizeReport",
    "RawEntry",
    "build_snapshot",
    "classify",
    "is_within",
    "normalize_dn",
]

EntryKind = Literal["user", "group", "other"]
RawEntry = tuple[str, Mapping[str, Sequence[str | bytes]]]

DEFAULT_KEEP_ATTRIBUTES: tuple[str, ...] = (
    "department",
    "title",
    "employeetype",
    "o",
    "ou",
    "company",
    "employeenumber",
    "description",
    "preferredlanguage",
)

_DEFAULT_USER_NAME: Mapping[str, str] = {"openldap": "uid", "ad": "samaccountname"}
_DEFAULT_ANCHOR: Mapping[str, str] = {"openldap": "entryuuid", "ad": "objectguid"}

_OPENLDAP_USER_CLASSES = frozenset({"inetorgperson", "person", "posixaccount", "organizationalperson", "account"})
_OPENLDAP_GROUP_CLASSES = frozenset({"groupofnames", "groupofuniquenames", "posixgroup", "group"})


@dataclass(frozen=True)
class DirectorySettings:
    """What a directory source needs to know to read its entries; names are case-insensitive.

    `attribute_map` renames source attributes for the mapping rules (`{"ou": "department"}` lets a
    rule on `department` serve LDAP and SCIM sources alike); mapped attributes are always kept.
    """

    flavor: Flavor
    user_base: str
    group_base: str
    user_name_attribute: str | None = None
    email_attribute: str = "mail"
    anchor_attribute: str | None = None
    attribute_map: Mapping[str, str] = field(default_factory=dict)
    keep_attributes: tuple[str, ...] = DEFAULT_KEEP_ATTRIBUTES

    def __post_init__(self) -> None:
        if self.flavor not in _DEFAULT_USER_NAME:
            raise ValueError(f"unknown directory flavor {self.flavor!r} (expected 'openldap' or 'ad')")
        normalize_dn(self.user_base)  # a ValueError here names the bad base, not a later entry
        normalize_dn(self.group_base)
        put = object.__setattr__
        put(self, "user_name_attribute", (self.user_name_attribute or _DEFAULT_USER_NAME[self.flavor]).lower())
        put(self, "email_attribute", self.email_attribute.lower())
        put(self, "anchor_attribute", (self.anchor_attribute or _DEFAULT_ANCHOR[self.flavor]).lower())
        renames = {source.lower(): target.lower() for source, target in self.attribute_map.items()}
        put(self, "attribute_map", MappingProxyType(renames))
        kept = dict.fromkeys(name.lower() for name in (*self.keep_attributes, *renames))
        put(self, "keep_attributes", tuple(kept))


@dataclass
class NormalizeReport:
    """What `build_snapshot` could not take over faithfully.

    `errors`: the snapshot differs from the directory (an entry left out for a missing or
    duplicate anchor or user name, a member list cut short by an unfinished range retrieval).
    `warnings`: doubtful data that was still taken in (duplicate user names, an unreadable flag).
    Messages name the DN. The counters help operators see what the scope caught.
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    entries: int = 0
    users: int = 0
    groups: int = 0
    out_of_scope: int = 0
    other: int = 0
    unresolved_references: int = 0


# ---------------------------------------------------------------------------------------------
def is_within(normalized_dn: str, normalized_base: str) -> bool:
    """Whether a DN is the base or below it; both already through `normalize_dn`."""
    if not normalized_base or normalized_dn == normalized_base:
        return True
    if not normalized_dn.endswith(normalized_base):
        return False
    comma = len(normalized_dn) - len(normalized_base) - 1
    if comma < 1 or normalized_dn[comma] != ",":
        return False
    # `cn=a\,ou=people,...` ends with `,ou=people,...` but that comma is part of the cn.
    backslashes = 0
    while comma - backslashes - 1 >= 0 and normalized_dn[comma - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 0


# ---------------------------------------------------------------------------------------------
# Values


def _values(attributes: Mapping[str, Sequence[str | bytes]], name: str) -> Sequence[str | bytes]:
    values = attributes.get(name, ())
    # ldap3 with a schema returns single-valued attributes as scalars (trap 15).
    return (values,) if isinstance(values, (str, bytes)) else values


def _first(attributes: Mapping[str, Sequence[str | bytes]], name: str) -> str | None:
    values = attributes.get(name)
    if not values:
        return None
    for value in (values,) if isinstance(values, (str, bytes)) else values:
        text = (value if type(value) is str else text_of(value)).strip()
        if text:
            return text
    return None


def _texts(values: Sequence[str | bytes]) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        return (text_of(values),)  # a scalar from a schema-aware ldap3 read (trap 15)
    if type(values) is list and values and type(values[0]) is bytes:
        # bridge's own LDAP reads (ber.py): a list of bytes, decoded as text_of would.
        try:
            return tuple([v.decode("utf-8") for v in values])  # type: ignore[union-attr]
        except (UnicodeDecodeError, AttributeError):
            return tuple(text_of(v) for v in values)
    try:
        # Raises TypeError if any value is bytes: the all-str case is checked in C, since this
        # runs for every kept attribute of every user.
        "".join(values)  # type: ignore[arg-type]
    except TypeError:
        return tuple(text_of(v) for v in values)
    return tuple(values)  # type: ignore[arg-type]


def _int(attributes: Mapping[str, Sequence[str | bytes]], name: str) -> int | None:
    text = _first(attributes, name)
    return None if text is None else int(text)


def _merge_ranges(
    dn: str, attributes: Mapping[str, Sequence[str | bytes]], report: NormalizeReport
) -> dict[str, list[str | bytes]]:
    # AD answers a large `member` with an empty `member` plus `member;range=0-1499` (trap 7). The
    # live source fetches the other ranges; here every range present is merged into the plain name.
    merged: dict[str, list[str | bytes]] = {}
    ranges: dict[str, list[tuple[int, str, Sequence[str | bytes]]]] = {}
    for key in attributes:
        base, _, options = key.partition(";")
        option = next((o for o in options.split(";") if o.startswith("range=")), None)
        if option is None:
            merged.setdefault(key, []).extend(_values(attributes, key))
            continue
        low, _, high = option[len("range=") :].partition("-")
        ranges.setdefault(base, []).append((int(low) if low.isdigit() else 0, high, _values(attributes, key)))
    for base, parts in ranges.items():
        parts.sort(key=lambda part: part[0])
        target = merged.setdefault(base, [])
        for _, _, values in parts:
            target.extend(values)
        if parts[-1][1] != "*":
            report.errors.append(
                f"{dn}: '{base}' holds only ranges up to {parts[-1][1]}; the rest of the values were "
                "not retrieved, so its list is incomplete"
            )
    return merged


# ---------------------------------------------------------------------------------------------
# Entries


def classify(attributes: Mapping[str, Sequence[str | bytes]], flavor: Flavor) -> EntryKind:
    """Whether an entry is a person, a group or something else, from its objectClass (and, on AD,
    the account type: computers, managed service accounts and trust accounts are `user` objects
    but not people, trap 16)."""
    values = _values(attributes, "objectclass")
    if flavor == "openldap":
        kind: EntryKind = "other"
        for value in values:
            name = (value if type(value) is str else text_of(value)).lower()
            if name in _OPENLDAP_USER_CLASSES:
                return "user"  # a person first: some schemas let a person entry be a posixGroup too
            if name in _OPENLDAP_GROUP_CLASSES:
                kind = "group"
        return kind
    classes = {text_of(c).lower() for c in values}
    if "user" in classes and "computer" not in classes:
        account_type = _first(attributes, "samaccounttype")
        if account_type is not None and account_type != str(SAM_NORMAL_USER_ACCOUNT):
            return "other"
        uac = _first(attributes, "useraccountcontrol")
        if uac is not None and uac.isdigit() and int(uac) & UAC_TRUST_ACCOUNTS:
            return "other"
        return "user"
    return "group" if "group" in classes else "other"


def _is_disabled(
    dn: str, attributes: Mapping[str, Sequence[str | bytes]], flavor: Flavor, now_filetime: int, report: NormalizeReport
) -> bool:
    if flavor == "openldap":
        # ppolicy (trap 11): 000001010000Z is a permanent administrative lock, any other value an
        # intruder lockout that may lapse after pwdLockoutDuration. The entry alone cannot tell
        # when, so any value counts as disabled: the account is suspended, which is reversible,
        # and the first sync after the lock is cleared reactivates it.
        if _values(attributes, "pwdaccountlockedtime"):
            return True
        lock = _first(attributes, "nsaccountlock")  # 389-DS/FreeIPA: a string, not a boolean (trap 11)
        return lock is not None and lock.lower() == "true"
    try:
        uac = _int(attributes, "useraccountcontrol")
        expires = _int(attributes, "accountexpires")
    except ValueError:
        report.warnings.append(f"{dn}: userAccountControl or accountExpires is not a number; ignored")
        return False
    if uac is not None and uac & UAC_ACCOUNTDISABLE:
        return True
    # Both 0 and 2**63-1 mean "never" (trap 3).
    return expires is not None and 0 < expires < FILETIME_NEVER and expires <= now_filetime


@dataclass(slots=True)
class _Group:
    anchor: str
    name: str
    dn: str
    member_dns: list[str]
    member_uids: list[str]
    member_of: list[str]
    token: int | None
    sid: str | None


@dataclass(slots=True)
class _UserLinks:
    """What a user entry says about its own memberships (AD mostly); absent for most OpenLDAP users."""

    dn: str
    member_of: tuple[str, ...]
    primary_group_id: int | None
    domain_sid: str | None


# The SourceUser fields known before memberships are resolved: user_name, email, given_name,
# family_name, display_name, active, dn, attributes, preferred_language. A plain tuple, because
# 100k of them are held and a tuple is the cheapest thing to build and hold.
_PendingUser = tuple[
    str, str | None, str | None, str | None, str | None, bool, str, Mapping[str, tuple[str, ...]], str | None
]


def build_snapshot(
    entries: Iterable[RawEntry], settings: DirectorySettings, now: datetime
) -> tuple[Snapshot, NormalizeReport]:
    """Normalise directory entries into a `Snapshot` of the users and groups in scope.

    Users are entries classified as users at or below `user_base`, groups likewise below
    `group_base`. Group members are anchors of users or groups in the snapshot (nested groups stay
    groups; `expand_groups` resolves nesting), read from `member`, `uniqueMember`, `memberUid`,
    AD's `primaryGroupID`, and `memberOf` for groups that list nobody themselves; each user's
    `groups` lists the same direct memberships from the other side. References to anything
    outside the snapshot are dropped.
    `now` (timezone-aware) decides whether `accountExpires` has passed. The snapshot is always
    `complete`: what the report's errors are worth is for the caller to judge.
    """
    collector = _Collector(settings, now)
    for dn, attributes in entries:
        collector.add(dn, attributes)
    return collector.finish()


class _Collector:
    """One pass over the entries: keeps normalised users and groups and the DNs to resolve."""

    def __init__(self, settings: DirectorySettings, now: datetime) -> None:
        self.report = NormalizeReport()
        self.now_filetime = filetime(now)
        self.flavor = settings.flavor
        self.ranged = settings.flavor == "ad"  # range retrieval is AD's (trap 7); OpenLDAP sends whole lists
        self.user_base = normalize_dn(settings.user_base)
        self.group_base = normalize_dn(settings.group_base)
        self.anchor_attribute = settings.anchor_attribute or ""
        self.user_name_attribute = settings.user_name_attribute or ""
        self.email_attribute = settings.email_attribute
        self.kept = tuple(
            (name, settings.attribute_map.get(name, name))
            for name in settings.keep_attributes
            # Binary: read by _logon_hours, never decoded as text.
            if not (self.flavor == "ad" and name == LOGON_HOURS_ATTRIBUTE)
        )
        self.users: dict[str, _PendingUser] = {}
        self.user_links: dict[str, _UserLinks] = {}
        self.uids: dict[str, str] = {}  # anchor -> uid, when userName is another attribute
        self.groups: dict[str, _Group] = {}
        self.dn_of_anchor: dict[str, tuple[str, str]] = {}  # anchor -> (DN, normalised DN)
        self.anchor_by_dn: dict[str, str | None] = {}  # DN as written -> anchor; None: outside the snapshot
        self.anchor_by_normalized_dn: dict[str, str] = {}
        self.duplicates: set[str] = set()
        # memberOf values name a few hundred groups across every user: one string per group DN
        # instead of one per user and group (about 25 MB at 100k users, 3 groups each).
        self.group_dns: dict[str, str] = {}

    def add(self, dn: str, attributes: Mapping[str, Sequence[str | bytes]]) -> None:
        report = self.report
        report.entries += 1
        if self.ranged and any(";" in key for key in attributes):
            attributes = _merge_ranges(dn, attributes, report)
        kind = classify(attributes, self.flavor)
        if kind == "other":
            report.other += 1
            return
        try:
            normalized = normalize_dn(dn)
        except ValueError as exc:
            report.errors.append(f"{dn}: left out, {exc}")
            return
        if not is_within(normalized, self.user_base if kind == "user" else self.group_base):
            report.out_of_scope += 1
            return
        anchor = self._anchor(dn, attributes)
        if anchor is None:
            return
        add = self._add_user if kind == "user" else self._add_group
        if add(anchor, dn, attributes):
            self.dn_of_anchor[anchor] = (dn, normalized)
            self.anchor_by_dn[dn] = anchor
            self.anchor_by_normalized_dn[normalized] = anchor

    def _anchor(self, dn: str, attributes: Mapping[str, Sequence[str | bytes]]) -> str | None:
        name = self.anchor_attribute
        values = _values(attributes, name)
        if not values:
            self.report.errors.append(f"{dn}: left out, it has no {name} to identify it by")
            return None
        try:
            anchor = decode_anchor(values[0], name, self.flavor)
        except ValueError as exc:
            self.report.errors.append(f"{dn}: left out, its {name} is unreadable ({exc})")
            return None
        if anchor in self.dn_of_anchor or anchor in self.duplicates:
            # Which of the two is the real one cannot be told; taking either could hand one
            # person's roles to the other, so both stay out until the directory is fixed.
            self.duplicates.add(anchor)
            first = self.dn_of_anchor.get(anchor, ("an earlier entry",))[0]
            self.report.errors.append(f"{dn}: left out, with {first}: both have {name} {anchor}")
            return None
        return anchor

    def _add_user(self, anchor: str, dn: str, attributes: Mapping[str, Sequence[str | bytes]]) -> bool:
        report = self.report
        user_name = _first(attributes, self.user_name_attribute)
        if user_name is None:
            report.errors.append(f"{dn}: left out, it has no {self.user_name_attribute} to use as userName")
            return False
        kept: dict[str, tuple[str, ...]] = {}
        for source_name, target_name in self.kept:
            values = attributes.get(source_name)
            if values:
                kept[target_name] = _texts(values)
        if self.flavor == "ad":
            logon_hours = self._logon_hours(dn, attributes)
            if logon_hours is not None:
                kept[LOGON_HOURS_ATTRIBUTE] = (logon_hours,)
        self.users[anchor] = (
            user_name,
            _first(attributes, self.email_attribute),
            _first(attributes, "givenname"),
            _first(attributes, "sn"),
            _first(attributes, "displayname") or _first(attributes, "cn"),
            not _is_disabled(dn, attributes, self.flavor, self.now_filetime, report),
            dn,
            # Already read-only, so SourceUser keeps it instead of copying it.
            MappingProxyType(kept),
            _first(attributes, "preferredlanguage"),
        )
        if self.user_name_attribute != "uid":
            uid = _first(attributes, "uid")
            if uid is not None:
                self.uids[anchor] = uid
        member_of = attributes.get("memberof")
        primary_group_id = domain_sid = None
        if self.flavor == "ad":
            try:
                primary_group_id = _int(attributes, "primarygroupid")
                own_sid = _values(attributes, "objectsid")
                if own_sid:
                    domain_sid = decode_sid(own_sid[0]).rpartition("-")[0]
            except ValueError:
                report.warnings.append(f"{dn}: primaryGroupID or objectSid is unreadable; primary group not matched")
        if member_of or primary_group_id is not None:
            shared = self.group_dns
            member_of_dns = tuple(shared.setdefault(v, v) for v in _texts(member_of or ()))
            self.user_links[anchor] = _UserLinks(dn, member_of_dns, primary_group_id, domain_sid)
        return True

    def _logon_hours(self, dn: str, attributes: Mapping[str, Sequence[str | bytes]]) -> str | None:
        """AD's `logonHours` as 42 hex digits (the core decodes it: bridge/core/login_hours.py),
        or None when absent. Binary, so never through `text_of`: its UTF-8 "replace" would turn
        most bytes into U+FFFD. A value of the wrong length is left out with a warning (no
        restriction: the person's hours cannot be told)."""
        values = _values(attributes, LOGON_HOURS_ATTRIBUTE)
        if not values:
            return None
        value = values[0]
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # decoded by chance
        if len(raw) != LOGON_HOURS_BYTES:
            self.report.warnings.append(
                f"{dn}: logonHours has {len(raw)} bytes, not {LOGON_HOURS_BYTES}; ignored (no login hours restriction)"
            )
            return None
        return raw.hex()

    def _add_group(self, anchor: str, dn: str, attributes: Mapping[str, Sequence[str | bytes]]) -> bool:
        report = self.report
        name = _first(attributes, "cn") or (_first(attributes, "samaccountname") if self.flavor == "ad" else None)
        if name is None:
            report.errors.append(f"{dn}: left out, the group has no cn")
            return False
        sid = None
        for raw_sid in _values(attributes, "objectsid"):
            try:
                sid = decode_sid(raw_sid)
            except ValueError:
                report.warnings.append(f"{dn}: objectSid is unreadable; primary group members not matched")
        try:
            token = _int(attributes, "primarygrouptoken")
        except ValueError:
            token = None
        self.groups[anchor] = _Group(
            anchor=anchor,
            name=name,
            dn=dn,
            member_dns=[
                *_texts(_values(attributes, "member")),
                *(strip_unique_member_uid(text_of(v)) for v in _values(attributes, "uniquemember")),
            ],
            member_uids=[text_of(v).strip().lower() for v in _values(attributes, "memberuid")],
            member_of=list(_texts(_values(attributes, "memberof"))),
            token=token,
            sid=sid,
        )
        return True

    def finish(self) -> tuple[Snapshot, NormalizeReport]:
        users, groups = self.users, self.groups
        for anchor in self.duplicates:
            users.pop(anchor, None)
            self.user_links.pop(anchor, None)
            groups.pop(anchor, None)
            dn, normalized = self.dn_of_anchor.pop(anchor)
            del self.anchor_by_dn[dn]
            del self.anchor_by_normalized_dn[normalized]
        self.report.users = len(users)
        self.report.groups = len(groups)
        members = self._memberships()
        groups_of_user: dict[str, list[str]] = {}
        for group_anchor, member_anchors in members.items():
            for member in member_anchors:
                if member in users:
                    groups_of_user.setdefault(member, []).append(group_anchor)
        snapshot = Snapshot(complete=True)
        for anchor, (user_name, email, given, family, display, active, dn, attributes, language) in users.items():
            snapshot.users[anchor] = SourceUser(
                anchor=anchor,
                user_name=user_name,
                email=email,
                given_name=given,
                family_name=family,
                display_name=display,
                active=active,
                dn=dn,
                attributes=attributes,
                groups=tuple(sorted(groups_of_user.get(anchor, ()))),
                preferred_language=language,
            )
        for g in groups.values():
            snapshot.groups[g.anchor] = SourceGroup(
                anchor=g.anchor, name=g.name, dn=g.dn, members=tuple(sorted(members[g.anchor]))
            )
        return snapshot, self.report

    def _resolve(self, dn: str) -> str | None:
        anchor_by_dn = self.anchor_by_dn
        if dn in anchor_by_dn:
            return anchor_by_dn[dn]
        try:
            found = self.anchor_by_normalized_dn.get(normalize_dn(dn))
        except ValueError:
            found = None
        anchor_by_dn[dn] = found  # each spelling is normalised once, however many groups cite it
        return found

    def _memberships(self) -> dict[str, set[str]]:
        """Direct memberships as group anchor -> member anchors.

        A group's own list (member, uniqueMember, memberUid) is the truth; `memberOf` only fills
        groups whose entries list nobody, as in exports that carry one side only. `memberOf` is
        derived and can lag: the OpenLDAP memberof overlay is unreliable under replication (trap
        13), and trusting a stale value would keep someone in a group they were removed from.
        """
        users, groups, report, resolve = self.users, self.groups, self.report, self._resolve
        members: dict[str, set[str]] = {anchor: set() for anchor in groups}
        listing = {g.anchor for g in groups.values() if g.member_dns or g.member_uids}
        stale = 0

        def link(parent: str | None, child: str | None) -> None:
            if parent is None or child is None or parent not in members or parent == child:
                report.unresolved_references += 1
            else:
                members[parent].add(child)

        def link_from_member_of(parent: str | None, child: str) -> None:
            nonlocal stale
            if parent in listing:
                stale += child not in members[parent]
            else:
                link(parent, child)

        logins: dict[str, str | None] = {}
        user_names: dict[str, str] = {}
        for anchor, pending in users.items():
            user_name = pending[0].lower()
            other = user_names.setdefault(user_name, anchor)
            if other != anchor:
                report.warnings.append(
                    f"{pending[6]}: userName {pending[0]!r} is also the userName of {users[other][6]}"
                )
            for login in {user_name, self.uids.get(anchor, user_name).lower()}:
                # Two people with one login: neither gets a memberUid membership by guesswork.
                logins[login] = None if login in logins else anchor

        for group in groups.values():
            for dn in group.member_dns:
                link(group.anchor, resolve(dn))
            for login in group.member_uids:
                link(group.anchor, logins.get(login))
        for group in groups.values():
            for dn in group.member_of:
                link_from_member_of(resolve(dn), group.anchor)

        # memberOf and member omit the primary group (trap 5): match primaryGroupID to the group whose
        # SID is the user's domain SID plus that RID, else to a unique primaryGroupToken or RID.
        by_sid = {g.sid: g.anchor for g in groups.values() if g.sid}
        by_rid: dict[int, list[str]] = {}
        by_token: dict[int, list[str]] = {}
        for group in groups.values():
            if group.token is not None:
                by_token.setdefault(group.token, []).append(group.anchor)
            if group.sid:
                by_rid.setdefault(int(group.sid.rpartition("-")[2]), []).append(group.anchor)

        for anchor, links in self.user_links.items():
            for dn in links.member_of:
                link_from_member_of(resolve(dn), anchor)
            rid = links.primary_group_id
            if rid is None:
                continue
            primary = by_sid.get(f"{links.domain_sid}-{rid}") if links.domain_sid else None
            if primary is None:
                candidates = by_token.get(rid) or by_rid.get(rid) or []
                if len(candidates) > 1:
                    report.warnings.append(
                        f"{links.dn}: primaryGroupID {rid} matches {len(candidates)} groups; primary group not matched"
                    )
                    continue
                primary = candidates[0] if candidates else None
            if primary is not None:
                members[primary].add(anchor)
        if stale:
            report.warnings.append(
                f"{stale} memberOf values name a group whose member list does not include the member; "
                "the groups' lists were followed"
            )
        return members
