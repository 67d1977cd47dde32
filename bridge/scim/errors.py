"""SCIM errors: raised where the problem is known, rendered once by the blueprint (RFC 7644 3.12)."""

from __future__ import annotations

from typing import Any

from bridge.errors import BridgeError
from bridge.scim.schema import ERROR


class ScimError(BridgeError):
    """An HTTP error in the SCIM error schema. `scim_type` only where RFC 7644 Table 9 defines one."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        # RFC 7644 3.12: "status" is a string in the JSON body.
        body: dict[str, Any] = {"schemas": [ERROR], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


def invalid_filter(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidFilter")


def invalid_value(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidValue")


def invalid_syntax(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidSyntax")


def invalid_path(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidPath")


def no_target(detail: str) -> ScimError:
    return ScimError(400, detail, "noTarget")


def mutability(detail: str) -> ScimError:
    return ScimError(400, detail, "mutability")


def uniqueness(detail: str) -> ScimError:
    return ScimError(409, detail, "uniqueness")


def not_found(kind: str, resource_id: str) -> ScimError:
    return ScimError(404, f"{kind} {resource_id} not found")
