"""The access log (`[server] access_log`, on by default) over HTTP on `bridge serve` (granian, two
workers): one line per request, the fast lane's answers included, with method, path, status,
duration, tenant, token label and request id, and never the token, a body or a query value
(issue 12, "No request log at any level")."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.fixtures.scim import SCIM_JSON, USER, ScimServer, bridge_cli, new_server

LABEL = "entra-prod"
SECRET_BODY = "Zanzibarella"  # a given name: body content that must stay out of the log
SECRET_QUERY = "quetzalcoatl@example.org"  # a filter value: personal data, kept out too


@pytest.fixture(params=[("sqlite", "text"), ("postgresql", "json")], ids=["sqlite-text", "postgresql-json"])
def logged_server(request: pytest.FixtureRequest) -> Iterator[tuple[ScimServer, str, str]]:
    kind, fmt = request.param
    with new_server(request, kind, "bridge-access-") as server:
        with server.config.open("a") as config:
            config.write(f'\n[logging]\nformat = "{fmt}"\n')  # access_log is not set: on by default
        bridge_cli(server.config, "db", "upgrade")
        from bridge.store.db import transaction
        from bridge.store.tenants import get_tenant
        from bridge.store.tokens import create_token

        with transaction(server.db()) as conn:
            _, token = create_token(conn, get_tenant(conn, "t1").id, LABEL, False, datetime.now(UTC))
        server.start()
        yield server, token, fmt


def _access_lines(server: ScimServer, fmt: str) -> dict[str, Any]:
    """The access lines of the server's log by request id: parsed JSON, or the text line."""
    found: dict[str, Any] = {}
    for line in (server.root / "serve.log").read_text(errors="replace").splitlines():
        if fmt == "json":
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry["logger"] == "bridge.access":
                found[entry["correlation_id"]] = entry
        elif " bridge.access: " in line:
            rid = re.search(r" \[([^\]]+)\]$", line)
            assert rid, line
            found[rid.group(1)] = line
    return found


def test_every_request_is_logged_without_secrets(logged_server: tuple[ScimServer, str, str]) -> None:
    server, token, fmt = logged_server
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON})
    sent: dict[str, tuple[str, str, int, str | None]] = {}  # request id: method, path, status, tenant

    def call(rid: str, method: str, path: str, status: int, tenant: str | None = "t1", **kw: Any) -> Any:
        response = http.request(method, server.url + path, headers={"X-Request-ID": rid}, timeout=30, **kw)
        assert response.status_code == status, response.text
        assert response.headers["X-Request-ID"] == rid
        sent[rid] = (method, path.split("?")[0], status, tenant)
        return response

    # Entra's "Test Connection" and its lookups: the shape the fast lane answers, on both workers.
    for i in range(8):
        call(f"lookup-{i}", "GET", f'/scim/v2/Users?filter=userName eq "{SECRET_QUERY}"', 200)
    created = call(
        "create",
        "POST",
        "/scim/v2/Users",
        201,
        json={"schemas": [USER], "userName": "ada@example.org", "name": {"givenName": SECRET_BODY}},
    ).json()
    call("read", "GET", f"/scim/v2/Users/{created['id']}?attributes=userName", 200)
    response = requests.get(f"{server.base}/Users", headers={"X-Request-ID": "no-token"}, timeout=30)
    assert response.status_code == 401
    sent["no-token"] = ("GET", "/scim/v2/Users", 401, None)
    response = requests.get(
        f"{server.base}/Users",
        headers={"X-Request-ID": "bad-token", "Authorization": "Bearer brg_wrongwrongwrong"},
        timeout=30,
    )
    assert response.status_code == 401
    sent["bad-token"] = ("GET", "/scim/v2/Users", 401, None)
    # A client that puts a token in the path, or a line break to forge a log line of its own.
    pasted = "brg_" + "p" * 40
    call("pasted", "GET", f"/scim/v2/Users/{pasted}", 404)
    call("forged", "GET", "/scim/v2/Users/x%0A2026-01-01 INFO bridge.access: GET /forged", 404, tenant=None)
    sent["pasted"] = ("GET", "/scim/v2/Users/brg_[redacted]", 404, "t1")
    sent["forged"] = ("GET", "/scim/v2/Users/x\\u000a2026-01-01 INFO bridge.access: GET /forged", 404, None)
    link = "A" * 43  # an activation link's token: a secret in the path
    response = requests.get(f"{server.url}/activate/{link}", headers={"X-Request-ID": "activate"}, timeout=30)
    sent["activate"] = ("GET", "/activate/<token>", response.status_code, None)

    deadline = time.monotonic() + 60
    while not set(sent) <= set(lines := _access_lines(server, fmt)):
        assert time.monotonic() < deadline, f"not logged: {set(sent) - set(lines)}"
        time.sleep(0.2)

    log_text = (server.root / "serve.log").read_text(errors="replace")
    for secret in (token, token[4:], SECRET_BODY, SECRET_QUERY, "brg_wrongwrongwrong", link, pasted):
        assert secret not in log_text
    assert not [line for line in log_text.splitlines() if line.startswith("2026-01-01")]
    for rid, (method, path, status, tenant) in sent.items():
        line = lines[rid]
        if fmt == "json":
            assert (line["method"], line["path"], line["status"], line["tenant"]) == (method, path, status, tenant)
            assert line["token_label"] == (LABEL if tenant else None)
            assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        else:
            assert f"INFO bridge.access: {method} {path}" in line and f" status={status} " in line
            assert f" tenant={tenant or '-'} " in line and f" token_label={LABEL if tenant else '-'} " in line
            assert re.search(r" ms=\d+\.\d ", line), line
    # Probes are not logged unless they fail (the fixture polled /healthz until it answered).
    assert "GET /healthz" not in log_text
    # Query parameters by name only.
    if fmt == "json":
        assert lines["lookup-0"]["query"] == ["filter"] and lines["read"]["query"] == ["attributes"]
    else:
        assert "/scim/v2/Users?filter status=200" in lines["lookup-0"]
