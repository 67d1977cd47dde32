"""PATCH (RFC 7644 3.5.2) on the stored form of a resource; pure, no I/O.

A User's stored form is small, so operations apply to a copy of it and the result is written
whole. A Group's `members` are not in the stored form: operations on them become `MemberOp`s
that the store carries out row by row, so one member added to a 10,000-member group touches one
row, not the group.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from scim2_filter_parser import ast

from bridge.scim import quirks
from bridge.scim.errors import ScimError, invalid_path, invalid_syntax, invalid_value, mutability, no_target
from bridge.scim.filter_syntax import comparisons
from bridge.scim.patch_path import Path, matches, parse_path
from bridge.scim.resources import attribute_value, canonical
from bridge.scim.schema import PATCH_OP, Attr, ResourceType

MAX_OPERATIONS = 1000
# Value-filter comparisons in one request, all operations together (docs/scim.md): bounds the
# parse and match work one client can ask for in one request.
MAX_FILTER_TERMS = 1000


@dataclass(frozen=True)
class MemberOp:
    kind: str  # "add", "remove", "remove_all", "replace", "remove_filter"
    ids: tuple[str, ...] = ()
    filter: ast.Filter | None = None


@dataclass
class PatchResult:
    doc: dict[str, Any]
    members: list[MemberOp] = field(default_factory=list)


# ---- applying operations -------------------------------------------------------------------


def operations(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise invalid_syntax("the request body must be a JSON object")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or PATCH_OP not in schemas:
        raise invalid_syntax(f'"schemas" must be ["{PATCH_OP}"]')
    ops = next((v for k, v in body.items() if k.casefold() == "operations"), None)
    if not isinstance(ops, list) or not ops:
        raise invalid_syntax('"Operations" must be a non-empty list')
    if len(ops) > MAX_OPERATIONS:
        raise invalid_value(f"at most {MAX_OPERATIONS} operations per request")
    out = []
    for op in ops:
        if not isinstance(op, dict):
            raise invalid_syntax("each operation must be an object")
        fields = {k.casefold(): v for k, v in op.items()}
        kind = quirks.patch_op(fields.get("op"))
        if kind not in ("add", "remove", "replace"):
            raise invalid_syntax(f'unknown operation "{fields.get("op")}" (add, remove or replace)')
        path = fields.get("path")
        if path is not None and not isinstance(path, str):
            raise invalid_path('"path" must be a string')
        if path == "":
            path = None
        out.append({"op": kind, "path": path, "value": fields.get("value"), "has_value": "value" in fields})
    return out


@dataclass(frozen=True)
class PreparedPatch:
    """A PATCH body parsed and checked (operations, paths, value filters), before the write
    transaction opens: parsing 1,000 value filters takes a second or more, which must not be
    spent holding SQLite's write lock (issue 13, item 6)."""

    ops: list[dict[str, Any]]


def prepare_patch(rt: ResourceType, body: Any) -> PreparedPatch:
    ops = operations(body)
    terms = 0
    for op in ops:
        if op["path"] is None:
            continue
        path = op["parsed"] = parse_path(rt, op["path"])
        if path.filter is not None:
            terms += comparisons(path.filter)
            if terms > MAX_FILTER_TERMS:
                raise ScimError(400, f"at most {MAX_FILTER_TERMS} value-filter comparisons per request", "tooMany")
    return PreparedPatch(ops)


def apply_patch(rt: ResourceType, stored: dict[str, Any], body: Any) -> PatchResult:
    prepared = body if isinstance(body, PreparedPatch) else prepare_patch(rt, body)
    result = PatchResult(doc=copy.deepcopy(stored))
    for op in prepared.ops:
        kind, path, value = op["op"], op["path"], op["value"]
        if path is None:
            if kind == "remove":
                raise no_target('"remove" needs a path (RFC 7644 3.5.2.2)')
            if not isinstance(value, dict):
                raise invalid_value(f'"{kind}" without a path needs an object of attributes')
            for key, item in value.items():
                if quirks.ignorable_patch_key(key):
                    continue
                schema = rt.schema_for(quirks.schema_urn(key)) if ":" in key else None
                if schema is not None and schema is not rt.schema and isinstance(item, dict):
                    for sub_key, sub_item in item.items():
                        _apply(
                            rt,
                            result,
                            kind,
                            parse_path(rt, f"{schema.id}:{sub_key}"),
                            sub_item,
                            True,
                            inside_value=True,
                        )
                    continue
                # Entra (aadOptscim062020) keys the value by path:
                # {"name.givenName": ..., "urn:...:enterprise:2.0:User:employeeNumber": ...}
                _apply(rt, result, kind, parse_path(rt, key), item, True, inside_value=True)
            continue
        _apply(rt, result, kind, op["parsed"], value, op["has_value"])
    result.doc = canonical(result.doc, rt)
    return result


