"""Microsoft Entra ID's documented requests (shared/reference/scim-clients.md 2.1), replayed over
HTTP against `bridge serve`; each test checks the resulting state, not only the status code."""

from __future__ import annotations

from tests.fixtures.scim import (
    ENTERPRISE,
    GROUP,
    PATCH,
    USER,
    ScimClient,
    account,
    members,
    new_group,
    new_user,
    patch,
)

ENTRA_HEADERS = {"Content-Type": "application/scim+json"}
EMPTY = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
    "totalResults": 0,
    "Resources": [],
    "startIndex": 1,
    "itemsPerPage": 0,
}


def create_entra_user(scim: ScimClient) -> dict[str, object]:
    body = {
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
        "active": True,
        "emails": [
            {"primary": True, "type": "work", "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"}
        ],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
    }
    return scim.ok("POST", "/Users", body, status=201, headers=ENTRA_HEADERS)  # type: ignore[no-any-return]


def test_test_connection_gets_an_empty_list_not_404(scim: ScimClient) -> None:
    response = scim.call("GET", '/Users?filter=userName eq "4a1e3c5b-0d7e-4c1d-9a60-3f0c8f9b6a11"')
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/scim+json")
    assert response.json() == EMPTY
    assert scim.ok("GET", '/Users?filter=userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"') == EMPTY


def test_create_then_find_by_each_matching_attribute(scim: ScimClient) -> None:
    created = create_entra_user(scim)
    uid = created["id"]
    assert created["userName"] == "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"
    assert created["meta"]["location"].endswith(f"/scim/v2/Users/{uid}")
    for query in (
        'userName eq "test_user_00AA00AA-bb11-cc22-dd33-44ee44ee44ee"',  # userName is caseExact false
        'externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"',
        'emails[type eq "work"].value eq "test_user_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@TESTUSER.com"',
    ):
        found = scim.ok("GET", "/Users", params={"filter": query})
        assert [r["id"] for r in found["Resources"]] == [uid], query
    # The unquoted doc example is not valid filter syntax: a clear 400, never a 500.
    bad = scim.call("GET", "/Users", params={"filter": "externalId eq jyoung"})
    assert bad.status_code == 400 and bad.json()["scimType"] == "invalidFilter"
    assert account(scim, uid)["status"] == "no_access"


