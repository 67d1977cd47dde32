"""SCIM resources in and out: request bodies to the stored form, stored rows to JSON.

The stored form of a resource (`identities.resource`) is what the client sent (values as sent,
Entra's rule), with attribute names in canonical case (RFC 7643 2.1: names are case-insensitive),
null and empty values dropped (RFC 7643 2.5: null is unassigned), and nothing the server owns:
`id`, `meta`, read-only attributes (RFC 7644 3.3: ignored) and `password` (never stored).
Extension attributes live under their schema URN, as on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge import jsonfast
from bridge.core.address import address_problem
from bridge.core.lifecycle import Status
from bridge.core.login_hours import flat_login_hours
from bridge.core.model import SourceUser
from bridge.scim import quirks
from bridge.scim.errors import invalid_syntax, invalid_value
from bridge.scim.schema import ACCOUNT, ENTERPRISE, GROUP, USER, Attr, ResourceType

MAX_LENGTHS = {"userName": 255, "displayName": 255, "externalId": 255}


# ---- input ---------------------------------------------------------------------------------


def check_schemas(body: Any, rt: ResourceType) -> None:
    if not isinstance(body, dict):
        raise invalid_syntax("the request body must be a JSON object")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        raise invalid_syntax('"schemas" must be a list of schema URNs')
    if rt.schema.id.casefold() not in {quirks.schema_urn(s).casefold() for s in schemas}:
        raise invalid_syntax(f'"schemas" must include {rt.schema.id}')


def canonical(body: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    """The stored form of a User or Group body (members of a Group are not part of it)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key.casefold() in ("schemas", "id", "meta"):
            continue
        if key.casefold() == "externalid":
            if value is not None and value != "":
                out["externalId"] = _string(value, "externalId")
            continue
        if ":" in key:
            schema = rt.schema_for(quirks.schema_urn(key))
            if schema is None or schema is rt.schema:
                if schema is rt.schema and isinstance(value, dict):
                    # Core attributes under the core URN: the same as unqualified names.
                    out.update(canonical({**value, "schemas": []}, rt))
                continue  # an unknown extension (Entra's ADSCIM group URN): not ours to keep
            if not isinstance(value, dict):
                raise invalid_value(f'"{key}" must be an object of {schema.name} attributes')
            ext = _complex_attrs(schema.attributes, value, schema.id)
            if ext:
                out.setdefault(schema.id, {}).update(ext)
            continue
        attr = rt.schema.attr(key)
        if attr is None:
            if rt.name == "User" and key.casefold() in quirks.ENTERPRISE_AT_TOP:
                moved = _complex_attrs(_enterprise_attrs(), {key: value}, ENTERPRISE)
                if moved:
                    out.setdefault(ENTERPRISE, {}).update(moved)
            continue  # unknown attributes are ignored, as RFC 7644 3.3 does for read-only ones
        if attr.name == "members":
            continue
        stored = attribute_value(attr, value)
        if stored is not None:
            out[attr.name] = stored
    return out


def _enterprise_attrs() -> tuple[Attr, ...]:
    from bridge.scim.schema import ENTERPRISE_SCHEMA

    return ENTERPRISE_SCHEMA.attributes


def _complex_attrs(attrs: Iterable[Attr], value: dict[str, Any], where: str) -> dict[str, Any]:
    by_name = {a.name.casefold(): a for a in attrs}
    out: dict[str, Any] = {}
    for key, item in value.items():
        attr = by_name.get(key.casefold())
        if attr is None:
            continue
        stored = attribute_value(attr, item)
        if stored is not None:
            out[attr.name] = stored
    return out


def attribute_value(attr: Attr, value: Any) -> Any:
    """The stored value of one attribute, or None when it is unassigned or not ours to store."""
    if attr.mutability == "readOnly" or attr.mutability == "writeOnly":
        return None
    if attr.name == "manager":
        value = quirks.manager_value(value)
    if value is None:
        return None
    if attr.multi:
        if isinstance(value, dict):
            value = [value]  # a lone value where a list belongs: the client's intent is clear
        if not isinstance(value, list):
            raise invalid_value(f'"{attr.name}" must be a list')
        items = [_single(attr, v) for v in value]
        items = [v for v in items if v is not None]
        return items or None
    return _single(attr, value)