def _apply_extension(rt: ResourceType, result: PatchResult, kind: str, path: Path, value: Any) -> None:
    """A path naming a whole extension: its attributes are the keys of the value."""
    assert path.urn is not None
    if kind == "remove":
        result.doc.pop(path.urn, None)
        return
    if not isinstance(value, dict):
        raise invalid_value(f'"{path.text}" needs an object of its attributes')
    if kind == "replace":
        result.doc.pop(path.urn, None)
    for key, item in value.items():
        if quirks.ignorable_patch_key(key):
            continue
        _apply(rt, result, kind, parse_path(rt, f"{path.urn}:{key}"), item, True, inside_value=True)


def _holder(doc: dict[str, Any], path: Path, create: bool) -> dict[str, Any] | None:
    if path.urn is None:
        return doc
    if create:
        return doc.setdefault(path.urn, {})  # type: ignore[no-any-return]
    holder = doc.get(path.urn)
    return holder if isinstance(holder, dict) else None


def _apply(
    rt: ResourceType,
    result: PatchResult,
    kind: str,
    path: Path,
    value: Any,
    has_value: bool,
    *,
    inside_value: bool = False,
) -> None:
    attr = path.attr
    if attr is None:
        _apply_extension(rt, result, kind, path, value)
        return
    if inside_value and attr.mutability == "readOnly":
        return  # read-only attributes inside a value object are ignored (RFC 7644 3.3)
    if attr.mutability == "readOnly" or (path.sub is not None and path.sub.mutability == "readOnly"):
        raise mutability(f'"{path.text}" is read-only')
    if rt.name == "Group" and attr.name == "members":
        op = _member_op(kind, path, value)
        last = result.members[-1] if result.members else None
        if op.kind == "remove" and last is not None and last.kind == "remove":
            # One removal for a run of them (Entra with aadOptscim062020 sends one
            # `members[value eq "..."]` operation per member): the same rows, a statement per chunk.
            result.members[-1] = MemberOp("remove", last.ids + op.ids)
        else:
            result.members.append(op)
        return
    if kind != "remove" and not has_value:
        raise invalid_value(f'"{kind}" needs a value')
    doc = result.doc
    if kind == "remove":
        _remove(doc, path, value)
        return
    holder = _holder(doc, path, create=True)
    assert holder is not None
    if path.filter is None and path.sub is None:
        new = attribute_value(attr, value)
        if new is None:
            if kind == "replace" or value in (None, "", []):
                holder.pop(attr.name, None)  # replace with null/"" clears (Entra null-update test)
            return
        if attr.multi:
            if kind == "replace":
                holder[attr.name] = new
            else:
                existing = holder.get(attr.name) or []
                holder[attr.name] = existing + [v for v in new if v not in existing]
        elif attr.type == "complex" and isinstance(holder.get(attr.name), dict) and attr.name != "manager":
            holder[attr.name] = {**holder[attr.name], **new}  # RFC 7644 3.5.2.1/3: sub-attributes merge
        else:
            holder[attr.name] = new
        _one_primary(holder, attr, new)
        return
    if path.filter is None:
        assert path.sub is not None
        if attr.multi:
            raise invalid_path(f'"{path.text}": select the values of "{attr.name}" with a filter')
        sub_value = attribute_value(path.sub, value)
        current = holder.get(attr.name) if isinstance(holder.get(attr.name), dict) else {}
        current = dict(current)
        if sub_value is None:
            current.pop(path.sub.name, None)
        else:
            current[path.sub.name] = sub_value
        holder[attr.name] = current
        return
    # A value path: attr[filter] or attr[filter].sub
    if not attr.multi:
        raise invalid_path(f'"{attr.name}" is single-valued: a value filter selects nothing')
    items = list(holder.get(attr.name) or [])
    hits = [i for i, item in enumerate(items) if matches(path.filter, item, attr)]
    if path.sub is not None:
        sub_value = attribute_value(path.sub, value)
        if not hits:
            created = {k: v for k, v in quirks.filter_equalities(path.filter).items() if attr.child(k)}
            if sub_value is not None:
                created[path.sub.name] = sub_value
            new_item = attribute_value(attr, [created])
            if new_item:
                items.extend(new_item)
        for i in hits:
            updated = dict(items[i])
            if sub_value is None:
                updated.pop(path.sub.name, None)
            else:
                updated[path.sub.name] = sub_value
            items[i] = updated
    else:
        if not hits:
            raise no_target(f'no value of "{attr.name}" matches "{path.text}"')
        replacement = attribute_value(attr, value if isinstance(value, list) else [value]) or []
        for i in hits:
            items[i] = (
                {**items[i], **replacement[0]}
                if kind == "add" and replacement
                else (replacement[0] if replacement else items[i])
            )
    holder[attr.name] = [i for i in items if i]
    if not holder[attr.name]:
        holder.pop(attr.name)