def test_example_2_create_with_nulls_top_level_department_and_typo_urn(scim: ScimClient) -> None:
    body = {
        "schemas": [USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
        "externalId": "jyoung",
        "userName": "jyoung@testuser.com",
        "active": True,
        "addresses": None,
        "displayName": "Joy Young",
        "emails": [{"type": "work", "value": "jyoung@Contoso.com", "primary": True}],
        "meta": {"resourceType": "User"},
        "name": {"familyName": "Young", "givenName": "Joy"},
        "phoneNumbers": None,
        "preferredLanguage": None,
        "title": None,
        "department": "Finance",
        "manager": None,
    }
    created = scim.ok("POST", "/Users", body, status=201)
    assert "addresses" not in created and "title" not in created
    assert created[ENTERPRISE] == {"department": "Finance"}
    # Moved into the enterprise extension, stored as sent and filterable (case-insensitively).
    found = scim.ok("GET", "/Users", params={"filter": f'{ENTERPRISE}:department eq "finance"'})
    assert [r["id"] for r in found["Resources"]] == [created["id"]]


def test_update_user_multi_valued_and_single_valued_replace(scim: ScimClient) -> None:
    uid = create_entra_user(scim)["id"]
    patch(
        scim,
        f"/Users/{uid}",
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updatedEmail@microsoft.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
    )
    patch(
        scim,
        f"/Users/{uid}",
        {"op": "Replace", "path": "userName", "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"},
    )
    user = scim.ok("GET", f"/Users/{uid}")
    assert user["emails"] == [{"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}]
    assert user["name"]["familyName"] == "updatedFamilyName" and user["name"]["givenName"] == "givenName"
    assert user["userName"] == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    assert account(scim, uid)["userName"] == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"


def test_add_email_that_does_not_exist_yet_creates_it(scim: ScimClient) -> None:
    uid = scim.ok("POST", "/Users", {"schemas": [USER], "userName": "noemail"}, status=201)["id"]
    patch(scim, f"/Users/{uid}", {"op": "Add", "path": 'emails[type eq "work"].value', "value": "new@x.org"})
    assert scim.ok("GET", f"/Users/{uid}")["emails"] == [{"type": "work", "value": "new@x.org"}]


def test_manager_as_list_as_bare_string_then_removed(scim: ScimClient) -> None:
    boss = new_user(scim, "boss")["id"]
    uid = create_entra_user(scim)["id"]
    patch(
        scim,
        f"/Users/{uid}",
        {"op": "Add", "path": "manager", "value": [{"$ref": f"http://x/scim/Users/{boss}", "value": boss}]},
    )
    assert scim.ok("GET", f"/Users/{uid}")[ENTERPRISE]["manager"]["value"] == boss
    # Entra's manager check before an update (use-scim "Example 4").
    check = scim.ok("GET", "/Users", params={"filter": f'id eq "{uid}" and manager eq "{boss}"', "attributes": "id"})
    assert [r["id"] for r in check["Resources"]] == [uid]
    patch(scim, f"/Users/{uid}", {"op": "add", "path": f"{ENTERPRISE}:manager", "value": "someone-else"})
    assert scim.ok("GET", f"/Users/{uid}")[ENTERPRISE]["manager"] == {"value": "someone-else"}
    patch(scim, f"/Users/{uid}", {"op": "remove", "path": 'manager[value eq "someone-else"]'})
    assert ENTERPRISE not in scim.ok("GET", f"/Users/{uid}")
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "manager", "value": boss})
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "manager", "value": ""})
    assert ENTERPRISE not in scim.ok("GET", f"/Users/{uid}")


def test_disable_with_boolean_and_with_string_suspends_and_still_returns_the_user(scim: ScimClient) -> None:
    uid = new_user(scim, "alice", roles=[{"value": "Administrator"}])["id"]
    assert account(scim, uid)["status"] == "pending"
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})  # Entra default mode
    assert account(scim, uid)["status"] == "suspended"
    assert scim.ok("GET", f"/Users/{uid}")["active"] is False  # inactive users are still returned
    patch(scim, f"/Users/{uid}", {"op": "replace", "path": "active", "value": True})
    assert account(scim, uid)["status"] == "pending"
    patch(scim, f"/Users/{uid}", {"op": "replace", "path": "active", "value": False})  # aadOptscim062020
    assert account(scim, uid)["status"] == "suspended"


def test_flagged_multi_attribute_replace_with_path_keyed_value(scim: ScimClient) -> None:
    uid = create_entra_user(scim)["id"]
    patch(
        scim,
        f"/Users/{uid}",
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "bjfe@x.org"},
        {
            "op": "replace",
            "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                f"{ENTERPRISE}:employeeNumber": "Aklq",
            },
        },
    )
    patch(scim, f"/Users/{uid}", {"op": "Add", "path": "nickName", "value": "Babs"})
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": f"{ENTERPRISE}:employeeNumber", "value": "Aklq2"})
    user = scim.ok("GET", f"/Users/{uid}")
    assert user["displayName"] == "Bjfe" and user["nickName"] == "Babs"
    assert user["name"] == {"formatted": "givenName familyName", "givenName": "Kkom", "familyName": "Unua"}
    assert user[ENTERPRISE]["employeeNumber"] == "Aklq2"
    assert user["emails"][0]["value"] == "bjfe@x.org"


