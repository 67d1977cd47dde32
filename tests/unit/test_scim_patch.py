"""PATCH on stored resources, without I/O: RFC 7644 3.5.2 and each Entra/Okta shape."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.scim.errors import ScimError
from bridge.scim.patch import MemberOp, apply_patch
from bridge.scim.schema import ENTERPRISE, GROUP_TYPE, PATCH_OP, USER_TYPE


def ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


USER = {
    "userName": "bjensen",
    "emails": [{"value": "b@x.org", "type": "work", "primary": True}, {"value": "b@home.org", "type": "home"}],
    "name": {"givenName": "B"},
}


def test_capitalised_ops_and_string_booleans() -> None:
    doc = apply_patch(USER_TYPE, USER, ops({"op": "Replace", "path": "active", "value": "False"})).doc
    assert doc["active"] is False


def test_value_path_replace_touches_only_matching_values() -> None:
    doc = apply_patch(
        USER_TYPE, USER, ops({"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@x.org"})
    ).doc
    assert doc["emails"] == [
        {"value": "new@x.org", "type": "work", "primary": True},
        {"value": "b@home.org", "type": "home"},
    ]


def test_no_path_value_keyed_by_paths_and_urns() -> None:
    doc = apply_patch(
        USER_TYPE,
        USER,
        ops(
            {
                "op": "replace",
                "value": {
                    "name.familyName": "J",
                    f"{ENTERPRISE}:employeeNumber": "7",
                    "id": "ignored",
                    "active": False,
                },
            }
        ),
    ).doc
    assert doc["name"] == {"givenName": "B", "familyName": "J"}
    assert doc[ENTERPRISE] == {"employeeNumber": "7"} and doc["active"] is False and "id" not in doc


def test_add_to_multi_valued_appends_and_a_new_primary_demotes_the_old() -> None:
    doc = apply_patch(
        USER_TYPE,
        USER,
        ops({"op": "add", "path": "emails", "value": [{"value": "c@x.org", "type": "other", "primary": True}]}),
    ).doc
    assert [e.get("primary") for e in doc["emails"]] == [False, None, True]


def test_remove_by_filter_and_whole_attribute() -> None:
    doc = apply_patch(USER_TYPE, USER, ops({"op": "remove", "path": 'emails[type eq "home"]'})).doc
    assert [e["type"] for e in doc["emails"]] == ["work"]
    assert "emails" not in apply_patch(USER_TYPE, USER, ops({"op": "remove", "path": "emails"})).doc


def test_manager_shapes() -> None:
    listed = apply_patch(
        USER_TYPE, USER, ops({"op": "Add", "path": "manager", "value": [{"$ref": "http://x/Users/m1", "value": "m1"}]})
    ).doc
    assert listed[ENTERPRISE]["manager"] == {"$ref": "http://x/Users/m1", "value": "m1"}
    bare = apply_patch(USER_TYPE, listed, ops({"op": "add", "path": f"{ENTERPRISE}:manager", "value": "m2"})).doc
    assert bare[ENTERPRISE]["manager"] == {"value": "m2"}
    removed = apply_patch(USER_TYPE, bare, ops({"op": "remove", "path": 'manager[value eq "m2"]'})).doc
    assert ENTERPRISE not in removed


def test_group_member_operations_do_not_touch_the_document() -> None:
    result = apply_patch(
        GROUP_TYPE,
        {"displayName": "g"},
        ops(
            {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "u1"}]},
            {"op": "remove", "path": 'members[value eq "u2"]'},
            {"op": "add", "path": "members", "value": [{"value": "u3", "display": "x"}]},
            {"op": "replace", "value": {"id": "g-id", "displayName": "h"}},
        ),
    )
    assert result.doc == {"displayName": "h"}
    # A run of removals is one removal (the same members go).
    assert result.members == [MemberOp("remove", ("u1", "u2")), MemberOp("add", ("u3",))]
    assert apply_patch(GROUP_TYPE, {"displayName": "g"}, ops({"op": "remove", "path": "members"})).members == [
        MemberOp("remove_all")
    ]


@pytest.mark.parametrize(
    ("operation", "scim_type"),
    [
        ({"op": "remove"}, "noTarget"),
        ({"op": "remove", "path": "userName"}, "mutability"),
        ({"op": "replace", "path": "groups", "value": []}, "mutability"),
        ({"op": "replace", "path": "nosuch", "value": 1}, "invalidPath"),
        ({"op": "replace", "path": 'addresses[type eq "work"]', "value": {"country": "FR"}}, "noTarget"),
        ({"op": "copy", "path": "title"}, "invalidSyntax"),
        ({"op": "replace", "path": "active", "value": "perhaps"}, "invalidValue"),
    ],
)
def test_refusals(operation: dict[str, Any], scim_type: str) -> None:
    with pytest.raises(ScimError) as caught:
        apply_patch(USER_TYPE, USER, ops(operation))
    assert caught.value.scim_type == scim_type