def _one_primary(holder: dict[str, Any], attr: Attr, added: Any) -> None:
    # RFC 7644 3.5.2: a value set primary makes the others non-primary.
    if not attr.multi or not attr.child("primary") or not isinstance(added, list):
        return
    if not any(isinstance(v, dict) and v.get("primary") is True for v in added):
        return
    chosen = next(v for v in reversed(added) if isinstance(v, dict) and v.get("primary") is True)
    holder[attr.name] = [
        {**v, "primary": False}
        if isinstance(v, dict) and v.get("primary") is True and v is not chosen and v != chosen
        else v
        for v in holder[attr.name]
    ]


def _remove(doc: dict[str, Any], path: Path, value: Any) -> None:
    attr = path.attr
    assert attr is not None
    if attr.required and path.filter is None and path.sub is None:
        raise mutability(f'"{attr.name}" is required and cannot be removed')
    holder = _holder(doc, path, create=False)
    if holder is None or attr.name not in holder:
        return  # removing what is not there leaves the resource as it is
    current = holder[attr.name]
    if path.filter is None and path.sub is None:
        if attr.multi and quirks.remove_with_values("remove", path.text, value) and isinstance(current, list):
            wanted = quirks.member_values(value) or []
            keep = [v for v in current if not (isinstance(v, dict) and v.get("value") in wanted)]
            if keep:
                holder[attr.name] = keep
            else:
                holder.pop(attr.name)
            return
        holder.pop(attr.name)
        return
    if path.filter is None:
        assert path.sub is not None
        if isinstance(current, dict):
            current = {k: v for k, v in current.items() if k != path.sub.name}
            if current:
                holder[attr.name] = current
            else:
                holder.pop(attr.name)
        return
    if not attr.multi:
        # manager[value eq "x"] on a single-valued attribute (thomaspoignant/scim-patch#453,
        # MS Q&A 5746233): remove it when it matches.
        if isinstance(current, dict) and matches(path.filter, current, attr):
            holder.pop(attr.name)
        return
    kept = []
    for item in current:
        if not matches(path.filter, item, attr):
            kept.append(item)
        elif path.sub is not None:
            reduced = {k: v for k, v in item.items() if k != path.sub.name}
            if reduced:
                kept.append(reduced)
    if kept:
        holder[attr.name] = kept
    else:
        holder.pop(attr.name)


def _member_op(kind: str, path: Path, value: Any) -> MemberOp:
    if path.sub is not None:
        raise invalid_path(f'"{path.text}": members are added or removed whole')
    if kind == "remove":
        if path.filter is not None:
            ids = _value_equalities(path.filter)
            return MemberOp("remove", tuple(ids)) if ids is not None else MemberOp("remove_filter", filter=path.filter)
        if value not in (None, [], {}):
            ids = quirks.member_values(value)
            if ids is None:
                raise invalid_value('"members" values must be objects with a "value"')
            return MemberOp("remove", tuple(ids))
        return MemberOp("remove_all")
    if path.filter is not None:
        raise invalid_path(f'"{path.text}": {kind} members without a filter')
    ids = quirks.member_values(value if value is not None else [])
    if ids is None:
        raise invalid_value('"members" values must be objects with a "value"')
    return MemberOp("replace" if kind == "replace" else "add", tuple(dict.fromkeys(ids)))


def _value_equalities(node: Any) -> list[str] | None:
    """Ids of `value eq "a" or value eq "b"` (the shape Okta and Entra send), else None."""
    if isinstance(node, ast.Filter) and not node.negated and node.namespace is None:
        return _value_equalities(node.expr)
    if isinstance(node, ast.LogExpr) and node.op.lower() == "or":
        left, right = _value_equalities(node.expr1), _value_equalities(node.expr2)
        return None if left is None or right is None else left + right
    if (
        isinstance(node, ast.AttrExpr)
        and node.value.lower() == "eq"
        and node.attr_path.attr_name == "value"
        and node.attr_path.sub_attr is None
        and node.comp_value is not None
        and isinstance(node.comp_value.value, str)
    ):
        return [node.comp_value.value]
    return None


def check_immutable(rt: ResourceType, before: dict[str, Any], after: dict[str, Any]) -> None:
    """PUT may not change immutable attributes once set (RFC 7643 2.2, RFC 7644 3.5.1)."""
    for attr in rt.schema.attributes:
        if attr.mutability == "immutable" and attr.name in before and before[attr.name] != after.get(attr.name):
            raise mutability(f'"{attr.name}" is immutable')


__all__ = [
    "MemberOp",
    "PatchResult",
    "PreparedPatch",
    "ScimError",
    "apply_patch",
    "check_immutable",
    "parse_path",
    "prepare_patch",
]
