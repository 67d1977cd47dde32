"""PATCH paths (RFC 7644 3.5.2: `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`, with
an optional schema URN) resolved against a resource type's schema, and the value filters
evaluated on stored values (`emails[type eq "work"]`); pure, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from scim2_filter_parser import ast

from bridge.scim import quirks
from bridge.scim.errors import invalid_path
from bridge.scim.filter_syntax import Quoted, parse
from bridge.scim.schema import ENTERPRISE, EXTERNAL_ID, Attr, ResourceType

_PATH = re.compile(r"^([A-Za-z$][\w$-]*)(?:\[(.*)\])?(?:\.([A-Za-z$][\w$-]*))?$", re.DOTALL)


@dataclass(frozen=True)
class Path:
    urn: str | None  # the extension holding the attribute; None for the core schema
    attr: Attr | None  # None: the path is a whole extension (`urn:...:enterprise:2.0:User`)
    filter: ast.Filter | None = None
    sub: Attr | None = None
    text: str = ""


def parse_path(rt: ResourceType, text: str) -> Path:
    if not isinstance(text, str) or not text.strip():
        raise invalid_path("empty path")
    raw = text.strip()
    urn: str | None = None
    rest = raw
    folded = raw.casefold()
    candidates = [(s.id, s) for s in (rt.schema, *rt.extensions)]
    candidates.append(
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0User",
            rt.schema_for(quirks.schema_urn("urn:ietf:params:scim:schemas:extension:enterprise:2.0User")),
        )
    )
    schema = rt.schema
    for prefix, found in candidates:
        if found is not None and found is not rt.schema and folded == prefix.casefold():
            return Path(urn=found.id, attr=None, text=raw)
        if found is not None and folded.startswith(prefix.casefold() + ":"):
            rest = raw[len(prefix) + 1 :]
            schema = found
            urn = None if found is rt.schema else found.id
            break
    else:
        if folded.startswith("urn:"):
            raise invalid_path(f'unknown schema in path "{raw}"')
    match = _PATH.match(rest)
    if match is None:
        raise invalid_path(f'invalid path "{raw}"')
    name, filter_text, sub_name = match.groups()
    if "." in name:
        raise invalid_path(f'invalid path "{raw}"')
    attr = schema.attr(name)
    if attr is None and schema is rt.schema and name.casefold() == "externalid":
        attr = EXTERNAL_ID  # a common attribute (RFC 7643 3.1), in no schema's list
    if attr is None and schema is rt.schema and name.casefold() in quirks.ENTERPRISE_AT_TOP:
        # Entra's manager update uses the bare path "manager" (use-scim "Example 5").
        extension = rt.schema_for(ENTERPRISE)
        if extension is not None:
            schema, urn, attr = extension, extension.id, extension.attr(name)
    if attr is None:
        raise invalid_path(f'unknown attribute "{name}" in path "{raw}"')
    value_filter = parse(filter_text) if filter_text is not None else None
    sub = None
    if sub_name is not None:
        sub = attr.child(sub_name)
        if sub is None:
            raise invalid_path(f'unknown sub-attribute "{sub_name}" in path "{raw}"')
    if value_filter is not None and attr.type != "complex":
        raise invalid_path(f'"{attr.name}" has no sub-attributes to filter on')
    return Path(urn=urn, attr=attr, filter=value_filter, sub=sub, text=raw)


# ---- value filters evaluated on stored values ------------------------------------------------


def matches(node: Any, item: Any, attr: Attr) -> bool:
    if isinstance(node, ast.Filter):
        result = matches(node.expr, item, attr)
        return not result if node.negated else result
    if isinstance(node, ast.LogExpr):
        if node.op.lower() == "and":
            return matches(node.expr1, item, attr) and matches(node.expr2, item, attr)
        return matches(node.expr1, item, attr) or matches(node.expr2, item, attr)
    if isinstance(node, ast.AttrExpr):
        name = node.attr_path.attr_name
        if not isinstance(name, str) or node.attr_path.sub_attr is not None:
            raise invalid_path("a value filter compares sub-attributes only")
        sub = attr.child(name)
        if sub is None:
            raise invalid_path(f'"{attr.name}" has no sub-attribute "{name}"')
        actual = item.get(sub.name) if isinstance(item, dict) else None
        return _compare(node.value.lower(), actual, node.comp_value.value if node.comp_value else None, sub)
    raise invalid_path("invalid value filter")


def _compare(op: str, actual: Any, expected: Any, sub: Attr) -> bool:
    if op == "pr":
        return actual not in (None, "", [], {})
    if expected == "null" and not isinstance(expected, Quoted):
        return (actual is None) == (op == "eq")
    if sub.type == "boolean":
        wanted = quirks.boolean(expected)
        actual = quirks.boolean(actual)
        return (actual == wanted) if op == "eq" else (actual != wanted) if op == "ne" else False
    if actual is None:
        return op == "ne"
    left, right = str(actual), str(expected)
    if not sub.case_exact:
        left, right = left.casefold(), right.casefold()
    return {
        "eq": left == right,
        "ne": left != right,
        "co": right in left,
        "sw": left.startswith(right),
        "ew": left.endswith(right),
        "gt": left > right,
        "ge": left >= right,
        "lt": left < right,
        "le": left <= right,
    }.get(op, False)
