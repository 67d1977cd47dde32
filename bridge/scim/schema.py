"""The SCIM schemas bridge serves, as data: discovery, validation, PATCH and filters all read them.

Definitions follow RFC 7643 section 8.7.1 (User, Group, EnterpriseUser) plus bridge's Account
extension (contract, "SCIM"). Attribute names are case-insensitive (RFC 7643 2.1), so lookups go
through `Attr.child()` / `Schema.attr()`, which fold case and return the canonical spelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ACCOUNT = "urn:bridge:params:scim:schemas:extension:2.0:Account"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SPC = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attr:
    name: str
    type: str = "string"  # string, boolean, decimal, integer, dateTime, reference, binary, complex
    multi: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"  # readOnly, readWrite, immutable, writeOnly
    returned: str = "default"  # always, never, default, request
    uniqueness: str = "none"
    description: str = ""
    sub: tuple[Attr, ...] = ()
    canonical: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()

    def child(self, name: str) -> Attr | None:
        folded = name.casefold()
        return next((s for s in self.sub if s.name.casefold() == folded), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        }
        if self.canonical:
            out["canonicalValues"] = list(self.canonical)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub:
            out["subAttributes"] = [s.to_json() for s in self.sub]
        return out


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attr, ...]
    _index: dict[str, Attr] = field(default_factory=dict, compare=False, repr=False)

    def attr(self, name: str) -> Attr | None:
        if not self._index:
            self._index.update({a.name.casefold(): a for a in self.attributes})
        return self._index.get(name.casefold())

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_json() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{self.id}"},
        }


def _multi(
    name: str,
    description: str,
    canonical: tuple[str, ...] = (),
    value_type: str = "string",
    value_case_exact: bool = False,
    reference_types: tuple[str, ...] = (),
) -> Attr:
    """The usual shape of a multi-valued attribute: value, display, type, primary (RFC 7643 2.4)."""
    return Attr(
        name,
        "complex",
        multi=True,
        description=description,
        sub=(
            Attr(
                "value",
                value_type,
                case_exact=value_case_exact,
                description=f"The value of {name}.",
                reference_types=reference_types,
            ),
            Attr("display", description="A human-readable name, primarily used for display purposes."),
            Attr("type", description="A label indicating the attribute's function.", canonical=canonical),
            Attr("primary", "boolean", description="The preferred value (at most one is true)."),
        ),
    )


COMMON_META = Attr(
    "meta",
    "complex",
    mutability="readOnly",
    description="Resource metadata.",
    sub=(
        Attr("resourceType", case_exact=True, mutability="readOnly"),
        Attr("created", "dateTime", mutability="readOnly"),
        Attr("lastModified", "dateTime", mutability="readOnly"),
        Attr("location", "reference", case_exact=True, mutability="readOnly", reference_types=("uri",)),
        Attr("version", case_exact=True, mutability="readOnly"),
    ),
)
ID = Attr(
    "id",
    case_exact=True,
    mutability="readOnly",
    returned="always",
    uniqueness="server",
    description="Unique identifier assigned by bridge.",
)
EXTERNAL_ID = Attr("externalId", case_exact=True, description="Identifier assigned by the provisioning client.")

USER_SCHEMA = Schema(
    USER,
    "User",
    "User Account",
    (
        Attr(
            "userName",
            required=True,
            uniqueness="server",
            description="Unique identifier for the User, case-insensitive.",
        ),
        Attr(
            "name",
            "complex",
            description="The components of the user's real name.",
            sub=(
                Attr("formatted"),
                Attr("familyName"),
                Attr("givenName"),
                Attr("middleName"),
                Attr("honorificPrefix"),
                Attr("honorificSuffix"),
            ),
        ),
        Attr("displayName", description="The name of the User, suitable for display to end-users."),
        Attr("nickName", description="The casual way to address the user."),
        Attr("profileUrl", "reference", reference_types=("external",), description="A URL to the user's profile."),
        Attr("title", description="The user's title, such as 'Vice President'."),
        Attr("userType", description="The relationship between the organization and the user."),
        Attr("preferredLanguage", description="The user's preferred written or spoken language."),
        Attr("locale", description="The user's default location for localization."),
        Attr("timezone", description="The User's time zone in the 'Olson' time zone database format."),
        Attr("active", "boolean", description="The user's administrative status (false suspends the account)."),
        Attr(
            "password",
            mutability="writeOnly",
            returned="never",
            description="Accepted and discarded: bridge never stores passwords.",
        ),
        _multi("emails", "Email addresses for the user.", ("work", "home", "other")),
        _multi("phoneNumbers", "Phone numbers for the User.", ("work", "home", "mobile", "fax", "pager", "other")),
        _multi(
            "ims",
            "Instant messaging addresses for the User.",
            ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"),
        ),
        _multi("photos", "URLs of photos of the User.", ("photo", "thumbnail"), "reference", True, ("external",)),
        Attr(
            "addresses",
            "complex",
            multi=True,
            description="A physical mailing address for this User.",
            sub=(
                Attr("formatted"),
                Attr("streetAddress"),
                Attr("locality"),
                Attr("region"),
                Attr("postalCode"),
                Attr("country"),
                Attr("type", canonical=("work", "home", "other")),
                Attr("primary", "boolean"),
            ),
        ),
        Attr(
            "groups",
            "complex",
            multi=True,
            mutability="readOnly",
            description="The groups the user belongs to, direct or nested (set through /Groups).",
            sub=(
                Attr("value", mutability="readOnly"),
                Attr("$ref", "reference", mutability="readOnly", reference_types=("User", "Group")),
                Attr("display", mutability="readOnly"),
                Attr("type", mutability="readOnly", canonical=("direct", "indirect")),
            ),
        ),
        _multi("entitlements", "A list of entitlements for the User."),
        _multi("roles", "Roles of the User (Entra app roles, Okta role attributes); mapped by scim_role rules."),
        _multi(
            "x509Certificates", "A list of certificates issued to the User.", value_type="binary", value_case_exact=True
        ),
    ),
)

ENTERPRISE_SCHEMA = Schema(
    ENTERPRISE,
    "EnterpriseUser",
    "Enterprise User",
    (
        Attr("employeeNumber"),
        Attr("costCenter"),
        Attr("organization"),
        Attr("division"),
        Attr("department"),
        Attr(
            "manager",
            "complex",
            description="The User's manager.",
            sub=(
                Attr("value", description="The id of the SCIM resource representing the manager."),
                Attr("$ref", "reference", reference_types=("User",)),
                Attr("displayName", mutability="readOnly"),
            ),
        ),
    ),
)

ACCOUNT_SCHEMA = Schema(
    ACCOUNT,
    "Account",
    "The product account bridge derives from this user (read-only).",
    (
        Attr(
            "status",
            mutability="readOnly",
            case_exact=True,
            canonical=("no_access", "pending", "active", "suspended", "archived"),
            description="Lifecycle state of the product account.",
        ),
        Attr("userType", mutability="readOnly", case_exact=True, canonical=("internal", "external")),
        Attr(
            "roles",
            multi=True,
            mutability="readOnly",
            case_exact=True,
            description="Product role ids granted by the tenant's mapping rules.",
        ),
        Attr(
            "loginHours",
            type="complex",
            multi=True,
            mutability="readOnly",
            description=(
                "When the person may sign in; absent: any time. A sign-in must fall in a value of "
                "each type present: 'mapping' (the tenant's [[login_hours]] entries), 'logonHours' "
                "(the directory's, in UTC; a value without days and hours: no hour at all)."
            ),
            sub=(
                Attr("type", mutability="readOnly", case_exact=True, canonical=("mapping", "logonHours")),
                Attr("days", mutability="readOnly", description="mon-sun, such as 'mon-fri' or 'mon,wed,fri-sun'."),
                Attr(
                    "hours",
                    mutability="readOnly",
                    description="HH:MM-HH:MM local time; an end before the start runs past midnight.",
                ),
                Attr("timeZone", mutability="readOnly", case_exact=True, description="IANA time zone name."),
            ),
        ),
    ),
)

GROUP_SCHEMA = Schema(
    GROUP,
    "Group",
    "Group",
    (
        Attr(
            "displayName",
            required=True,
            uniqueness="server",
            description="A human-readable name for the Group, unique per tenant.",
        ),
        Attr(
            "members",
            "complex",
            multi=True,
            description="A list of members of the Group.",
            sub=(
                Attr("value", case_exact=True, mutability="immutable"),
                Attr("$ref", "reference", mutability="immutable", reference_types=("User", "Group")),
                Attr("display", mutability="readOnly"),
                Attr("type", mutability="immutable", canonical=("User", "Group")),
            ),
        ),
    ),
)

SCHEMAS: dict[str, Schema] = {s.id: s for s in (USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_SCHEMA, ACCOUNT_SCHEMA)}


@dataclass(frozen=True)
class ResourceType:
    name: str
    endpoint: str
    schema: Schema
    extensions: tuple[Schema, ...]

    def schema_for(self, urn: str) -> Schema | None:
        folded = urn.casefold()
        return next((s for s in (self.schema, *self.extensions) if s.id.casefold() == folded), None)

    def location(self, base_url: str, resource_id: str) -> str:
        """A resource's URL: its `meta.location`, and the Location of a 201 (also when
        `attributes` leaves `meta` out of the body)."""
        return f"{base_url}{self.endpoint}/{resource_id}"

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [RESOURCE_TYPE],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.schema.description,
            "schema": self.schema.id,
            "schemaExtensions": [{"schema": s.id, "required": False} for s in self.extensions],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{self.name}"},
        }


USER_TYPE = ResourceType("User", "/Users", USER_SCHEMA, (ENTERPRISE_SCHEMA, ACCOUNT_SCHEMA))
GROUP_TYPE = ResourceType("Group", "/Groups", GROUP_SCHEMA, ())
RESOURCE_TYPES = {"User": USER_TYPE, "Group": GROUP_TYPE}
