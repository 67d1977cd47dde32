"""SCIM filters translated to SQLAlchemy, over the tree `bridge.scim.filter_syntax` parses.

scim2-filter-parser's own SQL transpiler drops parts of complex filters and wraps columns in
UPPER(), which no plain index serves. Each attribute path resolves here to an indexed column
(case-insensitive attributes compare a casefolded `*_norm` column with a casefolded value), an
EXISTS over a child table (emails, memberships, role grants) or a JSON path into the stored
resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scim2_filter_parser import ast
from sqlalchemy import ColumnElement, and_, case, false, func, not_, or_, select, true
from sqlalchemy.sql.expression import ColumnClause

from bridge.core.lifecycle import Status
from bridge.scim.errors import invalid_filter
from bridge.scim.filter_syntax import (
    OPERATORS,
    Quoted,
    parse,
)
from bridge.scim.schema import ACCOUNT, ENTERPRISE, GROUP, USER
from bridge.store.tables import Account, Identity, Membership, RoleGrant, ScimEmail

identities = Identity.__table__
accounts = Account.__table__
emails = ScimEmail.__table__
memberships = Membership.__table__
role_grants = RoleGrant.__table__


# ---- attribute targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A single-valued attribute stored in a column. `folded`: compare casefolded values (the
    column holds the casefolded form); `lower`: case-insensitive without a folded column."""

    column: Any
    type: str = "string"
    folded: bool = False
    lower: bool = False


