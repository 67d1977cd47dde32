"""docs/openapi.yaml: a valid OpenAPI 3.1 document, whose discovery schemas describe what the
SCIM door's discovery functions return (tests/integration/test_openapi_schemathesis.py checks the
rest against a running `bridge serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bridge.scim import discovery
from bridge.scim.errors import ScimError, invalid_filter
from bridge.scim.schema import SCHEMAS

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
BASE = "https://bridge.example.org/scim/v2"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    spec, _ = read_from_filename(str(DOC))
    return dict(spec)


def component(document: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for `#/components/schemas/<name>`, its $refs resolved in the document."""
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("doc", resource)
    return OAS31Validator({"$ref": f"doc#/components/schemas/{name}"}, registry=registry)


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_it_describes_the_product_api_and_the_scim_endpoints(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert {"/api/v1/events", "/api/v1/accounts", "/api/v1/verify-password"} <= paths.keys()
    for resource in ("Users", "Groups"):
        assert set(paths[f"/scim/v2/{resource}"]) == {"get", "post"}
        assert set(paths[f"/scim/v2/{resource}/{{id}}"]) - {"parameters"} == {"get", "put", "patch", "delete"}
    for name in ("ServiceProviderConfig", "Schemas", "ResourceTypes"):
        assert f"/scim/v2/{name}" in paths
    # The product API's bounds are the code's.
    from bridge.store.events import MAX_LIMIT
    from bridge.web.api import DEFAULT_LIMIT

    limit = document["components"]["parameters"]["ApiLimit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, MAX_LIMIT, DEFAULT_LIMIT)
    count = document["components"]["parameters"]["Count"]["schema"]
    assert (count["maximum"], count["default"]) == (discovery.MAX_RESULTS, discovery.DEFAULT_COUNT)


def test_discovery_answers_match_their_schemas(document: dict[str, Any]) -> None:
    component(document, "ServiceProviderConfig").validate(discovery.service_provider_config(BASE))
    for product_view in (False, True):
        component(document, "ResourceTypeList").validate(
            discovery.listing(discovery.resource_types(BASE, product_view))
        )
    component(document, "SchemaList").validate(discovery.listing(discovery.schemas(BASE)))
    for schema in SCHEMAS.values():
        component(document, "Schema").validate(schema.to_json(BASE))


def test_the_scim_error_body_matches_its_schema(document: dict[str, Any]) -> None:
    validator = component(document, "ScimError")
    validator.validate(invalid_filter("bad filter").to_json())
    validator.validate(ScimError(404, "User x not found").to_json())
    with pytest.raises(Exception, match="scimType"):
        validator.validate({**ScimError(400, "x", "notAScimType").to_json()})
