"""The SCIM request log (issue 16) over HTTP against the real app: every request of a tenant is
stored with its bodies redacted, linked to the account changes it caused, purged after the
tenant's `request_log_days`; the console shows it to that tenant's administrators only."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from bridge.scheduler import purge_request_log
from bridge.store.requestlog import changes_of
from bridge.store.tables import ScimRequest
from bridge.store.tenants import get_tenant
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge
from tests.integration.test_activation_web import Site, serve
from tests.integration.test_console import IT, set_up

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
OTHER_TENANT = '\n[[tenants]]\nname = "other"\n'
AGENT = "Azure Active Directory SCIM Client"


@pytest.fixture
def site(deployment: Deployment, smtp_server: SmtpServer) -> Iterator[Site]:
    yield from serve(deployment, smtp_server, tenant="request_log_days = 3\n", extra=OTHER_TENANT)


def token_for(site: Site, tenant: str = "example", label: str = "entra") -> str:
    result = bridge(site.deployment, "tokens", "create", "--tenant", tenant, "--label", label)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


class Scim:
    def __init__(self, site: Site, token: str) -> None:
        self.base = f"{site.base}/scim/v2"
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "User-Agent": AGENT, "Content-Type": "application/scim+json"}
        )

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> requests.Response:
        return self.session.request(method, self.base + path, json=body, headers=headers, timeout=10)


def logged(site: Site, count: int) -> list[Any]:
    """The stored rows, oldest first, once there are at least `count` (the log is written by a
    thread after each answer: poll for it)."""
    deadline = time.monotonic() + 15
    while True:
        with site.runtime.engine.connect() as conn:
            rows = list(conn.execute(select(ScimRequest.__table__).order_by(ScimRequest.id)).all())
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) >= count, rows
            return rows
        time.sleep(0.05)


def tenant_id(site: Site, name: str = "example") -> int:
    with site.runtime.engine.connect() as conn:
        return get_tenant(conn, name).id


def test_no_password_token_or_secret_reaches_the_stored_log(site: Site) -> None:
    token = token_for(site)
    scim = Scim(site, token)
    secrets = ["Orchard-Pass-1", "client-secret-2", "api-token-3", "patch-pass-4", "patch-pass-5", "path-pass-6"]
    created = scim.call(
        "POST",
        "/Users",
        {
            "schemas": [USER, ENTERPRISE],
            "userName": "ana@example.org",
            "externalId": "ana-1",
            "password": secrets[0],
            "emails": [{"value": "ana@example.org", "type": "work", "primary": True}],
            "clientSecret": secrets[1],
            "x-extra": {"nested": [{"apiToken": secrets[2]}]},
        },
    )
    assert created.status_code == 201, created.text
    uid = created.json()["id"]
    patched = scim.call(
        "PATCH",
        f"/Users/{uid}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "password", "value": secrets[3]},
                {"op": "replace", "value": {"password": secrets[4], "displayName": "Ana"}},
                {"op": "Replace", "path": f"{USER}:password", "value": secrets[5]},
            ],
        },
    )
    assert patched.status_code in (200, 204, 400), patched.text
    # A token in a header or a body value is never kept either.
    scim.call("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [{"op": "replace", "value": token}]})
    scim.call("GET", '/Users?filter=userName eq "ana@example.org"')
    rows = logged(site, 4)

    stored = "\n".join(str(tuple(row)) for row in rows)
    for secret in [*secrets, token, token.removeprefix("brg_")]:
        assert secret not in stored
    post = rows[0]
    assert (post.method, post.path, post.status, post.user_agent) == ("POST", "/scim/v2/Users", 201, AGENT)
    assert '"password":"[redacted]"' in post.request_body and '"clientSecret":"[redacted]"' in post.request_body
    assert '"apiToken":"[redacted]"' in post.request_body and "ana@example.org" in post.request_body
    assert uid in post.response_body and post.client == "127.0.0.1" and post.token_id
    assert rows[1].request_body.count('"value":"[redacted]"') == 2
    lookup = rows[3]
    assert lookup.method == "GET" and lookup.path.startswith("/scim/v2/Users?filter=") and uid in lookup.response_body
    assert not lookup.truncated and all(row.request_id for row in rows)


def test_each_request_is_linked_to_the_account_changes_it_caused(site: Site) -> None:
    scim = Scim(site, token_for(site))
    created = scim.call(
        "POST",
        "/Users",
        {"schemas": [USER], "userName": "bo@example.org", "emails": [{"value": "bo@example.org"}]},
        **{"X-Request-ID": "entra-create-bo"},
    )
    uid = created.json()["id"]
    scim.call("GET", f"/Users/{uid}")
    suspended = scim.call(
        "PATCH",
        f"/Users/{uid}",
        {"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]},
    )
    assert suspended.status_code in (200, 204), suspended.text
    rows = logged(site, 3)
    with site.runtime.engine.connect() as conn:
        made, read, patched = (changes_of(conn, tenant_id(site), row) for row in rows[:3])
        assert changes_of(conn, tenant_id(site, "other"), rows[0]) == []
    assert rows[0].request_id == "entra-create-bo"
    assert made and {e.account_id for e in made} == {uid}
    assert read == []
    assert [e.action for e in patched] == ["suspend"] and patched[0].account_id == uid


def test_a_tenants_old_requests_are_purged_after_its_request_log_days(site: Site) -> None:
    example, other = Scim(site, token_for(site)), Scim(site, token_for(site, "other"))
    for scim in (example, other, example, other):
        scim.call("GET", f'/Users?filter=userName eq "{uuid.uuid4()}"')
    rows = logged(site, 4)
    table = ScimRequest.__table__
    moment = datetime.now(UTC)
    with site.runtime.engine.begin() as conn:
        # example keeps 3 days (its request_log_days), other the default 14.
        first_example, first_other = rows[0].id, rows[1].id
        conn.execute(update(table).where(table.c.id == first_example).values(occurred_at=moment - timedelta(days=4)))
        conn.execute(update(table).where(table.c.id == first_other).values(occurred_at=moment - timedelta(days=4)))
        conn.execute(update(table).where(table.c.id == rows[3].id).values(occurred_at=moment - timedelta(days=15)))
    assert purge_request_log(site.runtime, moment) == 2
    kept = {row.id for row in logged(site, 2)}
    assert kept == {rows[1].id, rows[2].id}


# ---- the console ---------------------------------------------------------------------------------


def test_the_connect_page_shows_each_tokens_requests_and_errors_of_the_last_day(site: Site) -> None:
    entra, okta = Scim(site, token_for(site, label="entra")), Scim(site, token_for(site, label="okta"))
    created = entra.call("POST", "/Users", {"schemas": [USER], "userName": "cy@example.org"})
    entra.call("GET", f"/Users/{created.json()['id']}")
    assert entra.call("GET", "/Users/no-such-user").status_code == 404
    assert entra.call("POST", "/Users", {"schemas": [USER]}).status_code == 400
    okta.session.headers["User-Agent"] = "Okta SCIM Client 1.0.0"
    okta.call("GET", '/Users?filter=userName eq "cy@example.org"')
    rows = logged(site, 5)
    table = ScimRequest.__table__
    with site.runtime.engine.begin() as conn:  # a day and a half ago: still its last request, not counted
        moment = datetime.now(UTC) - timedelta(hours=36)
        conn.execute(update(table).where(table.c.id == rows[4].id).values(occurred_at=moment))

    session = set_up(site, IT, "--tenant", "example")
    page = session.get(f"{site.base}/admin/t/example/connect", timeout=10)
    assert page.status_code == 200
    status = {
        m.group(1): (m.group(2), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(
            r"<tr data-token=\"[^\"]+\"><td>([^<]+)</td><td>.*?</td><td class=\"wide\">([^<]*)</td>"
            r"<td class=\"requests\"><a [^>]*>(\d+)</a></td><td class=\"errors-24h\">(\d+)</td>",
            page.text,
        )
    }
    assert status == {"entra": (AGENT, 4, 2), "okta": ("Okta SCIM Client 1.0.0", 0, 0)}
    assert f"{moment:%Y-%m-%d %H:%M}" in page.text and 'href="/admin/t/example/requests"' in page.text


def test_the_request_log_pages_show_one_tenant_to_its_administrators(site: Site) -> None:
    scim = Scim(site, token_for(site))
    created = scim.call(
        "POST",
        "/Users",
        {"schemas": [USER], "userName": "di@example.org", "password": "Dahlia-Secret-9", "displayName": "Di"},
    )
    uid = created.json()["id"]
    scim.call("GET", "/Users/no-such-user")
    Scim(site, token_for(site, "other")).call("GET", '/Users?filter=userName eq "x"')
    rows = logged(site, 3)
    post, missing, elsewhere = rows[0], rows[1], rows[2]

    session = set_up(site, IT, "--tenant", "example")
    listed = session.get(f"{site.base}/admin/t/example/requests", timeout=10)
    assert listed.status_code == 200
    assert f'href="/admin/t/example/requests/{post.id}"' in listed.text
    assert f'href="/admin/t/example/requests/{missing.id}"' in listed.text
    assert f"/requests/{elsewhere.id}" not in listed.text
    errors = session.get(f"{site.base}/admin/t/example/requests", params={"status": "4xx"}, timeout=10).text
    assert f"/requests/{missing.id}" in errors and f'/requests/{post.id}"' not in errors
    posts = session.get(f"{site.base}/admin/t/example/requests", params={"method": "POST"}, timeout=10).text
    assert f"/requests/{post.id}" in posts and f'/requests/{missing.id}"' not in posts

    shown = session.get(f"{site.base}/admin/t/example/requests/{post.id}", timeout=10)
    assert shown.status_code == 200
    assert "Dahlia-Secret-9" not in shown.text and "[redacted]" in shown.text and "di@example.org" in shown.text
    assert f'href="/admin/t/example/accounts/{uid}"' in shown.text  # the account it created

    # Another tenant's request, page or log: 404, as for a tenant that does not exist.
    assert session.get(f"{site.base}/admin/t/example/requests/{elsewhere.id}", timeout=10).status_code == 404
    assert session.get(f"{site.base}/admin/t/other/requests", timeout=10).status_code == 404
    assert session.get(f"{site.base}/admin/t/other/requests/{elsewhere.id}", timeout=10).status_code == 404
    french = session.get(f"{site.base}/admin/t/example/requests?lang=fr", timeout=10)
    assert "Requêtes SCIM" in french.text


def test_a_log_that_cannot_be_written_never_fails_the_request(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    scim = Scim(site, token_for(site))
    with site.runtime.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE scim_requests")
    created = scim.call("POST", "/Users", {"schemas": [USER], "userName": "eli@example.org"})
    assert created.status_code == 201, created.text
    assert scim.call("GET", '/Users?filter=userName eq "eli@example.org"').json()["totalResults"] == 1
    deadline = time.monotonic() + 15
    while not any("the SCIM request log dropped" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the failed write was not logged"
        time.sleep(0.05)
