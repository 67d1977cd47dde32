"""Mapping rules: from a person's groups and attributes to the product's roles.

A mapping file (`mappings/*.toml`) is per tenant. Rules are additive: every rule that matches
grants its roles. The first matching rule (in file order) is the one `explain` credits for a
role, so administrators can reason about precedence by reading the file top to bottom.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.core.dn import normalize_dn
from bridge.core.login_hours import (
    LOGON_HOURS_ATTRIBUTE,
    LoginHours,
    Window,
    logon_hours_from_hex,
    parse_days,
    parse_hours,
    parse_time_zone,
)
from bridge.core.model import GroupRef, SourceUser
from bridge.errors import ConfigError

RuleKind = Literal["group", "group_name", "group_pattern", "attribute", "scim_role"]


@dataclass(frozen=True, slots=True)
class Role:
    id: str
    title: str
    billable: bool = True
    external_allowed: bool = False
    max_holders: int | None = None
    # The product's module this role is a profile of: holding it (billable) is a seat of that
    # module. `all_modules`: an administrator profile, a seat in every module.
    module: str | None = None
    all_modules: bool = False


@dataclass(frozen=True, slots=True)
class Module:
    """A module of a product that bills per module (`[modules.<id>]`)."""

    id: str
    title: str
    seat_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    index: int  # 1-based position in the file, for explanations
    kind: RuleKind
    value: str  # DN, group name, pattern, attribute name or SCIM role
    roles: tuple[str, ...]
    equals: tuple[str, ...] = ()  # attribute rules only
    pattern: re.Pattern[str] | None = None
    section: str = "rule"  # "login_hours" for the matcher of a [[login_hours]] entry

    def describe(self) -> str:
        if self.kind == "attribute":
            wanted = " or ".join(f'"{v}"' for v in self.equals)
            return f"{self.section} {self.index}: attribute {self.value} = {wanted}"
        return f'{self.section} {self.index}: {self.kind} "{self.value}"'


@dataclass(frozen=True, slots=True)
class LoginHoursEntry:
    """A `[[login_hours]]` entry: whom it restricts (a matcher as in `[[rules]]`) and when they
    may sign in."""

    matcher: Rule  # roles is empty
    window: Window


@dataclass(frozen=True, slots=True)
class ExternalAttribute:
    attribute: str
    equals: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoleMapping:
    roles: Mapping[str, Role]
    rules: tuple[Rule, ...]
    external_groups: tuple[str, ...] = ()  # normalised DNs or lower-cased names
    external_attribute: ExternalAttribute | None = None
    external_expires_after_days: int | None = None
    login_hours: tuple[LoginHoursEntry, ...] = ()
    origin: str = "<mapping>"
    modules: Mapping[str, Module] = field(default_factory=dict)  # in file order

    def seat_modules(self, roles: Iterable[str]) -> frozenset[str]:
        """The modules in which holding `roles` is a seat: one per module however many of its
        roles, every module for an `all_modules` role; non-billable roles take none."""
        if not self.modules:
            return _NO_MODULES
        out: set[str] = set()
        for role_id in roles:
            role = self.roles.get(role_id)
            if role is None or not role.billable:
                continue
            if role.all_modules:
                return frozenset(self.modules)
            if role.module is not None:
                out.add(role.module)
        return frozenset(out)

    def limited_modules(self) -> tuple[str, ...]:
        """The modules with a `seat_limit`, in file order."""
        return tuple(m.id for m in self.modules.values() if m.seat_limit is not None)

    def attribute_names(self) -> tuple[str, ...]:
        """The user attributes the rules and `[user_type]` read, lower-cased, in file order.

        A directory source must request exactly these (besides its own): an attribute it does not
        read is absent from every person, and a rule on it silently matches nobody. A new matcher
        that reads an attribute adds it here.
        """
        matchers = (*self.rules, *(entry.matcher for entry in self.login_hours))
        names = [rule.value for rule in matchers if rule.kind == "attribute"]
        if self.external_attribute is not None:
            names.append(self.external_attribute.attribute)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class RoleDecision:
    """What the rules say about one person, before tenant-wide limits."""

    user_type: Literal["internal", "external"]
    granted: Mapping[str, str]  # role id -> description of the first rule that granted it
    denied: Mapping[str, str] = field(default_factory=dict)  # role id -> reason


_NO_MODULES: frozenset[str] = frozenset()
_ROLE_KEYS = {"title", "billable", "external_allowed", "max_holders", "module", "all_modules"}
_MODULE_KEYS = {"title", "seat_limit"}
_MODULE_ID = re.compile(r"[A-Za-z0-9_-]+")
_RULE_KINDS: tuple[RuleKind, ...] = ("group", "group_name", "group_pattern", "attribute", "scim_role")
_USER_TYPE_KEYS = {"external_groups", "external_attribute", "external_expires_after_days"}
_TOP_KEYS = {"roles", "rules", "user_type", "login_hours", "modules"}
_LOGIN_HOURS_KEYS = {"days", "hours", "time_zone"}


def _expect(value: Any, kind: type | tuple[type, ...], origin: str, key: str, what: str) -> Any:
    # bool is an int in Python; a seat count of `true` is a mistake, not 1.
    if isinstance(value, bool) and kind in (int, (int,)):
        raise ConfigError(origin, key, f"must be {what}, not a boolean")
    if not isinstance(value, kind):
        raise ConfigError(origin, key, f"must be {what}, got {type(value).__name__}")
    return value


def _string_list(value: Any, origin: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    _expect(value, list, origin, key, "a string or a list of strings")
    for i, item in enumerate(value):
        _expect(item, str, origin, f"{key}[{i}]", "a string")
    return tuple(value)


def parse_mapping(data: Mapping[str, Any], origin: str) -> RoleMapping:
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(origin, key, f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")

    modules = _parse_modules(data, origin)
    roles: dict[str, Role] = {}
    raw_roles = _expect(data.get("roles", {}), dict, origin, "roles", "a table of roles")
    if not raw_roles:
        raise ConfigError(origin, "roles", "no roles defined")
    for role_id, spec in raw_roles.items():
        where = f"roles.{role_id}"
        _expect(spec, dict, origin, where, "a table")
        for key in spec:
            if key not in _ROLE_KEYS:
                raise ConfigError(origin, f"{where}.{key}", "unknown key")
        max_holders = spec.get("max_holders")
        if max_holders is not None:
            _expect(max_holders, int, origin, f"{where}.max_holders", "a whole number")
            if max_holders < 0:
                raise ConfigError(origin, f"{where}.max_holders", "must not be negative")
        module = spec.get("module")
        if module is not None:
            _expect(module, str, origin, f"{where}.module", "a module id of [modules]")
            if module not in modules:
                known = ", ".join(modules) or "none"
                raise ConfigError(
                    origin, f"{where}.module", f'module "{module}" is not defined in [modules] (defined: {known})'
                )
        all_modules = _expect(spec.get("all_modules", False), bool, origin, f"{where}.all_modules", "true or false")
        if all_modules and module is not None:
            raise ConfigError(origin, f"{where}.all_modules", "a role has module or all_modules = true, not both")
        if all_modules and not modules:
            raise ConfigError(origin, f"{where}.all_modules", "no [modules] are defined")
        roles[role_id] = Role(
            id=role_id,
            title=_expect(spec.get("title", role_id), str, origin, f"{where}.title", "a string"),
            billable=_expect(spec.get("billable", True), bool, origin, f"{where}.billable", "true or false"),
            external_allowed=_expect(
                spec.get("external_allowed", False), bool, origin, f"{where}.external_allowed", "true or false"
            ),
            max_holders=max_holders,
            module=module,
            all_modules=all_modules,
        )

    rules: list[Rule] = []
    raw_rules = _expect(data.get("rules", []), list, origin, "rules", "an array of [[rules]] tables")
    for i, spec in enumerate(raw_rules):
        where = f"rules[{i + 1}]"
        rule = _parse_matcher(spec, origin, where, i + 1, {"roles"})
        if "roles" not in spec:
            raise ConfigError(origin, f"{where}.roles", "missing: which roles does this rule grant?")
        role_ids = _string_list(spec["roles"], origin, f"{where}.roles")
        for role_id in role_ids:
            if role_id not in roles:
                raise ConfigError(origin, f"{where}.roles", f'role "{role_id}" is not defined in [roles]')
        rules.append(dataclasses.replace(rule, roles=role_ids))

    login_hours = _parse_login_hours(data.get("login_hours", []), origin)

    user_type = _expect(data.get("user_type", {}), dict, origin, "user_type", "a table")
    for key in user_type:
        if key not in _USER_TYPE_KEYS:
            raise ConfigError(origin, f"user_type.{key}", "unknown key")
    external_groups = []
    for i, group in enumerate(_string_list(user_type.get("external_groups", []), origin, "user_type.external_groups")):
        try:
            external_groups.append(normalize_dn(group) if "=" in group else group.lower())
        except ValueError:
            raise ConfigError(
                origin, f"user_type.external_groups[{i}]", f"not a distinguished name: {group!r}"
            ) from None
    external_attribute = None
    if "external_attribute" in user_type:
        spec = _expect(user_type["external_attribute"], dict, origin, "user_type.external_attribute", "a table")
        for key in spec:
            if key not in {"attribute", "equals"}:
                raise ConfigError(origin, f"user_type.external_attribute.{key}", "unknown key")
        if "attribute" not in spec or "equals" not in spec:
            raise ConfigError(origin, "user_type.external_attribute", "needs attribute and equals")
        external_attribute = ExternalAttribute(
            attribute=_expect(
                spec["attribute"], str, origin, "user_type.external_attribute.attribute", "a string"
            ).lower(),
            equals=_string_list(spec["equals"], origin, "user_type.external_attribute.equals"),
        )
    expires = user_type.get("external_expires_after_days")
    if expires is not None:
        _expect(expires, int, origin, "user_type.external_expires_after_days", "a whole number of days")
        if expires <= 0:
            raise ConfigError(origin, "user_type.external_expires_after_days", "must be at least 1")
    return RoleMapping(
        roles=roles,
        rules=tuple(rules),
        external_groups=tuple(external_groups),
        external_attribute=external_attribute,
        external_expires_after_days=expires,
        login_hours=login_hours,
        origin=origin,
        modules=modules,
    )


def _parse_matcher(spec: Any, origin: str, where: str, index: int, other_keys: set[str], section: str = "rule") -> Rule:
    """The matcher of a `[[rules]]` or `[[login_hours]]` table: exactly one of the rule kinds
    (with `equals` for `attribute`), besides the table's `other_keys`."""
    _expect(spec, dict, origin, where, "a table")
    kinds = [k for k in _RULE_KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(origin, where, f"needs exactly one of {', '.join(_RULE_KINDS)} (found {len(kinds)})")
    kind = kinds[0]
    allowed = {kind} | other_keys | ({"equals"} if kind == "attribute" else set())
    for key in spec:
        if key not in allowed:
            whose = f"a {kind} rule" if section == "rule" else f"a [[{section}]] entry"
            raise ConfigError(origin, f"{where}.{key}", f"unknown key for {whose}")
    value = _expect(spec[kind], str, origin, f"{where}.{kind}", "a string")
    pattern = None
    equals: tuple[str, ...] = ()
    if kind == "group_pattern":
        try:
            pattern = re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(origin, f"{where}.group_pattern", f"invalid regular expression: {exc}") from None
    elif kind == "attribute":
        if "equals" not in spec:
            raise ConfigError(origin, f"{where}.equals", "missing: the value the attribute must have")
        equals = _string_list(spec["equals"], origin, f"{where}.equals")
        value = value.lower()
    elif kind == "group":
        try:
            value = normalize_dn(value)
        except ValueError:
            raise ConfigError(origin, f"{where}.group", f"not a distinguished name: {value!r}") from None
    return Rule(index=index, kind=kind, value=value, roles=(), equals=equals, pattern=pattern, section=section)


def _parse_login_hours(raw: Any, origin: str) -> tuple[LoginHoursEntry, ...]:
    entries = []
    for i, spec in enumerate(_expect(raw, list, origin, "login_hours", "an array of [[login_hours]] tables")):
        where = f"login_hours[{i + 1}]"
        matcher = _parse_matcher(spec, origin, where, i + 1, _LOGIN_HOURS_KEYS, section="login_hours")
        for key, example in (("hours", "07:00-19:00"), ("time_zone", "Europe/Paris")):
            if key not in spec:
                raise ConfigError(origin, f"{where}.{key}", f"missing (such as {example!r})")
        values: dict[str, Any] = {}
        for key, parse in (("days", parse_days), ("hours", parse_hours), ("time_zone", parse_time_zone)):
            if key not in spec:
                continue  # days: every day
            text = _expect(spec[key], str, origin, f"{where}.{key}", "a string")
            try:
                values[key] = parse(text)
            except ValueError as exc:
                raise ConfigError(origin, f"{where}.{key}", str(exc)) from None
        start, end = values["hours"]
        window = Window(days=values.get("days", tuple(range(7))), start=start, end=end, time_zone=values["time_zone"])
        entries.append(LoginHoursEntry(matcher=matcher, window=window))
    return tuple(entries)


def _parse_modules(data: Mapping[str, Any], origin: str) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    raw = _expect(data.get("modules", {}), dict, origin, "modules", "a table of modules")
    for module_id, spec in raw.items():
        where = f"modules.{module_id}"
        # The id is written into reasons (`seat_limit:<module>`), JSON keys and metric labels.
        if not _MODULE_ID.fullmatch(module_id):
            raise ConfigError(origin, where, "a module id is letters, digits, '_' and '-' only")
        _expect(spec, dict, origin, where, "a table")
        for key in spec:
            if key not in _MODULE_KEYS:
                expected = ", ".join(sorted(_MODULE_KEYS))
                raise ConfigError(origin, f"{where}.{key}", f"unknown key (expected one of {expected})")
        limit = spec.get("seat_limit")
        if limit is not None:
            _expect(limit, int, origin, f"{where}.seat_limit", "a whole number")
            if limit < 0:
                raise ConfigError(origin, f"{where}.seat_limit", "must not be negative")
        title = _expect(spec.get("title", module_id), str, origin, f"{where}.title", "a string")
        modules[module_id] = Module(id=module_id, title=title, seat_limit=limit)
    return modules


def load_mapping(path: Path) -> RoleMapping:
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(origin, None, f"cannot read mapping file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(origin, None, "not UTF-8 text") from None
    return mapping_from_text(text, origin)


def mapping_from_text(text: str, origin: str) -> RoleMapping:
    """A mapping file's text (a file, or one pasted in the console's preview) with the same checks
    and the same one-line errors as at start-up."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(origin, None, f"invalid TOML: {exc}") from None
    return parse_mapping(data, origin)


@dataclass(frozen=True, slots=True)
class UnseenAttribute:
    """An attribute the mapping reads that no person of a complete read has."""

    name: str  # as the mapping writes it, lower-cased
    used_by: tuple[str, ...]  # "rule 5: attribute ... = ...", "[user_type] external_attribute"

    def describe(self) -> str:
        return (
            f"no person read has the attribute {self.name!r}, so {'; '.join(self.used_by)} "
            f"{'matches' if len(self.used_by) == 1 else 'match'} nobody. Is it spelled as the source spells it, "
            "and may the bind account read it? (An ACL that hides an attribute looks exactly like this.)"
        )


def unseen_attributes(mapping: RoleMapping, users: Iterable[SourceUser]) -> list[UnseenAttribute]:
    """The attributes `mapping` reads that none of `users` has (with a value).

    Meant for a complete read of a source: there, an attribute nobody has usually means the source
    never delivered it (not requested, hidden by an ACL, misspelled), not that nobody has one.
    """
    wanted = list(mapping.attribute_names())
    seen = False
    for user in users:
        if not wanted:
            return []
        seen = True
        wanted = [name for name in wanted if not _attribute_values(user, name)]
    if not seen:
        return []  # of an empty read nothing can be said
    out = []
    for name in wanted:
        used_by = [rule.describe() for rule in mapping.rules if rule.kind == "attribute" and rule.value == name]
        if mapping.external_attribute is not None and mapping.external_attribute.attribute == name:
            used_by.append("[user_type] external_attribute")
        out.append(UnseenAttribute(name=name, used_by=tuple(used_by)))
    return out


def _attribute_values(user: SourceUser, name: str) -> tuple[str, ...]:
    # SCIM paths such as `urn:...:enterprise:2.0:User:department` mean the same as `department`.
    key = name.lower()
    values = user.attributes.get(key)
    if values is None and ":" in key:
        values = user.attributes.get(key.rsplit(":", 1)[1])
    return values or ()


def _matches_any(values: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    wanted_folded = {w.casefold() for w in wanted}
    return any(v.casefold() in wanted_folded for v in values)


def _group_matches(rule: Rule, group: GroupRef) -> bool:
    if rule.kind == "group":
        return group.dn is not None and normalize_dn(group.dn) == rule.value
    if rule.kind == "group_name":
        return group.name.casefold() == rule.value.casefold()
    assert rule.pattern is not None
    return rule.pattern.search(group.name) is not None


def names_group(mapping: RoleMapping, group: GroupRef) -> bool:
    """Whether the mapping looks at membership of `group`: a rule, a `[[login_hours]]` entry or
    `[user_type] external_groups` names it (by DN, by name or by pattern). Joining or leaving
    groups it names none of (directly or through nesting) changes nobody's roles, user type or
    login hours: those are all a person's groups are read for."""
    external = mapping.external_groups
    if external and ((group.dn and normalize_dn(group.dn) in external) or group.name.lower() in external):
        return True
    matchers = (*mapping.rules, *(entry.matcher for entry in mapping.login_hours))
    return any(m.kind in ("group", "group_name", "group_pattern") and _group_matches(m, group) for m in matchers)


def decide_user_type(
    user: SourceUser, groups: tuple[GroupRef, ...], mapping: RoleMapping
) -> Literal["internal", "external"]:
    if mapping.external_groups:
        for group in groups:
            if (group.dn and normalize_dn(group.dn) in mapping.external_groups) or (
                group.name.lower() in mapping.external_groups
            ):
                return "external"
    attr = mapping.external_attribute
    if attr and _matches_any(_attribute_values(user, attr.attribute), attr.equals):
        return "external"
    return "internal"


def rule_matches(rule: Rule, user: SourceUser, groups: tuple[GroupRef, ...]) -> str | None:
    """Why `rule` applies to this person (for explanations), or None when it does not."""
    if rule.kind in ("group", "group_name", "group_pattern"):
        hit = next((g for g in groups if _group_matches(rule, g)), None)
        return None if hit is None else f"{rule.describe()} (member of {hit.dn or hit.name})"
    if rule.kind == "attribute":
        return rule.describe() if _matches_any(_attribute_values(user, rule.value), rule.equals) else None
    return rule.describe() if _matches_any(user.scim_roles, (rule.value,)) else None


def decide_roles(user: SourceUser, groups: tuple[GroupRef, ...], mapping: RoleMapping) -> RoleDecision:
    """Roles the rules grant this person, minus those their user type may not hold."""
    user_type = decide_user_type(user, groups, mapping)
    granted: dict[str, str] = {}
    for rule in mapping.rules:
        because = rule_matches(rule, user, groups)
        if because is None:
            continue
        for role_id in rule.roles:
            granted.setdefault(role_id, because)
    denied: dict[str, str] = {}
    if user_type == "external":
        for role_id in list(granted):
            if not mapping.roles[role_id].external_allowed:
                denied[role_id] = "external_not_allowed"
                del granted[role_id]
    return RoleDecision(user_type=user_type, granted=granted, denied=denied)


def login_hours_of(user: SourceUser, groups: tuple[GroupRef, ...], mapping: RoleMapping) -> LoginHours | None:
    """When this person may sign in (bridge/core/login_hours.py): the windows of every
    `[[login_hours]]` entry that matches them, and AD's `logonHours` when the source read one
    that restricts. None: no restriction.

    An unreadable `logonhours` value is taken as no restriction: the directory source only hands
    over 21-byte values, so this is a value some other source made up, not IT's decision.
    """
    windows = tuple(
        dict.fromkeys(e.window for e in mapping.login_hours if rule_matches(e.matcher, user, groups) is not None)
    )
    logon = None
    raw = user.attributes.get(LOGON_HOURS_ATTRIBUTE)
    if raw:
        try:
            logon = logon_hours_from_hex(raw[0])
        except ValueError:
            logon = None
    if not windows and logon is None:
        return None
    return LoginHours(mapping=windows or None, logon_hours=logon)


def mapping_fingerprint(mapping: RoleMapping, **planning: object) -> str:
    """A digest of everything in `mapping` (and the tenant's other `planning` inputs, such as its
    seat limit) that decides a plan: equal fingerprints plan alike.

    Made from the parsed mapping, not the file's bytes, so a comment or a reordered table does not
    make bridge re-plan a tenant; the file's path (`origin`) is left out for the same reason. A new
    field of Role, Rule or RoleMapping is part of it without a change here.
    """
    payload = {"mapping": _canonical(mapping), "planning": _canonical(dict(planning))}
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def _canonical(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "origin"}
    if isinstance(value, re.Pattern):
        return {"pattern": value.pattern, "flags": value.flags}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