def _single(attr: Attr, value: Any) -> Any:
    if value is None:
        return None
    if attr.type == "complex":
        if not isinstance(value, dict):
            raise invalid_value(f'"{attr.name}" must be an object')
        out = _complex_attrs(attr.sub, value, attr.name)
        return out or None
    if attr.type == "boolean":
        value = quirks.boolean(value)
        if not isinstance(value, bool):
            raise invalid_value(f'"{attr.name}" must be true or false')
        return value
    if attr.type in ("integer", "decimal"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_value(f'"{attr.name}" must be a number')
        return value
    if attr.type == "dateTime":
        text = _string(value, attr.name)
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise invalid_value(f'"{attr.name}" must be an ISO 8601 date-time') from None
        return text or None
    text = _string(value, attr.name)
    limit = MAX_LENGTHS.get(attr.name)
    if limit and len(text) > limit:
        raise invalid_value(f'"{attr.name}" is longer than {limit} characters')
    return text if text != "" else None  # "" means cleared (Entra's null-update test sends it)


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise invalid_value(f'"{name}" must be a string')
    return value


def require(doc: dict[str, Any], rt: ResourceType) -> None:
    name = "userName" if rt.name == "User" else "displayName"
    if not isinstance(doc.get(name), str) or not doc[name].strip():
        raise invalid_value(f'"{name}" is required')
    if rt.name == "User":
        # The address bridge mails the activation to is checked where it enters: refused here,
        # the identity provider shows the reason in its provisioning log; accepted, it would only
        # fail later in the outbox, where the IdP's administrator never looks.
        email = primary_email(doc)
        problem = address_problem(email) if email else None
        if problem is not None:
            raise invalid_value(f"emails: {email!r} is not an address bridge can mail: {problem}")


# ---- stored form -> identity columns ----------------------------------------------------------


def _pick(values: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not values:
        return None
    return (
        next((v for v in values if v.get("primary") is True), None)
        or next((v for v in values if str(v.get("type", "")).casefold() == "work"), None)
        or values[0]
    )


def primary_email(doc: dict[str, Any]) -> str | None:
    chosen = _pick(doc.get("emails"))
    value = chosen.get("value") if chosen else None
    return value if isinstance(value, str) else None


def source_user(anchor: str, doc: dict[str, Any], groups: tuple[str, ...] = ()) -> SourceUser:
    """What the core sees of a SCIM user: the mapping's attributes are lower-cased names, and
    enterprise attributes are reachable by their short name (`department`) as well."""
    name = doc.get("name") or {}
    attributes: dict[str, tuple[str, ...]] = {}
    for key in (
        "title",
        "userType",
        "nickName",
        "locale",
        "timezone",
        "preferredLanguage",
        "displayName",
        "profileUrl",
    ):
        if isinstance(doc.get(key), str):
            attributes[key.lower()] = (doc[key],)
    for key, value in (doc.get(ENTERPRISE) or {}).items():
        if key == "manager" and isinstance(value, dict) and isinstance(value.get("value"), str):
            attributes["manager"] = (value["value"],)
        elif isinstance(value, str):
            attributes[key.lower()] = (value,)
    for key in ("entitlements",):
        values = tuple(v["value"] for v in doc.get(key) or () if isinstance(v.get("value"), str))
        if values:
            attributes[key.lower()] = values
    roles = tuple(sorted({v["value"] for v in doc.get("roles") or () if isinstance(v.get("value"), str)}))
    language = doc.get("preferredLanguage") or doc.get("locale")
    return SourceUser(
        anchor=anchor,
        user_name=doc["userName"],
        email=primary_email(doc),
        # The resource keeps values as sent; the columns the core and mails read are bounded.
        given_name=_cap(name.get("givenName")),
        family_name=_cap(name.get("familyName")),
        display_name=_cap(doc.get("displayName")),
        active=doc.get("active", True) is not False,
        attributes=attributes,
        groups=groups,
        scim_roles=roles,
        preferred_language=language if isinstance(language, str) and len(language) <= 35 else None,
    )


def _cap(value: Any, limit: int = 255) -> str | None:
    return value[:limit] if isinstance(value, str) else None


# ---- output --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """`attributes` / `excludedAttributes` (RFC 7644 3.4.2.5), as lower-cased full paths."""

    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, rt: ResourceType, attributes: str | None, excluded: str | None) -> Projection:
        def paths(text: str | None) -> frozenset[str]:
            if not text:
                return frozenset()
            return frozenset(_full_path(rt, p.strip()) for p in text.split(",") if p.strip())

        return cls(paths(attributes), paths(excluded))

    def wants(self, path: str) -> bool:
        """Whether any part of the top-level attribute or extension `path` will be returned."""
        path = path.casefold()
        if self.include:
            return any(
                p == path or p.startswith(path + ".") or p.startswith(path + ":") or path.startswith(p + ":")
                for p in self.include
            )
        return path not in self.exclude

    def names(self, path: str) -> bool:
        """Whether `attributes` names `path` (or part of it) explicitly."""
        path = path.casefold()
        return any(p == path or p.startswith(path + ":") for p in self.include)

    def apply(self, resource: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
        if not self.include and not self.exclude:
            return resource
        out: dict[str, Any] = {}
        for key, value in resource.items():
            if key in ("id", "schemas"):
                out[key] = value  # returned "always" (RFC 7643 3.1, 7644 3.4.2.5)
                continue
            if ":" in key and isinstance(value, dict):
                urn = key.casefold()
                if self.include and urn not in self.include:
                    sub = {k: v for k, v in value.items() if f"{urn}:{k.casefold()}" in self.include}
                    if sub:
                        out[key] = sub
                    continue
                if urn in self.exclude:
                    continue
                kept = {k: v for k, v in value.items() if f"{urn}:{k.casefold()}" not in self.exclude}
                if kept:
                    out[key] = kept
                continue
            name = key.casefold()
            if self.include:
                if name in self.include:
                    out[key] = value
                elif isinstance(value, dict):
                    sub = {k: v for k, v in value.items() if f"{name}.{k.casefold()}" in self.include}
                    if sub:
                        out[key] = sub
                elif isinstance(value, list) and any(p.startswith(name + ".") for p in self.include):
                    subs = {p.split(".", 1)[1] for p in self.include if p.startswith(name + ".")}
                    items = [
                        {k: v for k, v in item.items() if k.casefold() in subs}
                        for item in value
                        if isinstance(item, dict)
                    ]
                    out[key] = [i for i in items if i]
                continue
            if name in self.exclude:
                continue
            if isinstance(value, dict) and any(p.startswith(name + ".") for p in self.exclude):
                value = {k: v for k, v in value.items() if f"{name}.{k.casefold()}" not in self.exclude}
            out[key] = value
        return out


def _full_path(rt: ResourceType, path: str) -> str:
    """`name.givenName` -> `name.givenname`; `urn:...:User:department` stays qualified for
    extensions and loses the core URN."""
    folded = path.casefold()
    for schema in (rt.schema, *rt.extensions):
        urn = schema.id.casefold()
        if folded == urn:
            return urn
        if folded.startswith(urn + ":"):
            rest = folded[len(urn) + 1 :]
            return rest if schema is rt.schema else f"{urn}:{rest}"
    return folded


def meta(
    rt: ResourceType, base_url: str, resource_id: str, created: datetime, modified: datetime, version: str
) -> dict[str, Any]:
    return {
        "resourceType": rt.name,
        "created": _iso(created),
        "lastModified": _iso(modified),
        "location": rt.location(base_url, resource_id),
        "version": version,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def etag(identity_version: int, account_version: int | None = None) -> str:
    # Weak: the representation depends on the projection; the version identifies the state.
    # A User's state includes its account (status, roles), which changes outside SCIM too.
    return f'W/"{identity_version}-{account_version}"' if account_version is not None else f'W/"{identity_version}"'


def render_user(
    row: Any, base_url: str, groups: list[dict[str, Any]] | None, roles: list[str] | None, projection: Projection
) -> dict[str, Any]:
    from bridge.scim.schema import USER_TYPE

    doc = dict(row.resource or {})
    schemas = [USER] + [s for s in (ENTERPRISE,) if s in doc]
    out: dict[str, Any] = {"schemas": schemas, "id": row.anchor}
    out.update(doc)
    if row.status == Status.ARCHIVED.value:
        # The product's view wins over what the IdP last sent: an account the operator archived
        # (`bridge users archive`) cannot sign in, so it is not active. The filter says the same.
        out["active"] = False
    if groups:
        out["groups"] = groups
    if roles is not None and row.status is not None:
        out[ACCOUNT] = {"status": row.status, "userType": row.user_type, "roles": roles}
        hours = flat_login_hours(getattr(row, "login_hours", None))
        if hours:
            out[ACCOUNT]["loginHours"] = hours
        schemas.append(ACCOUNT)
    version = etag(row.version, row.account_version)
    out["meta"] = meta(USER_TYPE, base_url, row.anchor, row.created_at, row.updated_at, version)
    return projection.apply(out, USER_TYPE)


def render_group(
    row: Any, base_url: str, members: list[dict[str, Any]] | None, projection: Projection
) -> dict[str, Any]:
    from bridge.scim.schema import GROUP_TYPE

    out: dict[str, Any] = {"schemas": [GROUP], "id": row.anchor}
    out.update(row.resource or {})
    if members:
        out["members"] = members
    out["meta"] = meta(GROUP_TYPE, base_url, row.anchor, row.created_at, row.updated_at, etag(row.version))
    return projection.apply(out, GROUP_TYPE)


def list_response(resources: list[dict[str, Any]], total: int, start: int) -> dict[str, Any]:
    from bridge.scim.schema import LIST_RESPONSE

    # Okta: integers, and itemsPerPage is the number returned, not the count asked for
    # (ory/polis PR #4054 blocked Okta QA); totalResults counts all matches (RFC 7644 3.4.2.4).
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def scim_json(body: Any) -> bytes:
    return jsonfast.dumps_bytes(body)
