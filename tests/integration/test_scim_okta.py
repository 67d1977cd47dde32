"""Okta's documented requests (shared/reference/scim-clients.md 2.2), replayed over HTTP against
`bridge serve` with Okta's headers; each test checks the resulting state."""

from __future__ import annotations

import requests

from tests.fixtures.scim import GROUP, USER, ScimClient, account, members, new_user, patch

OKTA_HEADERS = {
    "User-Agent": "Okta SCIM Client 1.0.0",
    "Accept": "application/scim+json",
    "Content-Type": "application/scim+json; charset=utf-8",
    "Accept-Charset": "utf-8",
}


def okta(scim: ScimClient) -> ScimClient:
    scim.http.headers.update(OKTA_HEADERS)
    return scim


def create_okta_user(scim: ScimClient, user_name: str = "test.user@okta.local") -> dict[str, object]:
    body = {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    return scim.ok("POST", "/Users", body, status=201)  # type: ignore[no-any-return]


def test_lookup_then_create_then_duplicate_is_409(scim: ScimClient) -> None:
    scim = okta(scim)
    raw = "/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100"
    empty = scim.ok("GET", raw)
    assert empty["totalResults"] == 0 and empty["Resources"] == []
    created = create_okta_user(scim)
    assert created["id"] and created["userName"] == "test.user@okta.local"  # never an empty 201 body
    assert "password" not in created and "groups" not in created
    found = scim.ok("GET", raw)
    assert isinstance(found["totalResults"], int) and found["itemsPerPage"] == 1
    duplicate = scim.call("POST", "/Users", {"schemas": [USER], "userName": "TEST.USER@okta.local"})
    assert duplicate.status_code == 409
    assert duplicate.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "409",
        "scimType": "uniqueness",
        "detail": duplicate.json()["detail"],
    }


def test_put_profile_update_and_deactivate_by_put_and_by_patch(scim: ScimClient) -> None:
    scim = okta(scim)
    uid = create_okta_user(scim)["id"]
    current = scim.ok("GET", f"/Users/{uid}")  # Okta GETs before a PUT
    put = {
        "schemas": [USER],
        "id": uid,
        "userName": "test.user@okta.local",
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [
            {"primary": True, "value": "test.user@okta.local", "type": "work", "display": "test.user@okta.local"}
        ],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }
    updated = scim.ok("PUT", f"/Users/{uid}", put)
    assert updated["name"] == put["name"] and "displayName" not in updated  # PUT replaces
    assert updated["meta"]["version"] != current["meta"]["version"]
    scim.ok("PUT", f"/Users/{uid}", {**put, "active": False})  # AIW apps
    assert account(scim, uid)["status"] == "suspended"
    scim.ok("PUT", f"/Users/{uid}", put)
    assert account(scim, uid)["status"] == "no_access"
    patch(scim, f"/Users/{uid}", {"op": "replace", "value": {"active": False}})  # OIN apps
    assert account(scim, uid)["status"] == "suspended"
    assert scim.ok("GET", f"/Users/{uid}")["active"] is False


def test_push_groups_rename_delta_and_full_replace(scim: ScimClient) -> None:
    scim = okta(scim)
    u1 = create_okta_user(scim)["id"]
    u2 = new_user(scim, "second@okta.local")["id"]
    u3 = new_user(scim, "third@okta.local")["id"]
    group = scim.ok("POST", "/Groups", {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []}, status=201)
    gid = group["id"]
    assert members(scim, gid) == set()

    # Rename (sent on every membership update too, with the id inside the value).
    patch(scim, f"/Groups/{gid}", {"op": "replace", "value": {"id": gid, "displayName": "pos-Test SCIMv2"}})
    assert scim.ok("GET", f"/Groups/{gid}")["displayName"] == "pos-Test SCIMv2"
    before = scim.ok("GET", f"/Groups/{gid}")["meta"]["version"]
    patch(scim, f"/Groups/{gid}", {"op": "replace", "value": {"id": gid, "displayName": "pos-Test SCIMv2"}})
    assert scim.ok("GET", f"/Groups/{gid}")["meta"]["version"] == before  # no change, no new version

    # Full push: replace all members.
    patch(
        scim,
        f"/Groups/{gid}",
        {
            "op": "replace",
            "path": "members",
            "value": [
                {"value": u1, "display": "test.user@okta.local"},
                {"value": u2, "display": "test.user@okta.local"},
            ],
        },
    )
    assert members(scim, gid) == {u1, u2}
    assert account(scim, u1)["roles"] == ["point_of_sale"] and account(scim, u1)["status"] == "pending"

    # Membership delta: remove by filter + add, in one request.
    patch(
        scim,
        f"/Groups/{gid}",
        {"op": "remove", "path": f'members[value eq "{u2}"]'},
        {"op": "add", "path": "members", "value": [{"value": u3, "display": "third@okta.local"}]},
    )
    assert members(scim, gid) == {u1, u3}
    assert account(scim, u2)["status"] == "no_access" and account(scim, u3)["roles"] == ["point_of_sale"]

    # Renaming out of the pattern takes the role away from every member.
    patch(scim, f"/Groups/{gid}", {"op": "replace", "value": {"id": gid, "displayName": "Test SCIMv2"}})
    assert account(scim, u1)["roles"] == [] and account(scim, u3)["status"] == "no_access"

    # AIW apps: PUT /Groups/{id} with the membership.
    scim.ok("PUT", f"/Groups/{gid}", {"schemas": [GROUP], "displayName": "pos-aiw", "members": [{"value": u2}]})
    assert members(scim, gid) == {u2} and account(scim, u2)["roles"] == ["point_of_sale"]
    assert account(scim, u1)["roles"] == []

    assert scim.call("DELETE", f"/Groups/{gid}").status_code == 204
    assert account(scim, u2)["roles"] == []


def test_import_pages_with_count_100_and_stable_order(scim: ScimClient) -> None:
    scim = okta(scim)
    ids = [new_user(scim, f"user{i:03}@okta.local")["id"] for i in range(205)]
    seen: list[str] = []
    start = 1
    while True:
        page = scim.ok("GET", f"/Users?startIndex={start}&count=100")
        assert page["totalResults"] == 205 and page["startIndex"] == start
        assert page["itemsPerPage"] == len(page["Resources"]) <= 100
        seen += [r["id"] for r in page["Resources"]]
        start += 100
        if start > page["totalResults"]:
            break
    assert seen == ids  # creation order, no duplicates, nothing missed


def test_basic_header_token_without_scheme_is_accepted(scim: ScimClient) -> None:
    # Okta "HTTP Header" authentication sends the configured value as the whole header.
    response = requests.get(
        f"{scim.server.base}/Users", headers={"Authorization": scim.token, **OKTA_HEADERS}, timeout=30
    )
    assert response.status_code == 200
