"""scim2-tester against a real `bridge serve`, on an empty tenant: every check must pass."""

from __future__ import annotations

from tests.fixtures.scim import ScimClient


def test_scim2_tester_passes_every_check_on_an_empty_tenant(scim: ScimClient) -> None:
    from httpx2 import Client
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    with Client(base_url=scim.server.base, headers={"Authorization": f"Bearer {scim.token}"}) as http:
        client = SyncSCIMClient(http)
        client.discover()
        results = check_server(client)
    failures = [(r.status.name, r.title, r.reason) for r in results if r.status is not Status.SUCCESS]
    assert len(results) > 100
    assert not failures, failures
