"""The change feed under concurrent writers on PostgreSQL (issue 18, done-when): two `bridge
serve` processes take SCIM writes from several threads at once while a reader follows
`GET /api/v1/events`; the reader must see every event exactly once, in commit order.

Ids and timestamps are taken in one order and committed in another: a feed keyed on them skips
the event of a transaction that commits after a later one was already read. This test writes
with enough overlap for that to happen many times over, and compares what the reader saw, page by
page while the writes went on, with the whole event table at the end.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from bridge.store.tables import AccountEventRow, Tenant
from tests.fixtures.scim import PATCH, ScimClient, ScimServer, _free_port, bridge_cli, new_server, new_token, new_user

WRITERS_PER_SERVER = 3
USERS_PER_WRITER = 15


def _write(client: ScimClient, prefix: str, errors: list[str]) -> None:
    try:
        for i in range(USERS_PER_WRITER):
            user = new_user(client, f"{prefix}-{i}@example.org")
            for active in (False, True):  # account.suspended, then account.resumed
                client.ok(
                    "PATCH",
                    f"/Users/{user['id']}",
                    {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": active}]},
                )
    except Exception as exc:  # reported by the test, not lost in the thread
        errors.append(f"{prefix}: {exc!r}")


def _follow(base: str, token: str, done: threading.Event, seen: list[dict[str, Any]], errors: list[str]) -> None:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    after: str | None = None
    try:
        while True:
            finished = done.is_set()  # read before the page: the last page is read after the writes
            params: dict[str, Any] = {"limit": 7}
            if after is not None:
                params["after"] = after
            response = http.get(f"{base}/api/v1/events", params=params, timeout=60)
            assert response.status_code == 200, response.text
            body = response.json()
            seen.extend(body["events"])
            after = body["next"]
            if finished and not body["hasMore"]:
                return
    except Exception as exc:
        errors.append(f"reader: {exc!r}")


def test_two_servers_writing_at_once_feed_a_reader_every_event_once_in_commit_order(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with new_server(request, "postgresql", "bridge-feed-") as first:
        # Every person is suspended once: the SCIM guard would hold that burst (issue 17), which
        # is not what this test is about.
        text = first.config.read_text().replace(
            "seat_limit = 50\n", "seat_limit = 50\nscim_deprovision_minimum = 100000\n"
        )
        first.config.write_text(text)
        bridge_cli(first.config, "db", "upgrade")
        tenant, scim_token = new_token(first)
        _, product_token = new_token(first, tenant, read_only=True)
        second = ScimServer(root=tmp_path, db_url=first.db_url, config=first.config, port=_free_port())
        first.start()
        second.start()
        try:
            errors: list[str] = []
            seen: list[dict[str, Any]] = []
            done = threading.Event()
            reader = threading.Thread(target=_follow, args=(first.url, product_token, done, seen, errors))
            reader.start()
            writers = [
                threading.Thread(target=_write, args=(ScimClient(server, tenant, scim_token), f"{name}{n}", errors))
                for name, server in (("a", first), ("b", second))
                for n in range(WRITERS_PER_SERVER)
            ]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(timeout=600)
            done.set()
            reader.join(timeout=600)
            assert not errors, errors
        finally:
            second.stop()

        with first.db().connect() as conn:
            tenant_id = conn.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one()
            rows = conn.execute(
                select(AccountEventRow.position, AccountEventRow.payload)
                .where(AccountEventRow.tenant_id == tenant_id)
                .order_by(AccountEventRow.position)
            ).all()
    expected = WRITERS_PER_SERVER * 2 * USERS_PER_WRITER * 3  # created, suspended, resumed
    assert len(rows) >= expected
    # Positions are the commit order, gapless: 1..N.
    assert [r.position for r in rows] == list(range(1, len(rows) + 1))
    seen_ids = [e["id"] for e in seen]
    assert len(seen_ids) == len(set(seen_ids)), "an event was read twice"
    # Every event, exactly once, in the table's (commit) order: nothing was passed over.
    assert seen_ids == [r.payload["id"] for r in rows]
    # Each account's own events in the order they happened.
    for account_id in {e["account"]["id"] for e in seen}:
        types = [e["type"] for e in seen if e["account"]["id"] == account_id]
        assert types[0] == "account.created" and types[-2:] == ["account.suspended", "account.resumed"], types
