"""The product API's feed and snapshot over HTTP (`GET /api/v1/events`, `GET /api/v1/accounts`)
against the real app, after real syncs of the example directory; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from bridge.store.tables import AccountEventRow, OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import WEBHOOK_SECRET, bridge, runtime_of
from tests.integration.test_activation_web import Site, serve

OTHER_TENANT = '\n[[tenants]]\nname = "other"\nmappings = "mapping.toml"\n'


@pytest.fixture
def site(deployment: Deployment, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    # A webhook endpoint is configured (nothing delivers to it here): the feed must carry the
    # same events, with the same ids, as the webhook rows queued in the outbox.
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    yield from serve(
        deployment,
        smtp_server,
        extra='\n[webhook]\nurl = "http://127.0.0.1:9/hook"\nsecret_env = "BRIDGE_TEST_WEBHOOK_SECRET"\n'
        + OTHER_TENANT
        + "\n[api]\nevent_retention_days = 1\n",
    )


def token_for(site: Site, tenant: str = "example", *flags: str) -> str:
    result = bridge(site.deployment, "tokens", "create", "--tenant", tenant, *flags)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def get(site: Site, token: str | None, path: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{site.base}{path}", params=params, headers=headers, timeout=30)


def follow(site: Site, token: str, after: str | None = None, limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
    """Every event after `after`, page by page; the events and the cursor to continue from."""
    seen: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = get(site, token, "/api/v1/events", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["events"]
        after = body["next"]
        if not body["hasMore"]:
            return seen, after


def snapshot(site: Site, token: str, limit: int = 1000, between: Any = None) -> tuple[list[dict[str, Any]], str]:
    accounts: list[dict[str, Any]] = []
    cursor: str | None = None
    first_events_cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = get(site, token, "/api/v1/accounts", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        accounts += body["accounts"]
        first_events_cursor = first_events_cursor or body["eventsCursor"]
        assert body["eventsCursor"] == first_events_cursor  # every page names the snapshot's position
        cursor = body["next"]
        if cursor is None:
            return accounts, first_events_cursor
        if between is not None:
            between()
            between = None


def test_events_after_a_sync_are_the_webhooks_oldest_first(site: Site) -> None:
    events, _ = follow(site, token_for(site, "example", "--read-only"))
    assert {"account.created", "account.pending"} <= {e["type"] for e in events}
    for event in events:
        assert set(event) == {"id", "type", "tenant", "occurred_at", "account", "change"}
        assert event["tenant"] == "example" and event["account"]["userName"]
        assert {"before", "after"} <= set(event["change"])
    with runtime_of(site.deployment) as runtime, runtime.engine.connect() as conn:
        hooks = conn.execute(
            select(OutboxMessage.payload).where(OutboxMessage.channel == "webhook").order_by(OutboxMessage.id)
        ).scalars()
        webhook_ids = [p["id"] for p in hooks]
    assert sorted(e["id"] for e in events) == sorted(webhook_ids)
    # One account's events come in the order they happened: created before pending.
    first = events[0]["account"]["id"]
    assert [e["type"] for e in events if e["account"]["id"] == first][:2] == ["account.created", "account.pending"]


def test_pages_of_the_feed_add_up_to_the_whole_feed_and_the_last_cursor_waits(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    whole, end = follow(site, token)
    paged, paged_end = follow(site, token, limit=7)
    assert [e["id"] for e in paged] == [e["id"] for e in whole] and len(whole) > 7
    assert paged_end == end
    response = get(site, token, "/api/v1/events", after=end).json()
    assert response == {"events": [], "next": end, "hasMore": False}
    # A change after the end is what the cursor gives next, and only that.
    site.deployment.remove_people(["agarnier"])
    assert bridge(site.deployment, "sync").exit_code == 0
    more, _ = follow(site, token, after=end)
    assert [e["type"] for e in more][-1] == "account.archived"
    assert {e["account"]["userName"] for e in more} == {"agarnier"}


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5", ""])
def test_a_bad_limit_is_a_400_with_a_json_error(site: Site, limit: str) -> None:
    token = token_for(site, "example", "--read-only")
    for path in ("/api/v1/events", "/api/v1/accounts"):
        response = get(site, token, path, limit=limit)
        assert response.status_code == 400 and "limit" in response.json()["error"], (path, response.text)


def test_limit_bounds_are_kept(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    assert len(get(site, token, "/api/v1/events").json()["events"]) == 100  # the default
    assert len(get(site, token, "/api/v1/events", limit=1).json()["events"]) == 1
    assert get(site, token, "/api/v1/events", limit=1000).status_code == 200


@pytest.mark.parametrize("cursor", ["nonsense", "ev1.", "ev1.!!!!", "ev1.MTp4", "ac1.WzEsIngiXQ", "x" * 500])
def test_a_malformed_cursor_is_a_400(site: Site, cursor: str) -> None:
    token = token_for(site, "example", "--read-only")
    response = get(site, token, "/api/v1/events", after=cursor)
    assert response.status_code == 400 and response.json()["error"], response.text
    response = get(site, token, "/api/v1/accounts", cursor=cursor)
    assert response.status_code == 400 and response.json()["error"], response.text


def test_a_cursor_behind_the_purge_is_a_410_that_says_to_take_the_snapshot_again(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    first = get(site, token, "/api/v1/events", limit=1).json()["next"]
    # Three days ago, for the first ten events (the retention is one day): the purge job takes them.
    with runtime_of(site.deployment) as runtime, runtime.engine.begin() as conn:
        conn.execute(
            update(AccountEventRow)
            .where(AccountEventRow.position <= 10)
            .values(occurred_at=datetime.now(UTC) - timedelta(days=3))
        )
    schedules = site.deployment.root / "schedules"
    schedules.mkdir(exist_ok=True)
    (schedules / "purge.toml").write_text('[jobs.purge]\ntarget = "purge"\nevery = "1d"\n')
    result = bridge(site.deployment, "jobs", "run", "purge")
    assert result.exit_code == 0, result.output
    with runtime_of(site.deployment) as runtime, runtime.engine.connect() as conn:
        kept_positions = list(conn.execute(select(AccountEventRow.position)).scalars())
    assert kept_positions and min(kept_positions) == 11
    gone = get(site, token, "/api/v1/events", after=first)
    assert gone.status_code == 410
    assert "/api/v1/accounts" in gone.json()["error"] and gone.json()["snapshot"] == "/api/v1/accounts"
    # From the start: the oldest kept; and a snapshot's cursor works.
    kept, _ = follow(site, token)
    assert kept and get(site, token, "/api/v1/events", limit=1).json()["events"][0]["id"] == kept[0]["id"]
    _, events_cursor = snapshot(site, token)
    assert get(site, token, "/api/v1/events", after=events_cursor).status_code == 200


def test_tokens_are_scoped_to_the_product_and_to_their_tenant(site: Site) -> None:
    mine = token_for(site, "example", "--read-only")
    other = token_for(site, "other", "--read-only")
    scim = token_for(site, "example")
    cursor = get(site, mine, "/api/v1/events", limit=1).json()["next"]
    # Another tenant's product token sees nothing of this tenant, and cannot use its cursors.
    assert get(site, other, "/api/v1/events").json()["events"] == []
    assert get(site, other, "/api/v1/accounts").json()["accounts"] == []
    assert get(site, other, "/api/v1/events", after=cursor).status_code == 400
    # An identity provider's SCIM token does not read the feed; none, or a wrong one, is a 401.
    for path in ("/api/v1/events", "/api/v1/accounts"):
        assert get(site, scim, path).status_code == 403
        assert get(site, None, path).status_code == 401
        assert get(site, "brg_wrong", path).status_code == 401
    # A product token does not write through SCIM.
    refused = requests.post(
        f"{site.base}/scim/v2/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "x@example.org"},
        headers={"Authorization": f"Bearer {mine}", "Content-Type": "application/scim+json"},
        timeout=30,
    )
    assert refused.status_code == 403


def test_the_snapshot_is_users_list_json(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    accounts, _ = snapshot(site, token, limit=4)
    listed = json.loads(bridge(site.deployment, "users", "list", "--tenant", "example", "--json").output)
    assert accounts == sorted(listed, key=lambda a: a["id"])
    pending = get(site, token, "/api/v1/accounts", status="pending", limit=1000).json()["accounts"]
    assert pending and {a["status"] for a in pending} == {"pending"}
    assert get(site, token, "/api/v1/accounts", status="gone").status_code == 400


def test_one_account_is_its_snapshot_document_and_only_its_tenant_reads_it(site: Site) -> None:
    mine = token_for(site, "example", "--read-only")
    accounts, _ = snapshot(site, mine)
    assert len(accounts) >= 3
    for document in accounts:
        answer = get(site, mine, f"/api/v1/accounts/{document['id']}")
        assert answer.status_code == 200 and answer.json() == document
    # Another tenant's product token gets the answer of an id that does not exist.
    theirs = get(site, token_for(site, "other", "--read-only"), f"/api/v1/accounts/{accounts[0]['id']}")
    unknown = get(site, mine, "/api/v1/accounts/no-such-id")
    for refused in (theirs, unknown):
        assert refused.status_code == 404 and refused.headers["Content-Type"] == "application/json"
        assert set(refused.json()) == {"error"} and "example" not in refused.text
    assert get(site, token_for(site, "example"), f"/api/v1/accounts/{accounts[0]['id']}").status_code == 403
    assert get(site, None, f"/api/v1/accounts/{accounts[0]['id']}").status_code == 401


def test_a_snapshot_then_the_feed_leaves_no_gap_even_with_changes_while_paging(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    people = site.deployment.people()

    def change_the_directory() -> None:
        # Leavers from both ends of the id order, while the product is between two pages.
        site.deployment.remove_people([people[0], people[-1]])
        assert bridge(site.deployment, "sync").exit_code == 0

    accounts, events_cursor = snapshot(site, token, limit=5, between=change_the_directory)
    state = {a["id"]: (a["status"], a["roles"]) for a in accounts}
    events, _ = follow(site, token, after=events_cursor, limit=3)
    assert {e["type"] for e in events} >= {"account.archived"}
    for event in events:
        after = event["change"]["after"]
        state[event["account"]["id"]] = (after["status"], after["roles"])
    listed = json.loads(bridge(site.deployment, "users", "list", "--tenant", "example", "--json").output)
    assert state == {a["id"]: (a["status"], a["roles"]) for a in listed}


def test_a_held_plan_is_in_the_feed_as_a_tenant_event(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    _, end = follow(site, token)
    site.deployment.remove_people(site.deployment.people()[:10])  # past the deletion threshold
    assert bridge(site.deployment, "sync").exit_code == 1
    events, _ = follow(site, token, after=end)
    assert [e["type"] for e in events] == ["plan.held"]
    assert events[0]["account"] is None and events[0]["change"]["counts"]["archived"] == 10


def test_the_access_log_names_the_tenant_and_the_token_label(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    result = bridge(site.deployment, "tokens", "create", "--tenant", "example", "--read-only", "--label", "crm")
    token = result.output.strip().splitlines()[-1]
    with caplog.at_level("INFO", logger="bridge.access"):
        assert get(site, token, "/api/v1/events", limit=1).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.access" and "/api/v1/events" in r.getMessage()]
    assert lines and "tenant=example token_label=crm" in lines[-1] and token not in lines[-1]


def webhooks_of(site: Site, event_id: str) -> list[dict[str, Any]]:
    with runtime_of(site.deployment) as runtime, runtime.engine.connect() as conn:
        payloads = conn.execute(select(OutboxMessage.payload).where(OutboxMessage.channel == "webhook")).scalars()
        return [p for p in payloads if p["id"] == event_id]


def test_a_changed_email_alone_is_one_account_updated_in_the_feed_and_by_webhook(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    _, end = follow(site, token)
    uid = site.deployment.people()[0]
    before = next(a for a in snapshot(site, token)[0] if a["userName"] == uid)
    site.deployment.edit_person(uid, "mail", f"{uid}.new@example.org")
    assert bridge(site.deployment, "sync").exit_code == 0
    events, end = follow(site, token, after=end)
    assert [e["type"] for e in events] == ["account.updated"]
    event = events[0]
    assert event["account"]["id"] == before["id"] and event["account"]["email"] == f"{uid}.new@example.org"
    assert event["change"]["detail"] == {"email": {"from": before["email"], "to": f"{uid}.new@example.org"}}
    # Status and roles did not move: before and after say so.
    state = {"status": before["status"], "roles": before["roles"]}
    assert event["change"]["before"] == event["change"]["after"] == state
    # The same event, with the same id, waits in the outbox for the webhook endpoint.
    assert [h["type"] for h in webhooks_of(site, event["id"])] == ["account.updated"]
    # The same directory again, and a full sync: nothing the product sees changed, no event.
    assert bridge(site.deployment, "sync").exit_code == 0
    assert bridge(site.deployment, "sync", "--full").exit_code == 0
    assert follow(site, token, after=end)[0] == []


def test_a_scim_patch_of_the_display_name_is_one_account_updated(site: Site) -> None:
    token = token_for(site, "example", "--read-only")
    headers = {"Authorization": f"Bearer {token_for(site, 'example')}", "Content-Type": "application/scim+json"}
    scim = f"{site.base}/scim/v2"
    user = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "dana@example.org",
        "displayName": "Dana",
        "emails": [{"value": "dana@example.org", "primary": True}],
    }
    created = requests.post(f"{scim}/Users", json=user, headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    _, end = follow(site, token)
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Dana Rossi"}],
    }
    patched = requests.patch(f"{scim}/Users/{created.json()['id']}", json=body, headers=headers, timeout=30)
    assert patched.status_code in (200, 204), patched.text
    events, end = follow(site, token, after=end)
    assert [(e["type"], e["change"]["detail"]) for e in events] == [
        ("account.updated", {"displayName": {"from": "Dana", "to": "Dana Rossi"}})
    ]
    assert webhooks_of(site, events[0]["id"])
    shown = next(a for a in snapshot(site, token)[0] if a["userName"] == "dana@example.org")
    assert shown["displayName"] == "Dana Rossi"
    # The same value again changes nothing the product sees.
    again = requests.patch(f"{scim}/Users/{created.json()['id']}", json=body, headers=headers, timeout=30)
    assert again.status_code in (200, 204), again.text
    assert follow(site, token, after=end)[0] == []


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v1/", "/api/v1", "/api/v1/events/", "/api/v1/a/b"])
def test_a_path_the_api_does_not_serve_is_a_json_404(site: Site, path: str) -> None:
    token = token_for(site, "example", "--read-only")
    for method in ("GET", "POST", "DELETE"):
        response = requests.request(
            method, f"{site.base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert response.status_code == 404, (method, response.text)
        assert response.headers["Content-Type"] == "application/json"
        assert path in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/api/v1/events", "GET, HEAD, OPTIONS"),
        ("DELETE", "/api/v1/accounts", "GET, HEAD, OPTIONS"),
        ("PUT", "/api/v1/accounts", "GET, HEAD, OPTIONS"),
        ("GET", "/api/v1/verify-password", "OPTIONS, POST"),
    ],
)
def test_a_method_an_api_path_does_not_take_is_a_json_405_with_allow(
    site: Site, method: str, path: str, allow: str
) -> None:
    for token in (token_for(site, "example", "--read-only"), None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = requests.request(method, f"{site.base}{path}", headers=headers, timeout=30)
        assert response.status_code == 405, response.text
        assert response.headers["Allow"] == allow
        assert response.headers["Content-Type"] == "application/json"
        assert method in response.json()["error"]
    # OPTIONS names the same methods (Flask's own answer would have listed the 405 route's).
    options = requests.options(f"{site.base}{path}", timeout=30)
    assert options.status_code == 204 and options.headers["Allow"] == allow
