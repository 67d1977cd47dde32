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

import re
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Literal

from bridge.core.model import Snapshot, SourceGroup, SourceUser

__all__ = [
    "DEFAULT_KEEP_ATTRIBUTES",
    "DirectorySettings",
    "EntryKind",
    "Flavor",
    "NormalizeReport",
    "RawEntry",
    "build_snapshot",
    "classify",
    "decode_object_guid",
    "decode_sid",
    "is_within",
    "normalize_dn",
]

Flavor = Literal["openldap", "ad"]
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
# Attributes holding a GUID in AD's mixed-endian layout (trap 1; Entra Connect's anchor is the second).
_AD_GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid", "msds-consistencyguid"})

_OPENLDAP_USER_CLASSES = frozenset({"inetorgperson", "person", "posixaccount", "organizationalperson", "account"})
_OPENLDAP_GROUP_CLASSES = frozenset({"groupofnames", "groupofuniquenames", "posixgroup", "group"})

_UAC_ACCOUNTDISABLE = 0x2
# Interdomain, workstation and server trust accounts are objectClass=user too (trap 16).
_UAC_TRUST_ACCOUNTS = 0x800 | 0x1000 | 0x2000
_SAM_NORMAL_USER_ACCOUNT = 805306368
_FILETIME_NEVER = 0x7FFFFFFFFFFFFFFF
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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
# DNs


_NEEDS_SLOW_PATH = re.compile(r'[\\"+;<>]')
# Most DNs need nothing but lower-casing: no escapes, no spaces around `,` or `=`.
_PLAIN_VALUE = r'(?:[^\s,=\\"+;<>](?:[^,=\\"+;<>]*[^\s,=\\"+;<>])?)?'
_PLAIN_DN = re.compile(rf"[A-Za-z0-9.-]+={_PLAIN_VALUE}(?:,[A-Za-z0-9.-]+={_PLAIN_VALUE})*")
_ESCAPE_ANYWHERE = frozenset('"+,;<>\\')
_HEX = frozenset("0123456789abcdefABCDEF")


def normalize_dn(dn: str) -> str:
    """A DN's comparison form: lower-case, no spaces around `,` `=` `+`, canonical escapes.

    DNs are case-insensitive and the same DN can be spelled `CN=Doe\\, John` or `cn=doe\\2c john`
    (trap 17). Escapes are kept (re-written one canonical way), so the result is still a DN and
    an escaped `,` is never mistaken for a separator. Multi-valued RDNs are sorted. The empty DN
    (the root) stays empty. Raises `ValueError` for text that is not a DN.
    """
    if _PLAIN_DN.fullmatch(dn):
        return dn.lower()
    if _NEEDS_SLOW_PATH.search(dn):
        return _normalize_escaped_dn(dn)
    if not dn.strip():
        return ""
    parts = []
    for rdn in dn.lower().split(","):
        attribute, equals, value = rdn.partition("=")
        attribute = attribute.strip()
        if not equals or not attribute:
            raise ValueError(f"not a DN: {dn!r}")
        parts.append(f"{attribute}={value.strip()}")
    return ",".join(parts)


def _normalize_escaped_dn(dn: str) -> str:
    rdns: list[str] = []
    avas: list[str] = []
    i, n = 0, len(dn)
    while True:
        equals = dn.find("=", i)
        if equals < 0:
            raise ValueError(f"not a DN: {dn!r}")
        attribute = dn[i:equals].strip().lower()
        if not attribute or any(c in attribute for c in ',+"\\'):
            raise ValueError(f"not a DN: {dn!r}")
        i = equals + 1
        while i < n and dn[i] == " ":
            i += 1
        ber = i < n and dn[i] == "#"  # `#04...` is a BER-encoded value (RFC 4514 2.4), compared as written
        if i < n and dn[i] == '"':
            # RFC 1779 quoted value, still written by some older tools.
            value = bytearray()
            i += 1
            while i < n and dn[i] != '"':
                if dn[i] == "\\" and i + 1 < n:
                    i += 1
                value += dn[i].encode("utf-8")
                i += 1
            if i >= n:
                raise ValueError(f"unterminated quoted value in DN: {dn!r}")
            i += 1
            text = _decode_dn_value(value, dn)
            while i < n and dn[i] == " ":
                i += 1
        else:
            value = bytearray()
            significant = 0  # length without unescaped trailing spaces
            while i < n and dn[i] not in ",+":
                c = dn[i]
                if c == "\\":
                    pair = dn[i + 1 : i + 3]
                    if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                        value.append(int(pair, 16))
                        i += 3
                    elif i + 1 < n:
                        value += dn[i + 1].encode("utf-8")
                        i += 2
                    else:
                        raise ValueError(f"DN ends with a lone backslash: {dn!r}")
                    significant = len(value)
                    continue
                value += c.encode("utf-8")
                if c != " ":
                    significant = len(value)
                i += 1
            del value[significant:]
            text = _decode_dn_value(value, dn)
        if ber:
            avas.append(f"{attribute}={text.lower()}")
        else:
            avas.append(f"{attribute}={_escape_dn_value(text).lower()}")
        if i >= n:
            rdns.append("+".join(sorted(avas)))
            return ",".join(rdns)
        if dn[i] == ",":
            rdns.append("+".join(sorted(avas)))
            avas = []
        i += 1


