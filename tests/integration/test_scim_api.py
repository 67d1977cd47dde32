"""The SCIM API's behaviour over HTTP against `bridge serve`: filters, paging, sorting,
projections, ETags, auth and tenancy, bad input, and the lifecycle the core derives."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import select, update

from tests.fixtures.scim import (
    ACCOUNT,
    GROUP,
    PATCH,
    USER,
    ScimClient,
    account,
    bridge_cli,
    identity_count,
    members,
    new_group,
    new_token,
    new_user,
    patch,
)


def ids(page: dict[str, Any]) -> list[str]:
    return [r["id"] for r in page["Resources"]]


def find(scim: ScimClient, query: str, **params: Any) -> list[str]:
    return ids(scim.ok("GET", "/Users", params={"filter": query, **params}))


def error(response: requests.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == str(status)
    assert body.get("scimType") == scim_type
    return body  # type: ignore[no-any-return]


def test_scim_created_user_with_mapped_roles_is_pending_with_one_activation_mail(scim: ScimClient) -> None:
    uid = new_user(scim, "alice", roles=[{"value": "Administrator"}])["id"]
    gid = new_group(scim, "front-desk", [uid])["id"]
    state = account(scim, uid)
    assert state["status"] == "pending" and state["roles"] == ["administration", "front_desk"]
    assert state["mails"] == 1
    patch(scim, f"/Users/{uid}", {"op": "replace", "path": "active", "value": False})
    assert account(scim, uid)["status"] == "suspended"
    assert scim.call("DELETE", f"/Users/{uid}").status_code == 204
    assert account(scim, uid) | {"mails": 0} == {
        "status": "archived",
        "roles": [],
        "mails": 0,
        "userName": "alice",
        "tenant": scim.tenant,
    }
    assert members(scim, gid) == set()


def test_read_only_token_reads_product_state_and_cannot_write(scim: ScimClient) -> None:
    uid = new_user(scim, "alice", roles=[{"value": "Administrator"}])["id"]
    _, token = new_token(scim.server, scim.tenant, read_only=True)
    product = ScimClient(scim.server, scim.tenant, token)
    user = product.ok("GET", f"/Users/{uid}")
    assert user[ACCOUNT] == {"status": "pending", "userType": "internal", "roles": ["administration"]}
    assert ACCOUNT in user["schemas"]
    pending = product.ok("GET", "/Users", params={"filter": f'{ACCOUNT}:status eq "pending"'})
    assert ids(pending) == [uid]
    # The identity provider's token gets what it provisioned, and the extension on request.
    assert ACCOUNT not in scim.ok("GET", f"/Users/{uid}")
    assert scim.ok("GET", f"/Users/{uid}?attributes={ACCOUNT}")[ACCOUNT]["status"] == "pending"
    for method, path, body in (
        ("POST", "/Users", {"schemas": [USER], "userName": "x"}),
        ("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [{"op": "remove", "path": "title"}]}),
        ("PUT", f"/Users/{uid}", {"schemas": [USER], "userName": "x"}),
        ("DELETE", f"/Users/{uid}", None),
    ):
        error(product.call(method, path, body), 403)
    assert account(scim, uid)["status"] == "pending"


def test_auth_failures_are_401_with_a_challenge(scim: ScimClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        response = requests.get(f"{scim.server.base}/Users", headers=headers, timeout=30)
        error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = requests.post(f"{scim.server.base}/Users", data="not json", timeout=30)
    error(response, 401)


def test_another_tenants_ids_are_not_found_anywhere(scim: ScimClient) -> None:
    tenant2, token2 = new_token(scim.server)
    other = ScimClient(scim.server, tenant2, token2)
    theirs = new_user(other, "alice")["id"]
    their_group = new_group(other, "front-desk", [theirs])["id"]
    mine = new_user(scim, "alice")["id"]  # the same userName in another tenant is fine
    error(scim.call("GET", f"/Users/{theirs}"), 404)
    error(scim.call("GET", f"/Groups/{their_group}"), 404)
    error(scim.call("DELETE", f"/Users/{theirs}"), 404)
    error(
        scim.call(
            "PATCH",
            f"/Groups/{their_group}",
            {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": mine}]}]},
        ),
        404,
    )
    assert find(scim, f'id eq "{theirs}"') == []
    assert find(scim, f'groups.value eq "{their_group}"') == []
    assert ids(scim.ok("GET", "/Groups", params={"filter": f'members[value eq "{theirs}"]'})) == []
    gid = new_group(scim, "mine")["id"]
    error(
        scim.call(
            "PATCH",
            f"/Groups/{gid}",
            {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": theirs}]}]},
        ),
        400,
        "invalidValue",
    )
    assert members(scim, gid) == set() and members(other, their_group) == {theirs}
    assert account(other, theirs)["roles"] == ["front_desk"]


def test_filters_are_pushed_down_with_every_operator(scim: ScimClient) -> None:
    a = new_user(
        scim,
        "Alice",
        displayName='Sales "EU"',
        title="Chef",
        emails=[{"value": "alice@corp.example", "type": "work"}, {"value": "a@home.example", "type": "home"}],
    )
    b = new_user(scim, "bob", displayName="Bob", name={"givenName": "Bob", "familyName": "Zed"})
    c = new_user(scim, "carol_1", active=False)
    assert find(scim, 'userName eq "ALICE"') == [a["id"]]
    assert find(scim, 'displayName eq "Sales \\"EU\\""') == [a["id"]]  # escaped quotes
    assert find(scim, 'userName sw "ca"') == [c["id"]]
    assert find(scim, 'userName co "ol_"') == [c["id"]]  # "_" is literal, not a LIKE wildcard
    assert find(scim, 'userName ew "OB"') == [b["id"]]
    assert sorted(find(scim, 'userName gt "b"')) == sorted([b["id"], c["id"]])
    assert find(scim, 'userName le "alice"') == [a["id"]]
    assert find(scim, "title pr") == [a["id"]]
    assert sorted(find(scim, "not (title pr)")) == sorted([b["id"], c["id"]])
    assert sorted(find(scim, 'userName ne "bob"')) == sorted([a["id"], c["id"]])
    assert find(scim, "active eq false") == [c["id"]]
    assert find(scim, 'emails[type eq "work" and value co "@CORP"]') == [a["id"]]
    assert find(scim, 'emails[type eq "home" and value co "@corp"]') == []
    assert find(scim, 'emails.value ew "home.example"') == [a["id"]]
    assert find(scim, 'name.familyName eq "zed"') == [b["id"]]
    # "and" binds tighter than "or" (RFC 7644 3.4.2.2).
    assert sorted(find(scim, 'userName eq "bob" or userName eq "alice" and title eq "nope"')) == [b["id"]]
    assert sorted(find(scim, '(userName eq "bob" or userName eq "alice") and title eq "Chef"')) == [a["id"]]
    since = a["meta"]["lastModified"]
    assert a["id"] not in find(scim, f'meta.lastModified gt "{since}"')
    assert set(find(scim, f'meta.lastModified ge "{since}"')) == {a["id"], b["id"], c["id"]}
    patch(scim, f"/Users/{a['id']}", {"op": "replace", "path": "title", "value": "Sous-chef"})
    assert find(scim, f'meta.lastModified gt "{since}"')[0:1] and a["id"] in find(
        scim, f'meta.lastModified gt "{since}"'
    )


def test_bad_filters_are_400_invalid_filter(scim: ScimClient) -> None:
    for bad in (
        "userName eq",
        'nosuch eq "x"',
        'userName eq "x" and',
        "active gt true",
        'userName xx "a"',
        "userName eq " + '"' + "x" * 5000 + '"',
        "(" * 40 + 'userName eq "x"' + ")" * 40,
        " or ".join(f'userName eq "{i}"' for i in range(100)),
        'meta.lastModified gt "yesterday"',
        'emails[type eq "work"',
    ):
        error(scim.call("GET", "/Users", params={"filter": bad}), 400, "invalidFilter")


def test_paging_sorting_and_projection(scim: ScimClient) -> None:
    made = [new_user(scim, name)["id"] for name in ("delta", "alpha", "charlie", "bravo")]
    page = scim.ok("GET", "/Users", params={"sortBy": "userName", "startIndex": 2, "count": 2})
    assert page["totalResults"] == 4 and page["itemsPerPage"] == 2 and page["startIndex"] == 2
    assert [r["userName"] for r in page["Resources"]] == ["bravo", "charlie"]
    down = scim.ok("GET", "/Users", params={"sortBy": "userName", "sortOrder": "descending"})
    assert [r["userName"] for r in down["Resources"]] == ["delta", "charlie", "bravo", "alpha"]
    assert ids(scim.ok("GET", "/Users")) == made  # default: creation order
    counted = scim.ok("GET", "/Users", params={"count": 0})
    assert counted["totalResults"] == 4 and counted["Resources"] == []
    slim = scim.ok("GET", "/Users", params={"attributes": "userName,emails.value"})
    assert set(slim["Resources"][0]) == {"schemas", "id", "userName", "emails"}
    assert slim["Resources"][0]["emails"] == [{"value": "delta@example.org"}]
    fat = scim.ok("GET", f"/Users/{made[0]}", params={"excludedAttributes": "emails,meta"})
    assert "emails" not in fat and "meta" not in fat and fat["userName"] == "delta"
    error(scim.call("GET", "/Users", params={"startIndex": "one"}), 400, "invalidValue")


def test_etags_and_preconditions(scim: ScimClient) -> None:
    created = scim.call("POST", "/Users", {"schemas": [USER], "userName": "etag"})
    uid, tag = created.json()["id"], created.headers["ETag"]
    assert created.headers["Location"].endswith(uid)
    assert scim.call("GET", f"/Users/{uid}", headers={"If-None-Match": tag}).status_code == 304
    body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}
    ok = scim.call("PATCH", f"/Users/{uid}", body, headers={"If-Match": tag})
    assert ok.status_code == 200 and ok.headers["ETag"] != tag
    error(scim.call("PATCH", f"/Users/{uid}", body, headers={"If-Match": tag}), 412)
    error(scim.call("DELETE", f"/Users/{uid}", headers={"If-Match": tag}), 412)
    assert scim.call("DELETE", f"/Users/{uid}", headers={"If-Match": ok.headers["ETag"]}).status_code == 204


def test_bad_input_is_a_scim_error_and_writes_nothing(scim: ScimClient) -> None:
    uid = new_user(scim, "keep", title="Chef")["id"]
    raw = scim.http.post(f"{scim.server.base}/Users", data="{not json", timeout=30)
    error(raw, 400, "invalidSyntax")
    error(scim.call("POST", "/Users", {"schemas": [GROUP], "userName": "x"}), 400, "invalidSyntax")
    error(scim.call("POST", "/Users", {"userName": "x"}), 400, "invalidSyntax")
    error(scim.call("POST", "/Users", {"schemas": [USER], "userName": 42}), 400, "invalidValue")
    error(scim.call("POST", "/Users", {"schemas": [USER], "userName": "x", "active": "maybe"}), 400, "invalidValue")
    error(scim.call("POST", "/Users", {"schemas": [USER], "userName": "x", "emails": "x@y"}), 400, "invalidValue")
    error(scim.call("POST", "/Users", {"schemas": [USER]}), 400, "invalidValue")
    big = {"schemas": [USER], "userName": "big", "title": "x" * (1024 * 1024 + 1)}
    error(scim.http.post(f"{scim.server.base}/Users", data=json.dumps(big), timeout=30), 413)
    # The second operation fails: the first must not have been applied.
    response = scim.call(
        "PATCH",
        f"/Users/{uid}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "title", "value": "Changed"},
                {"op": "replace", "path": "nosuch", "value": 1},
            ],
        },
    )
    error(response, 400, "invalidPath")
    error(scim.call("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [{"op": "remove"}]}), 400, "noTarget")
    error(
        scim.call("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [{"op": "remove", "path": "userName"}]}),
        400,
        "mutability",
    )
    error(
        scim.call("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [{"op": "move", "path": "x"}]}),
        400,
        "invalidSyntax",
    )
    assert scim.ok("GET", f"/Users/{uid}")["title"] == "Chef"
    assert identity_count(scim, "user") == 1
    error(scim.call("GET", "/Nope"), 404)
    error(scim.call("GET", "/Users/does-not-exist"), 404)
    error(scim.call("POST", "/ServiceProviderConfig", {}), 405)
    error(
        scim.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "g", "members": [{"value": "ghost"}]}),
        400,
        "invalidValue",
    )
    assert identity_count(scim, "group") == 0


def test_searches_by_post(scim: ScimClient) -> None:
    uid = new_user(scim, "findme")["id"]
    gid = new_group(scim, "findme-group")["id"]
    search = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'userName eq "findme"',
        "attributes": ["userName"],
    }
    found = scim.ok("POST", "/Users/.search", search)
    assert ids(found) == [uid] and set(found["Resources"][0]) == {"schemas", "id", "userName"}
    everything = scim.ok("POST", "/.search", {"schemas": search["schemas"], "filter": "id pr", "count": 10})
    assert ids(everything) == [uid, gid] and everything["totalResults"] == 2
    second = scim.ok("POST", "/.search", {"schemas": search["schemas"], "startIndex": 2, "count": 1})
    assert ids(second) == [gid] and second["totalResults"] == 2
    # A plain `userName eq` at the root is answered by the indexed lookup: its total counts the
    # match, not every User of the tenant.
    new_user(scim, "someone-else")
    by_name = scim.ok("POST", "/.search", {"schemas": search["schemas"], "filter": 'userName eq "findme"'})
    assert ids(by_name) == [uid] and by_name["totalResults"] == 1


def test_discovery_is_truthful(scim: ScimClient) -> None:
    spc = scim.ok("GET", "/ServiceProviderConfig")
    assert spc["bulk"]["supported"] is False and spc["patch"]["supported"] is True
    assert spc["filter"] == {"supported": True, "maxResults": 1000} and spc["etag"]["supported"] is True
    types = {t["id"]: t for t in scim.ok("GET", "/ResourceTypes")["Resources"]}
    assert set(types) == {"User", "Group"}
    schemas = {s["id"] for s in scim.ok("GET", "/Schemas")["Resources"]}
    assert {USER, GROUP, ACCOUNT} <= schemas
    assert scim.ok("GET", f"/Schemas/{GROUP}")["name"] == "Group"


def test_a_tenant_without_a_mapping_stores_identities_without_access(scim: ScimClient) -> None:
    bridge_cli(scim.server.config, "tenants", "add", "bare")
    token = bridge_cli(scim.server.config, "tokens", "create", "--tenant", "bare").strip().splitlines()[-1]
    bare = ScimClient(scim.server, "bare", token)
    uid = new_user(bare, "alice", roles=[{"value": "Administrator"}])["id"]
    new_group(bare, "front-desk", [uid])
    assert account(bare, uid) | {"userName": None} == {
        "status": "no_access",
        "roles": [],
        "mails": 0,
        "userName": None,
        "tenant": "bare",
    }
    patch(bare, f"/Users/{uid}", {"op": "replace", "path": "active", "value": False})
    assert account(bare, uid)["status"] == "suspended"


def test_fast_lookup_answers_exactly_as_the_general_path(scim: ScimClient) -> None:
    """`userName eq` runs on the DB-API cursor (bridge/store/fast.py); adding `sortBy` sends the
    same request through SQLAlchemy. Both must give the same documents, on both databases."""
    from bridge.store.fast import raw_cursor
    from bridge.store.scim import _FAST_LOOKUPS, _LOOKUPS
    from bridge.store.tokens import _BY_HASH, hash_token

    uid = new_user(scim, "Zoë.Fast@Example.org", roles=[{"value": "Administrator"}])["id"]
    new_group(scim, "fast-b", [uid])
    new_group(scim, "fast-a", [uid])
    for query in ('userName eq "zoë.fast@example.org"', f'id eq "{uid}"', 'userName eq "nobody@example.org"'):
        fast = scim.ok("GET", "/Users", params={"filter": query})
        general = scim.ok("GET", "/Users", params={"filter": query, "sortBy": "userName"})
        assert fast == general
    found = scim.ok("GET", "/Users", params={"filter": 'userName eq "ZOË.FAST@example.org"'})["Resources"]
    assert [g["display"] for g in found[0]["groups"]] == ["fast-a", "fast-b"]
    assert found[0]["meta"]["created"].endswith("Z")
    # Row for row, the DB-API path decodes columns as SQLAlchemy does (JSON, aware datetimes, bools).
    engine = scim.server.db()
    with engine.connect() as conn:
        token_row = conn.execute(_BY_HASH.statement, {"digest": hash_token(scim.token)}).one()
        params = {"tenant_id": token_row.tenant_id, "value": "zoë.fast@example.org", "limit": 5}
        expected = [tuple(r) for r in conn.execute(_LOOKUPS[("user", "username")], params)]
    with raw_cursor(engine) as cursor:
        got = [tuple(r) for r in _FAST_LOOKUPS[("user", "username")].rows(cursor, engine.dialect, params)]
        fast_token = _BY_HASH.rows(cursor, engine.dialect, {"digest": hash_token(scim.token)})
    assert got == expected and len(got) == 1
    assert isinstance(got[0][2], dict) and got[0][4].tzinfo is not None
    assert [tuple(r) for r in fast_token] == [tuple(token_row)]


def test_the_wsgi_fast_lane_answers_lookups_and_passes_everything_else_on(scim: ScimClient) -> None:
    """The lane in front of Flask (bridge/scim/fastlane.py), called as WSGI on the test's own
    database: it answers a plain lookup itself, exactly as the app does over HTTP, and hands
    every other request to the app behind it."""
    from urllib.parse import urlencode

    from bridge.scim.fastlane import FastLane

    uid = new_user(scim, "lane@example.org")["id"]
    new_group(scim, "lane-group", [uid])
    passed: list[str] = []

    def behind(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        passed.append(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')}")
        start_response("599 Passed", [])
        return [b""]

    lane = FastLane(behind, scim.server.db(), f"{scim.server.url}/scim/v2")

    def call(query: dict[str, str], token: str | None = scim.token, **extra: str) -> tuple[str, dict[str, str], bytes]:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/scim/v2/Users", "QUERY_STRING": urlencode(query), **extra}
        if token is not None:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        got: dict[str, Any] = {}
        body = b"".join(lane(environ, lambda status, headers: got.update(status=status, headers=dict(headers))))
        return got["status"], got["headers"], body

    lookup = {"filter": 'userName eq "LANE@example.org"'}
    status, headers, body = call(lookup, HTTP_X_REQUEST_ID="trace-1", CONTENT_LENGTH="0")
    assert status == "200 OK" and passed == []
    over_http = scim.call("GET", "/Users", params={**lookup, "sortBy": "userName"})  # the app's general path
    assert json.loads(body) == over_http.json()
    assert headers["Content-Type"] == over_http.headers["Content-Type"] == "application/scim+json"
    assert headers["Cache-Control"] == over_http.headers["Cache-Control"] == "no-store"
    assert headers["X-Request-ID"] == "trace-1" and int(headers["Content-Length"]) == len(body)
    # The other lookups, and one that matches nobody, are the lane's too, with the app's answer.
    for other in ({"filter": f'id eq "{uid}"'}, {"filter": 'userName eq "nobody@example.org"'}):
        status, _, body = call(other)
        assert status == "200 OK" and passed == [], other
        assert json.loads(body) == scim.call("GET", "/Users", params={**other, "sortBy": "userName"}).json()
    assert json.loads(call({"filter": 'userName eq "nobody@example.org"'})[2])["totalResults"] == 0
    # Everything else goes to the app: errors included, so their SCIM bodies come from one place.
    for query, token in (
        (lookup, "wrong-token"),
        (lookup, None),
        ({"filter": 'userName co "lane"'}, scim.token),
        ({"filter": 'userName eq "lane@example.org"', "sortBy": "userName"}, scim.token),
        ({"filter": 'userName eq "lane@example.org"', "attributes": ACCOUNT}, scim.token),
        ({"filter": "userName eq"}, scim.token),
        ({"filter": 'userName eq "lane@example.org"', "count": "1"}, scim.token),
    ):
        before = len(passed)
        assert call(query, token)[0] == "599 Passed", query
        assert len(passed) == before + 1
    assert call(lookup, CONTENT_LENGTH="5")[0] == "599 Passed"  # a GET with a body: the app's business
    assert call({}, QUERY_STRING="filter=a&filter=b")[0] == "599 Passed"  # repeated: the app refuses it

    # The lane keeps one connection per thread. A connection that breaks is dropped and the
    # request goes to the app; the next request opens a new one.
    lane._local.connection.close()
    assert call(lookup)[0] == "599 Passed"
    assert call(lookup)[0] == "200 OK"
    # A revoked token stops at once, although the lane's connection stayed open.
    from datetime import UTC, datetime

    from sqlalchemy import select

    from bridge.store.db import transaction
    from bridge.store.tables import ScimToken
    from bridge.store.tokens import hash_token, revoke_token

    tokens = ScimToken.__table__
    with transaction(scim.server.db()) as conn:
        token_id = conn.execute(select(tokens.c.id).where(tokens.c.token_hash == hash_token(scim.token))).scalar_one()
        assert revoke_token(conn, token_id, datetime.now(UTC))
    passed.clear()
    assert call(lookup)[0] == "599 Passed" and len(passed) == 1


def token_row(scim: ScimClient) -> Any:
    from bridge.store.tokens import hash_token, tokens

    with scim.server.db().connect() as conn:
        return conn.execute(select(tokens).where(tokens.c.token_hash == hash_token(scim.token))).one()


def test_a_tokens_use_is_recorded_at_most_once_a_minute(scim: ScimClient) -> None:
    assert token_row(scim).last_used_at is None
    started = time.monotonic()
    find(scim, 'userName eq "nobody"')  # the fast lane
    deadline = time.monotonic() + 60
    while token_row(scim).last_used_at is None:  # written off the request's path: wait for it
        assert time.monotonic() < deadline, "last_used_at was never written"
        time.sleep(0.05)
    first = token_row(scim).last_used_at
    for _ in range(5):
        scim.ok("GET", "/Users")  # the general path
        find(scim, 'userName eq "nobody"')
    listed = json.loads(bridge_cli(scim.server.config, "tokens", "list", "--tenant", scim.tenant, "--json"))
    assert [t["lastUsed"] for t in listed] == [first.isoformat()]
    if time.monotonic() - started < 50:  # within the minute, nothing was rewritten
        assert token_row(scim).last_used_at == first


def test_an_expired_token_is_refused_everywhere(scim: ScimClient) -> None:
    from bridge.store.tokens import tokens

    out = bridge_cli(scim.server.config, "tokens", "create", "--tenant", scim.tenant, "--expires-days", "30")
    assert "expires " in out.splitlines()[0]
    listed = json.loads(bridge_cli(scim.server.config, "tokens", "list", "--tenant", scim.tenant, "--json"))
    expires = [datetime.fromisoformat(t["expires"]) for t in listed if t["expires"]]
    assert len(expires) == 1 and timedelta(days=29) < expires[0] - datetime.now(UTC) <= timedelta(days=30)
    find(scim, 'userName eq "nobody"')
    with scim.server.db().begin() as conn:
        conn.execute(
            update(tokens)
            .where(tokens.c.id == token_row(scim).id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    for response in (
        scim.call("GET", "/Users", params={"filter": 'userName eq "nobody"'}),  # the fast lane
        scim.call("GET", "/Users"),
        scim.call("POST", "/Users", {"schemas": [USER], "userName": "late@example.org"}),
    ):
        assert "expired" in error(response, 401)["detail"]


def test_a_rehire_is_found_by_name_and_an_operator_archive_reads_inactive(scim: ScimClient) -> None:
    config = scim.server.config
    first = new_user(scim, "rehired", roles=[{"value": "Administrator"}])["id"]
    assert scim.call("DELETE", f"/Users/{first}").status_code == 204
    second = new_user(scim, "rehired", roles=[{"value": "Administrator"}])["id"]

    # Two accounts share the userName: the archived leaver and the live rehire. The name means
    # the live one; the list shows both with the ids that tell them apart.
    shown = json.loads(bridge_cli(config, "users", "show", "rehired", "--tenant", scim.tenant, "--json"))
    assert shown["status"] == "pending"
    listed = json.loads(bridge_cli(config, "users", "list", "--tenant", scim.tenant, "--json"))
    assert sorted(u["status"] for u in listed if u["userName"] == "rehired") == ["archived", "pending"]
    table = bridge_cli(config, "users", "list", "--tenant", scim.tenant)
    assert table.splitlines()[0].split()[0] == "ID"
    assert all(u["id"] in table for u in listed)

    # The operator archives the rehire: SCIM says it is not active, and the filter agrees.
    assert scim.ok("GET", f"/Users/{second}")["active"] is True
    bridge_cli(config, "users", "archive", shown["id"], "--tenant", scim.tenant)
    assert scim.ok("GET", f"/Users/{second}")["active"] is False
    assert find(scim, "active eq false") == [second]
    assert find(scim, 'userName eq "rehired" and active eq true') == []


def test_a_create_asking_for_a_few_attributes_still_answers_201_with_its_location(scim: ScimClient) -> None:
    # Found by Schemathesis: the Location was read from the body's `meta`, which `attributes`
    # had left out, so the create committed and the client got a 500 saying it had not.
    user_body = {"schemas": [USER], "userName": "projected", "emails": [{"value": "projected@example.org"}]}
    for path, body in (("/Users", user_body), ("/Groups", {"schemas": [GROUP], "displayName": "Projected"})):
        response = scim.call("POST", f"{path}?attributes=externalId", body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert set(created) == {"schemas", "id"}
        assert response.headers["Location"] == f"{scim.server.base}{path}/{created['id']}"


def test_a_path_no_route_can_match_is_still_a_scim_404(scim: ScimClient) -> None:
    # A newline stops werkzeug's path converter: the request never reached the blueprint.
    error(scim.call("GET", "/Schemas/%0Aurn"), 404)
    assert requests.get(f"{scim.server.url}/nothing/%0A", timeout=30).status_code == 404


def test_a_method_a_resource_does_not_take_is_405_with_allow(scim: ScimClient) -> None:
    user = new_user(scim, "allow")
    for method, path, allowed in (
        ("DELETE", "/Users", "GET, POST"),
        ("PUT", "/Groups", "GET, POST"),
        ("POST", f"/Users/{user['id']}", "GET, PUT, PATCH, DELETE"),
        ("GET", "/.search", "POST"),
    ):
        response = scim.call(method, path)
        error(response, 405)
        assert response.headers["Allow"] == allowed
    error(scim.call("GET", "/Users/"), 404)


def test_a_group_no_rule_names_changes_no_account_unless_it_is_nested_in_one_that_does(scim: ScimClient) -> None:
    ann, bob = new_user(scim, "plain-ann")["id"], new_user(scim, "plain-bob")["id"]
    before = scim.ok("GET", f"/Users/{ann}")
    plain = new_group(scim, "plain-team")["id"]  # no rule, login-hours entry or external group names it
    patch(scim, f"/Groups/{plain}", {"op": "add", "path": "members", "value": [{"value": ann}]})
    # Nobody's plan can change: the account is left alone, but the User (its groups) is a new version.
    assert account(scim, ann) == {
        "status": "no_access",
        "roles": [],
        "mails": 0,
        "userName": "plain-ann",
        "tenant": scim.tenant,
    }
    after = scim.ok("GET", f"/Users/{ann}")
    assert after["meta"]["version"] != before["meta"]["version"]
    assert [g["value"] for g in after["groups"]] == [plain]

    # Nested in a group a rule names (group_pattern "^pos-"), its members are re-planned, and so
    # is whoever joins or leaves it afterwards.
    outer = new_group(scim, "pos-outer")["id"]
    patch(scim, f"/Groups/{outer}", {"op": "add", "path": "members", "value": [{"value": plain}]})
    assert account(scim, ann)["roles"] == ["point_of_sale"] and account(scim, ann)["status"] == "pending"
    patch(scim, f"/Groups/{plain}", {"op": "add", "path": "members", "value": [{"value": bob}]})
    assert account(scim, bob)["roles"] == ["point_of_sale"]
    patch(scim, f"/Groups/{plain}", {"op": "remove", "path": f'members[value eq "{bob}"]'})
    assert account(scim, bob)["roles"] == [] and account(scim, bob)["status"] == "no_access"