def test_null_update_clears_optional_attributes(scim: ScimClient) -> None:
    uid = create_entra_user(scim)["id"]
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "title", "value": "Chef"})
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "title", "value": ""})
    assert "title" not in scim.ok("GET", f"/Users/{uid}")
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "title", "value": "Chef"})
    patch(scim, f"/Users/{uid}", {"op": "Replace", "path": "title", "value": None})
    assert "title" not in scim.ok("GET", f"/Users/{uid}")


def test_group_lifecycle_grants_roles_and_legacy_remove_takes_only_listed_members(scim: ScimClient) -> None:
    ann, bob = new_user(scim, "ann")["id"], new_user(scim, "bob")["id"]
    created = scim.ok(
        "POST",
        "/Groups",
        {
            "schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"},
        },
        status=201,
    )
    gid = created["id"]
    lookup = scim.ok(
        "GET", "/Groups", params={"excludedAttributes": "members", "filter": 'displayName eq "displayName"'}
    )
    assert [r["id"] for r in lookup["Resources"]] == [gid]
    assert "members" not in scim.ok("GET", f"/Groups/{gid}?excludedAttributes=members")

    # Rename to a name the mapping grants front_desk for (group_name "front-desk"): 204.
    response = scim.call(
        "PATCH",
        f"/Groups/{gid}",
        {"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "displayName", "value": "Front-Desk"}]},
    )
    assert response.status_code == 204
    for uid in (ann, bob):
        response = scim.call(
            "PATCH",
            f"/Groups/{gid}",
            {
                "schemas": [PATCH],
                "Operations": [{"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}],
            },
        )
        assert response.status_code == 204, response.text
    assert members(scim, gid) == {ann, bob}
    assert account(scim, ann) | {"userName": None} == {
        "status": "pending",
        "roles": ["front_desk"],
        "mails": 1,
        "userName": None,
        "tenant": scim.tenant,
    }

    # Membership check Entra-compatible servers implement.
    check = scim.ok(
        "GET",
        "/Groups",
        params={"excludedAttributes": "members", "filter": f'id eq "{gid}" and members[value eq "{ann}"]'},
    )
    assert check["totalResults"] == 1 and "members" not in check["Resources"][0]

    # Legacy (default) removal: path "members" + a value list removes only those members.
    response = scim.call(
        "PATCH",
        f"/Groups/{gid}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "Remove", "path": "members", "value": [{"$ref": None, "value": ann}]}],
        },
    )
    assert response.status_code == 204
    assert members(scim, gid) == {bob}
    assert account(scim, ann)["status"] == "no_access" and account(scim, ann)["roles"] == []
    assert account(scim, bob)["roles"] == ["front_desk"]

    # With the aadOptscim062020 flag: a filtered path.
    patch(scim, f"/Groups/{gid}", {"op": "remove", "path": f'members[value eq "{bob}"]'})
    assert members(scim, gid) == set() and account(scim, bob)["status"] == "no_access"

    patch(scim, f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": ann}]})
    assert scim.call("DELETE", f"/Groups/{gid}").status_code == 204
    assert scim.call("GET", f"/Groups/{gid}").status_code == 404
    assert account(scim, ann)["roles"] == [] and account(scim, ann)["status"] == "no_access"


def test_delete_user_archives_the_account_and_frees_the_user_name(scim: ScimClient) -> None:
    created = create_entra_user(scim)
    uid = created["id"]
    gid = new_group(scim, "pos-cashiers", [uid])["id"]
    assert account(scim, uid)["roles"] == ["point_of_sale"]
    assert scim.call("DELETE", f"/Users/{uid}").status_code == 204
    state = account(scim, uid)
    assert state["status"] == "archived" and state["roles"] == []
    assert scim.call("GET", f"/Users/{uid}").status_code == 404
    assert scim.call("DELETE", f"/Users/{uid}").status_code == 404
    assert members(scim, gid) == set()
    assert scim.ok("GET", "/Users", params={"filter": f'userName eq "{created["userName"]}"'})["totalResults"] == 0
    again = create_entra_user(scim)
    assert again["id"] != uid and account(scim, again["id"])["status"] == "no_access"