def _decode_dn_value(value: bytearray, dn: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"DN escapes are not UTF-8: {dn!r}") from None


def _escape_dn_value(text: str) -> str:
    out = []
    last = len(text) - 1
    for position, c in enumerate(text):
        if c in _ESCAPE_ANYWHERE or (position == 0 and c in " #") or (position == last and c == " "):
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    return "".join(out)


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


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _first(attributes: Mapping[str, Sequence[str | bytes]], name: str) -> str | None:
    values = attributes.get(name)
    if not values:
        return None
    for value in (values,) if isinstance(values, (str, bytes)) else values:
        text = (value if type(value) is str else _text(value)).strip()
        if text:
            return text
    return None


def _texts(values: Sequence[str | bytes]) -> tuple[str, ...]:
    return tuple(v if type(v) is str else _text(v) for v in values)


def decode_object_guid(value: str | bytes) -> str:
    """An AD GUID as a lower-case UUID string; raises `ValueError` if it is not one.

    Accepts the 16 raw bytes (mixed-endian: `uuid.UUID(bytes_le=...)`, trap 1), ldap3's `{...}`
    form, a plain UUID string, and 16 raw bytes that an LDIF reader decoded as UTF-8 by chance.
    """
    if isinstance(value, bytes):
        if len(value) == 16:
            return str(uuid.UUID(bytes_le=value))
        value = value.decode("ascii")
    text = value.strip()
    try:
        return str(uuid.UUID(text))  # also takes `{...}`, upper case and `urn:uuid:`
    except ValueError:
        raw = value.encode("utf-8")
        if len(raw) == 16:
            return str(uuid.UUID(bytes_le=raw))
        raise ValueError(f"not a GUID: {value!r}") from None


def decode_sid(value: str | bytes) -> str:
    """A security identifier in `S-1-5-21-...-RID` form; raises `ValueError` if it is not one.

    Binary layout (MS-DTYP 2.4.2.2): revision, sub-authority count, 48-bit big-endian authority,
    then the sub-authorities as 32-bit little-endian integers; the last one is the RID.
    """
    if isinstance(value, str):
        if value[:2].upper() == "S-":
            return value.strip().upper()
        value = value.encode("utf-8")  # binary that a reader decoded as text by chance
    if len(value) < 8 or len(value) != 8 + 4 * value[1]:
        raise ValueError(f"not a SID: {value!r}")
    authority = int.from_bytes(value[2:8], "big")
    sub_authorities = struct.unpack_from(f"<{value[1]}I", value, 8)
    return f"S-{value[0]}-{authority}" + "".join(f"-{s}" for s in sub_authorities)


def _anchor(value: str | bytes, attribute: str, flavor: Flavor) -> str:
    if attribute == "objectsid":
        return decode_sid(value)
    if flavor == "ad" and attribute in _AD_GUID_ATTRIBUTES:
        return decode_object_guid(value)
    # entryUUID (RFC 4530) is a string; other anchors (nsUniqueId, an employee number) are kept
    # as written, lower-cased because directory string matching is case-insensitive.
    text = _text(value).strip().lower()
    if _CANONICAL_UUID.fullmatch(text):
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def _int(attributes: Mapping[str, Sequence[str | bytes]], name: str) -> int | None:
    text = _first(attributes, name)
    return None if text is None else int(text)