@dataclass(frozen=True)
class Child:
    """A multi-valued attribute in a child table, matched as `outer IN (SELECT inner FROM table
    WHERE scope AND condition)`: an uncorrelated semi-join that starts from the child table's
    index (an EXISTS correlated per outer row made SQLite scan every identity of the tenant).
    `subs` maps sub-attributes to Columns; `default` is the sub-attribute a bare path means."""

    table: Any
    outer: Any
    inner: Any
    scope: Callable[[int], list[ColumnElement[bool]]]
    subs: dict[str, Column]
    default: str = "value"

    def having(self, tenant_id: int, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return self.outer.in_(select(self.inner).where(*self.scope(tenant_id), condition))  # type: ignore[no-any-return]


Target = Column | Child


def _membership_scope(tenant_id: int) -> list[ColumnElement[bool]]:
    return [memberships.c.tenant_id == tenant_id, memberships.c.source == "scim"]


def _user_targets() -> dict[str, Target]:
    i, a = identities.c, accounts.c
    email_subs = {
        "value": Column(emails.c.value_norm, folded=True),
        "type": Column(emails.c.type_norm, folded=True),
        "primary": Column(emails.c.primary, "boolean"),
    }

    def json(*path: str) -> Column:
        return Column(i.resource[path].as_string(), lower=True)

    ent = ENTERPRISE.casefold()
    targets: dict[str, Target] = {
        "id": Column(i.anchor),
        "externalid": Column(i.external_id),
        "username": Column(i.name_norm, folded=True),
        "displayname": Column(i.display_name, lower=True),
        "name.givenname": Column(i.given_name, lower=True),
        "name.familyname": Column(i.family_name, lower=True),
        "name.formatted": json("name", "formatted"),
        "name.middlename": json("name", "middleName"),
        "nickname": json("nickName"),
        "title": json("title"),
        "usertype": json("userType"),
        "locale": json("locale"),
        "timezone": json("timezone"),
        "preferredlanguage": Column(i.preferred_language, lower=True),
        # As rendered: an archived account is not active, whatever the IdP last sent.
        "active": Column(case((a.status == Status.ARCHIVED.value, false()), else_=i.active), "boolean"),
        "meta.created": Column(i.created_at, "dateTime"),
        "meta.lastmodified": Column(i.updated_at, "dateTime"),
        "emails": Child(emails, i.id, emails.c.identity_id, lambda t: [emails.c.tenant_id == t], email_subs),
        "groups": Child(
            memberships,
            i.anchor,
            memberships.c.member_anchor,
            _membership_scope,
            {"value": Column(memberships.c.group_anchor)},
        ),
        f"{ent}:employeenumber": json(ENTERPRISE, "employeeNumber"),
        f"{ent}:costcenter": json(ENTERPRISE, "costCenter"),
        f"{ent}:organization": json(ENTERPRISE, "organization"),
        f"{ent}:division": json(ENTERPRISE, "division"),
        f"{ent}:department": json(ENTERPRISE, "department"),
        # Entra's manager check filters `manager eq "<id>"` (use-scim doc, Example 4): a complex
        # attribute compared directly means its value (RFC 7644 3.4.2.2 leaves this open).
        f"{ent}:manager": Column(i.resource[(ENTERPRISE, "manager", "value")].as_string()),
        f"{ent}:manager.value": Column(i.resource[(ENTERPRISE, "manager", "value")].as_string()),
        f"{ACCOUNT.casefold()}:status": Column(a.status),
        f"{ACCOUNT.casefold()}:usertype": Column(a.user_type),
        f"{ACCOUNT.casefold()}:roles": Child(
            role_grants,
            i.id,
            role_grants.c.account_id,
            lambda t: [role_grants.c.tenant_id == t],
            {"value": Column(role_grants.c.role)},
        ),
    }
    # Unqualified enterprise attributes are unambiguous (no core attribute has these names).
    for key in ("employeenumber", "costcenter", "organization", "division", "department", "manager", "manager.value"):
        targets.setdefault(key, targets[f"{ent}:{key}"])
    return targets


def _group_targets() -> dict[str, Target]:
    i = identities.c
    return {
        "id": Column(i.anchor),
        "externalid": Column(i.external_id),
        "displayname": Column(i.name_norm, folded=True),
        "meta.created": Column(i.created_at, "dateTime"),
        "meta.lastmodified": Column(i.updated_at, "dateTime"),
        "members": Child(
            memberships,
            i.anchor,
            memberships.c.group_anchor,
            _membership_scope,
            {"value": Column(memberships.c.member_anchor)},
        ),
    }


USER_TARGETS = _user_targets()
GROUP_TARGETS = _group_targets()
_CORE = {"User": USER.casefold(), "Group": GROUP.casefold()}
RESOURCE_TYPES_CONSTANT = {"meta.resourcetype"}


# ---- translation ---------------------------------------------------------------------------


class Transpiler:
    """AST -> SQLAlchemy boolean expression over `identities` (joined with `accounts` for Users)."""

    def __init__(self, resource_type: str, tenant_id: int) -> None:
        self.resource_type = resource_type
        self.tenant_id = tenant_id
        self.semi_joins = 0  # how many child-table subqueries the filter uses
        self.targets = USER_TARGETS if resource_type == "User" else GROUP_TARGETS

    def translate(self, tree: ast.Filter) -> ColumnElement[bool]:
        return self._filter(tree, None)

    def _semi(self, child: Child, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        self.semi_joins += 1
        return child.having(self.tenant_id, condition)

    # -- structure -------------------------------------------------------------------------
    def _filter(self, node: Any, scope: Child | None) -> ColumnElement[bool]:
        if isinstance(node, ast.Filter):
            if node.namespace is not None:
                # valuePath: attr[filter] — the inner filter applies to one value of `attr`.
                if scope is not None:
                    raise invalid_filter("nested value paths are not allowed")
                child = self._child(node.namespace)
                inner = self._filter(node.expr, child)
                expr: ColumnElement[bool] = self._semi(child, inner)
            else:
                expr = self._filter(node.expr, scope)
            return not_(expr) if node.negated else expr
        if isinstance(node, ast.LogExpr):
            left, right = self._filter(node.expr1, scope), self._filter(node.expr2, scope)
            return and_(left, right) if node.op.lower() == "and" else or_(left, right)
        if isinstance(node, ast.AttrExpr):
            return self._attr_expr(node, scope)
        raise invalid_filter("invalid filter")

    def _path_key(self, path: ast.AttrPath) -> str:
        if not isinstance(path.attr_name, str):
            raise invalid_filter("invalid attribute path")
        name = path.attr_name
        if path.sub_attr is not None:
            name = f"{name}.{path.sub_attr.value}"
        key = name.casefold()
        if path.uri:
            uri = path.uri.casefold()
            if uri != _CORE[self.resource_type]:
                key = f"{uri}:{key}"
        return key

    def _child(self, path: ast.AttrPath) -> Child:
        key = self._path_key(path)
        target = self.targets.get(key)
        if not isinstance(target, Child):
            raise invalid_filter(f'"{key}" is not a multi-valued attribute that can be filtered with [ ]')
        return target

    def _attr_expr(self, node: ast.AttrExpr, scope: Child | None) -> ColumnElement[bool]:
        op = node.value.lower()
        path = node.attr_path
        value = node.comp_value.value if node.comp_value is not None else None
        if isinstance(path.attr_name, ast.Filter):
            # Entra's emails[type eq "work"].value eq "x": the parser moved `.value` onto the
            # namespace; filter one value on both the bracket and the comparison.
            inner_filter = path.attr_name
            namespace = inner_filter.namespace
            sub = namespace.sub_attr.value if namespace.sub_attr is not None else None
            child = self._child(ast.AttrPath(namespace.attr_name, None, namespace.uri))
            inner = self._filter(inner_filter.expr, child)
            column = self._child_sub(child, sub)
            cond = and_(inner, self._compare(column, op, value, self._describe(namespace)))
            return self._semi(child, cond)
        if scope is not None:
            if path.uri or path.sub_attr is not None:
                raise invalid_filter("inside [ ] use sub-attribute names only")
            column = self._child_sub(scope, path.attr_name)
            return self._compare(column, op, value, path.attr_name)
        key = self._path_key(path)
        if key in RESOURCE_TYPES_CONSTANT:
            if op == "pr":
                return true()
            matches = isinstance(value, str) and value.casefold() == self.resource_type.casefold()
            return true() if (matches == (op == "eq")) and op in ("eq", "ne") else false()
        target = self.targets.get(key)
        if target is None and "." in key:
            # `emails.value`, `members.value`: a sub-attribute of a multi-valued attribute.
            parent, _, sub = key.rpartition(".")
            parent_target = self.targets.get(parent)
            if isinstance(parent_target, Child):
                column = self._child_sub(parent_target, sub)
                cond = self._compare(column, op, value, key)
                return self._semi(parent_target, cond)
        if target is None:
            raise invalid_filter(f'unknown or unfilterable attribute "{self._describe(path)}"')
        if isinstance(target, Child):
            column = self._child_sub(target, target.default)
            cond = self._compare(column, op, value, key)
            return self._semi(target, cond)
        return self._compare(target, op, value, key)

    @staticmethod
    def _describe(path: ast.AttrPath) -> str:
        name = path.attr_name if isinstance(path.attr_name, str) else "?"
        if path.sub_attr is not None:
            name = f"{name}.{path.sub_attr.value}"
        return f"{path.uri}:{name}" if path.uri else name

    @staticmethod
    def _child_sub(child: Child, sub: str | None) -> Column:
        column = child.subs.get((sub or child.default).casefold())
        if column is None:
            raise invalid_filter(f'sub-attribute "{sub}" cannot be filtered')
        return column

    # -- comparisons -----------------------------------------------------------------------
    def _compare(self, target: Column, op: str, value: Any, name: str) -> ColumnElement[bool]:
        col = target.column
        if op not in OPERATORS:
            raise invalid_filter(f'unsupported operator "{op}"')
        if op == "pr":
            if target.type == "string":
                return and_(col.is_not(None), col != "")
            return col.is_not(None)
        if value == "null" and not isinstance(value, Quoted):
            if op == "eq":
                return col.is_(None)
            if op == "ne":
                return col.is_not(None)
            raise invalid_filter(f'"{op} null" is not a valid comparison')
        if target.type == "boolean":
            flag = _boolean(value, name)
            if op not in ("eq", "ne"):
                # RFC 7644 3.4.2.2: gt/ge/lt/le on booleans SHALL fail with invalidFilter.
                raise invalid_filter(f'"{op}" cannot compare the boolean "{name}"')
            return col.is_not(None) & (col == flag if op == "eq" else col != flag)
        if target.type == "dateTime":
            if not isinstance(value, Quoted):
                raise invalid_filter(f'"{name}" needs a quoted date-time value')
            moment = _datetime(value, name)
            if op in ("co", "sw", "ew"):
                raise invalid_filter(f'"{op}" cannot compare the date-time "{name}"')
            return _ordered(col, op, moment)
        if not isinstance(value, str):
            raise invalid_filter(f'"{name}" needs a quoted string value')
        text = str(value)
        if target.folded:
            text = text.casefold()
        elif target.lower:
            col = func.lower(col)
            text = text.lower()
        if op in ("co", "sw", "ew"):
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = {"co": f"%{escaped}%", "sw": f"{escaped}%", "ew": f"%{escaped}"}[op]
            return col.is_not(None) & col.like(pattern, escape="\\")
        if op == "ne":
            return or_(col.is_(None), col != text)
        return col.is_not(None) & _ordered(col, op, text)


def _ordered(col: ColumnClause[Any] | Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "eq":
        return col == value  # type: ignore[no-any-return]
    if op == "ne":
        return col != value  # type: ignore[no-any-return]
    if op == "gt":
        return col > value  # type: ignore[no-any-return]
    if op == "ge":
        return col >= value  # type: ignore[no-any-return]
    if op == "lt":
        return col < value  # type: ignore[no-any-return]
    return col <= value  # type: ignore[no-any-return]


def _boolean(value: Any, name: str) -> bool:
    # Unquoted true/false per RFC; Entra's default mode also sends "True"/"False" strings for
    # booleans in PATCH, so the quoted forms are accepted here as well.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid_filter(f'"{name}" is a boolean: compare it with true or false')


def _datetime(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_filter(f'"{value}" is not an ISO 8601 date-time for "{name}"') from None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment


def to_sql(resource_type: str, text: str, tenant_id: int) -> ColumnElement[bool]:
    """The WHERE clause for a filter on one tenant's Users or Groups; raises ScimError(400,
    invalidFilter). The tenant scopes the child-table subqueries so they use their indexes."""
    return translate(resource_type, text, tenant_id)[0]


def translate(resource_type: str, text: str, tenant_id: int) -> tuple[ColumnElement[bool], bool]:
    """The WHERE clause, and whether it selects through child-table subqueries (emails,
    memberships, roles), which should then drive the query."""
    transpiler = Transpiler(resource_type, tenant_id)
    return transpiler.translate(parse(text)), transpiler.semi_joins > 0
