"""Every tolerance for a non-conforming client, in one place, each naming the client and its doc.

These run before the RFC logic (resources.py, patch.py) sees a request, turning each quirk into
the RFC form, so the rest of the code can be strict. Sources are those of
shared/reference/scim-clients.md: MS Learn "Develop and plan provisioning for a SCIM endpoint"
(use-scim), "Known issues ... SCIM 2.0 protocol compliance" (compat), Okta "SCIM 2.0 Protocol
Reference" (okta-ref) and its FAQ.
"""

from __future__ import annotations

from typing import Any

from bridge.scim.schema import ENTERPRISE

# Entra ID, use-scim "Example 2": the create body lists "...:enterprise:2.0User" (colon missing).
_ENTERPRISE_TYPO = "urn:ietf:params:scim:schemas:extension:enterprise:2.0user"

# Entra ID, use-scim "Example 2": `department` and `manager` at the top level of a create body,
# where RFC 7643 4.3 puts them in the enterprise extension.
ENTERPRISE_AT_TOP = frozenset({"employeenumber", "costcenter", "organization", "division", "department", "manager"})


def schema_urn(urn: str) -> str:
    """The schema a URN means, with Entra's typo'd enterprise URN repaired."""
    if urn.casefold() == _ENTERPRISE_TYPO:
        return ENTERPRISE
    return urn


def bearer_token(header: str | None) -> str | None:
    """The token of an Authorization header.

    RFC 6750 says `Bearer <token>` (Entra, use-scim "Secret Token"). Okta's reference examples
    show `Authorization: <credentials>`, and its "HTTP Header" auth mode passes the configured
    value verbatim, so a header with no scheme is taken as the token itself.
    """
    if not header:
        return None
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    if rest:
        return rest.strip() if scheme.lower() == "bearer" else None
    return header


def boolean(value: Any) -> Any:
    """Entra without the aadOptscim062020 flag sends booleans as "True"/"False" strings
    (compat doc, table row "disable"). Other values pass through for type checking."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def patch_op(op: Any) -> Any:
    """Entra capitalises ops ("Add", "Replace", "Remove"; use-scim "General": ops are
    case-insensitive). Lower-cased here; RFC 7644 3.5.2 names them in lower case."""
    return op.lower() if isinstance(op, str) else op


def member_values(value: Any) -> list[str] | None:
    """Member ids from a `members` value list: [{"value": id, "$ref": null, "display": ...}].

    Entra sends "$ref": null (use-scim "Add members"); Okta adds "display" (okta-ref "Membership
    delta"). Both are ignored: the id is what identifies a member.
    """
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            out.append(item["value"])
        elif isinstance(item, str):
            out.append(item)
        else:
            return None
    return out


def remove_with_values(op: str, path: str | None, value: Any) -> bool:
    """Entra's default (legacy) member removal: `{"op": "Remove", "path": "members", "value":
    [{"value": id}]}` (use-scim "Remove members", compat doc row "remove member"). RFC 7644
    3.5.2.2 would remove *all* members for a path without a filter; a server doing that deletes
    the whole group (MicrosoftDocs/azure-docs#30826). With a value list, only those are removed."""
    return op == "remove" and path is not None and value not in (None, [], {})


def manager_value(value: Any) -> Any:
    """Entra sends the manager as a one-element list of {"$ref", "value"} (use-scim "Example 5")
    or as a bare id string (reported: Captain-P-Goldfish/SCIM-SDK#686); RFC 7643 4.3 says a
    complex {"value": id}."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        return {"value": value} if value else None
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None} or None
    return value


def ignorable_patch_key(key: str) -> bool:
    """Okta puts the resource `id` in no-path replace values (okta-ref "Rename"); Entra and
    others echo `schemas`/`meta`. All are read-only and ignored (RFC 7644 3.3 for readOnly)."""
    return key.casefold() in ("id", "schemas", "meta")


def filter_equalities(node: Any) -> dict[str, str]:
    """`type eq "work"` terms of a value filter, to create the value Entra meant by
    `{"op": "Add", "path": "emails[type eq \\"work\\"].value"}` when no work email exists yet
    (MS Q&A 1684621, SCIM-SDK#416: Entra sends Add where the entry may not exist)."""
    from scim2_filter_parser import ast

    out: dict[str, str] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Filter) and not current.negated:
            stack.append(current.expr)
        elif isinstance(current, ast.LogExpr) and current.op.lower() == "and":
            stack.extend((current.expr1, current.expr2))
        elif (
            isinstance(current, ast.AttrExpr)
            and current.value.lower() == "eq"
            and isinstance(current.attr_path.attr_name, str)
            and current.comp_value is not None
        ):
            out[current.attr_path.attr_name] = current.comp_value.value
    return out