def _merge_ranges(dn: str, attributes: Mapping[str, Sequence[str | bytes]], report: NormalizeReport) -> dict[str, list[str | bytes]]:
    # AD answers a large `member` with an empty `member` plus `member;range=0-1499` (trap 7). The
    # live source fetches the other ranges; here every range present is merged into the plain name.
    merged: dict[str, list[str | bytes]] = {}
    ranges: dict[str, list[tuple[int, str, Sequence[str | bytes]]]] = {}
    for key, values in attributes.items():
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
    try:
        classes = set(map(str.lower, values))  # type: ignore[arg-type]
    except TypeError:  # bytes values (ldap3 raw_attributes)
        classes = {_text(c).lower() for c in values}
    if flavor == "ad":
        if "user" in classes and "computer" not in classes:
            account_type = _first(attributes, "samaccounttype")
            if account_type is not None and account_type != str(_SAM_NORMAL_USER_ACCOUNT):
                return "other"
            uac = _first(attributes, "useraccountcontrol")
            if uac is not None and uac.isdigit() and int(uac) & _UAC_TRUST_ACCOUNTS:
                return "other"
            return "user"
        return "group" if "group" in classes else "other"
    if classes & _OPENLDAP_USER_CLASSES:
        return "user"
    if classes & _OPENLDAP_GROUP_CLASSES:
        return "group"
    return "other"


