"""Discovery (RFC 7644 4): what bridge supports, and nothing it does not."""

from __future__ import annotations

from typing import Any

from bridge.scim.schema import ACCOUNT, LIST_RESPONSE, RESOURCE_TYPES, SCHEMAS, SPC

MAX_RESULTS = 1000
DEFAULT_COUNT = 100


def service_provider_config(base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SPC],
        "patch": {"supported": True},
        # Bulk is not implemented, so it is not advertised (Okta and Entra do not use it).
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A per-tenant token made with `bridge tokens create`, sent as Authorization: Bearer.",
                "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"},
    }


def resource_types(base_url: str, product_view: bool) -> list[dict[str, Any]]:
    """The Account extension is listed for the product's read-only tokens, which get it on every
    User; identity providers only see it when they ask for it by name (they cannot write it, and
    a schema extension cannot be declared read-only as a whole in RFC 7643 discovery)."""
    out = [rt.to_json(base_url) for rt in RESOURCE_TYPES.values()]
    if not product_view:
        for rt in out:
            rt["schemaExtensions"] = [e for e in rt["schemaExtensions"] if e["schema"] != ACCOUNT]
    return out


def schemas(base_url: str) -> list[dict[str, Any]]:
    return [s.to_json(base_url) for s in SCHEMAS.values()]


def listing(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