def _filetime(now: datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return (now - _FILETIME_EPOCH) // timedelta(microseconds=1) * 10


def _is_disabled(dn: str, attributes: Mapping[str, Sequence[str | bytes]], now_filetime: int, report: NormalizeReport) -> bool:
    try:
        uac = _int(attributes, "useraccountcontrol")
        expires = _int(attributes, "accountexpires")
    except ValueError:
        report.warnings.append(f"{dn}: userAccountControl or accountExpires is not a number; ignored")
        uac = expires = None
    if uac is not None and uac & _UAC_ACCOUNTDISABLE:
        return True
    # Both 0 and 2**63-1 mean "never" (trap 3).
    if expires is not None and 0 < expires < _FILETIME_NEVER and expires <= now_filetime:
        return True
    # ppolicy (trap 11): 000001010000Z is a permanent administrative lock, any other value an
    # intruder lockout that may lapse after pwdLockoutDuration. The entry alone cannot tell when, so
    # any value counts as disabled: the account is suspended, which is reversible, and the next
    # sync after the lock is cleared reactivates it.
    if _values(attributes, "pwdaccountlockedtime"):
        return True
    lock = _first(attributes, "nsaccountlock")  # 389-DS/FreeIPA: a string, not a boolean (trap 11)
    return lock is not None and lock.lower() == "true"


def _strip_unique_member_uid(value: str) -> str:
    # uniqueMember is `DN [ "#" BitString ]` (RFC 4517 NameAndOptionalUID). A `#` right after `=`
    # starts a BER value and an escaped `\#` is part of a value, so only a later bare `#` cuts.
    sharp = value.rfind("#")
    if sharp > 0 and value[sharp - 1] not in "=\\" and "=" not in value[sharp:]:
        return value[:sharp]
    return value


@dataclass(slots=True)
class _User:
    anchor: str
    user_name: str
    uid: str | None
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    active: bool
    dn: str
    normalized_dn: str
    attributes: Mapping[str, tuple[str, ...]]
    member_of: list[str]
    primary_group_id: int | None
    domain_sid: str | None
    preferred_language: str | None


@dataclass(slots=True)
class _Group:
    anchor: str
    name: str
    dn: str
    normalized_dn: str
    member_dns: list[str]
    member_uids: list[str]
    member_of: list[str]
    token: int | None
    sid: str | None


def build_snapshot(
    entries: Iterable[RawEntry], settings: DirectorySettings, now: datetime
) -> tuple[Snapshot, NormalizeReport]:
    """Normalise directory entries into a `Snapshot` of the users and groups in scope.

    Users are entries classified as users at or below `user_base`, groups likewise below
    `group_base`. Group members are anchors of users or groups in the snapshot (nested groups stay
    groups; `expand_groups` resolves nesting), read from `member`, `uniqueMember`, `memberUid`,
    both sides' `memberOf` and AD's `primaryGroupID`; each user's `groups` lists the same direct
    memberships from the other side. References to anything outside the snapshot are dropped.
    `now` (timezone-aware) decides whether `accountExpires` has passed. The snapshot is always
    `complete`: what the report's errors are worth is for the caller to judge.
    """
    report = NormalizeReport()
    now_filetime = _filetime(now)
    user_base = normalize_dn(settings.user_base)
    group_base = normalize_dn(settings.group_base)
    anchor_attribute = settings.anchor_attribute or ""
    user_name_attribute = settings.user_name_attribute or ""
    email_attribute = settings.email_attribute
    renames = settings.attribute_map
    kept = [(name, renames.get(name, name)) for name in settings.keep_attributes]
    flavor = settings.flavor
    ranged = flavor == "ad"  # range retrieval is AD's (trap 7); OpenLDAP returns whole lists

    users: dict[str, _User] = {}
    groups: dict[str, _Group] = {}
    dn_of_anchor: dict[str, str] = {}
    duplicates: set[str] = set()

    for dn, attributes in entries:
        report.entries += 1
        if ranged and any(";" in key for key in attributes):
            attributes = _merge_ranges(dn, attributes, report)
        kind = classify(attributes, flavor)
        if kind == "other":
            report.other += 1
            continue
        try:
            normalized = normalize_dn(dn)
        except ValueError as exc:
            report.errors.append(f"{dn}: left out, {exc}")
            continue
        if not is_within(normalized, user_base if kind == "user" else group_base):
            report.out_of_scope += 1
            continue
        raw_anchor = next(iter(_values(attributes, anchor_attribute)), None)
        if raw_anchor is None:
            report.errors.append(f"{dn}: left out, it has no {anchor_attribute} to identify it by")
            continue
        try:
            anchor = _anchor(raw_anchor, anchor_attribute, flavor)
        except ValueError as exc:
            report.errors.append(f"{dn}: left out, its {anchor_attribute} is unreadable ({exc})")
            continue
        if anchor in dn_of_anchor:
            # Which of the two is the real one cannot be told; taking either could hand one
            # person's roles to the other, so both stay out until the directory is fixed.
            duplicates.add(anchor)
            report.errors.append(
                f"{dn}: left out, with {dn_of_anchor[anchor]}: both have {anchor_attribute} {anchor}"
            )
            continue

        if kind == "group":
            name = _first(attributes, "cn") or (_first(attributes, "samaccountname") if flavor == "ad" else None)
            if name is None:
                report.errors.append(f"{dn}: left out, the group has no cn")
                continue
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
            dn_of_anchor[anchor] = dn
            groups[anchor] = _Group(
                anchor=anchor,
                name=name,
                dn=dn,
                normalized_dn=normalized,
                member_dns=[
                    *_texts(_values(attributes, "member")),
                    *(_strip_unique_member_uid(_text(v)) for v in _values(attributes, "uniquemember")),
                ],
                member_uids=[_text(v).strip().lower() for v in _values(attributes, "memberuid")],
                member_of=list(_texts(_values(attributes, "memberof"))),
                token=token,
                sid=sid,
            )
            continue

        user_name = _first(attributes, user_name_attribute)
        if user_name is None:
            report.errors.append(f"{dn}: left out, it has no {user_name_attribute} to use as userName")
            continue
        domain_sid = None
        primary_group_id = None
        if flavor == "ad":
            try:
                primary_group_id = _int(attributes, "primarygroupid")
                own_sid = next(iter(_values(attributes, "objectsid")), None)
                if own_sid is not None:
                    domain_sid = decode_sid(own_sid).rpartition("-")[0]
            except ValueError:
                report.warnings.append(f"{dn}: primaryGroupID or objectSid is unreadable; primary group not matched")
        kept_values: dict[str, tuple[str, ...]] = {}
        for source_name, target_name in kept:
            values = _values(attributes, source_name)
            if values:
                kept_values[target_name] = _texts(values)
        dn_of_anchor[anchor] = dn
        users[anchor] = _User(
            anchor=anchor,
            user_name=user_name,
            uid=_first(attributes, "uid") if user_name_attribute != "uid" else None,
            email=_first(attributes, email_attribute),
            given_name=_first(attributes, "givenname"),
            family_name=_first(attributes, "sn"),
            display_name=_first(attributes, "displayname") or _first(attributes, "cn"),
            active=not _is_disabled(dn, attributes, now_filetime, report),
            dn=dn,
            normalized_dn=normalized,
            # Already read-only, so SourceUser keeps it instead of copying it (100k copies).
            attributes=MappingProxyType(kept_values),
            member_of=list(_texts(_values(attributes, "memberof"))),
            primary_group_id=primary_group_id,
            domain_sid=domain_sid,
            preferred_language=_first(attributes, "preferredlanguage"),
        )

    for anchor in duplicates:
        users.pop(anchor, None)
        groups.pop(anchor, None)
    report.users = len(users)
    report.groups = len(groups)
    members = _resolve_memberships(users, groups, report)

    groups_of_user: dict[str, list[str]] = {}
    for group_anchor, member_anchors in members.items():
        for member in member_anchors:
            if member in users:
                groups_of_user.setdefault(member, []).append(group_anchor)
    snapshot = Snapshot(
        users={
            u.anchor: SourceUser(
                anchor=u.anchor,
                user_name=u.user_name,
                email=u.email,
                given_name=u.given_name,
                family_name=u.family_name,
                display_name=u.display_name,
                active=u.active,
                dn=u.dn,
                attributes=u.attributes,
                groups=tuple(sorted(groups_of_user.get(u.anchor, ()))),
                preferred_language=u.preferred_language,
            )
            for u in users.values()
        },
        groups={
            g.anchor: SourceGroup(anchor=g.anchor, name=g.name, dn=g.dn, members=tuple(sorted(members.get(g.anchor, ()))))
            for g in groups.values()
        },
        complete=True,
    )
    return snapshot, report


def _resolve_memberships(users: dict[str, _User], groups: dict[str, _Group], report: NormalizeReport) -> dict[str, set[str]]:
    """Direct memberships as group anchor -> member anchors, gathered from both sides."""
    anchor_by_dn: dict[str, str | None] = {}  # raw and normalised DN -> anchor, None if outside
    anchor_by_normalized: dict[str, str] = {}
    for entry in (*users.values(), *groups.values()):
        anchor_by_dn[entry.dn] = entry.anchor
        anchor_by_normalized[entry.normalized_dn] = entry.anchor

    def resolve(dn: str) -> str | None:
        try:
            return anchor_by_dn[dn]
        except KeyError:
            pass
        try:
            found = anchor_by_normalized.get(normalize_dn(dn))
        except ValueError:
            found = None
        anchor_by_dn[dn] = found
        return found

    by_login: dict[str, str | None] = {}
    for user in users.values():
        for login in {user.user_name.lower(), (user.uid or user.user_name).lower()}:
            # Two people with one login: neither gets a memberUid membership by guesswork.
            by_login[login] = None if login in by_login else user.anchor
    seen_names: dict[str, str] = {}
    for user in users.values():
        other = seen_names.setdefault(user.user_name.lower(), user.dn)
        if other != user.dn:
            report.warnings.append(f"{user.dn}: userName {user.user_name!r} is also the userName of {other}")

    members: dict[str, set[str]] = {anchor: set() for anchor in groups}

    def link(parent: str | None, child: str | None) -> None:
        if parent is None or child is None or parent not in groups or parent == child:
            report.unresolved_references += 1
            return
        members[parent].add(child)

    for group in groups.values():
        for dn in group.member_dns:
            link(group.anchor, resolve(dn))
        for login in group.member_uids:
            link(group.anchor, by_login.get(login))
        for dn in group.member_of:
            link(resolve(dn), group.anchor)

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

    for user in users.values():
        for dn in user.member_of:
            link(resolve(dn), user.anchor)
        rid = user.primary_group_id
        if rid is None:
            continue
        primary = by_sid.get(f"{user.domain_sid}-{rid}") if user.domain_sid else None
        if primary is None:
            candidates = by_token.get(rid) or by_rid.get(rid) or []
            if len(candidates) > 1:
                report.warnings.append(
                    f"{user.dn}: primaryGroupID {rid} matches {len(candidates)} groups; primary group not matched"
                )
                continue
            primary = candidates[0] if candidates else None
        if primary is not None:
            members[primary].add(user.anchor)
    return members
