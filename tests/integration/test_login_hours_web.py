"""Login hours over HTTP (issue 19): `POST /api/v1/verify-password` refuses a correct password
outside the person's windows with `reason: "outside_login_hours"`; the windows come from the
mapping's [[login_hours]] through a sync and show in `users show --json`.

The windows are built around the current UTC hour (one that contains it, one that leaves out two
hours on each side of it), so the test is deterministic whatever time it runs at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from tests.conftest import Deployment
from tests.fixtures.scim import ACCOUNT, ScimClient, ScimServer, bridge_cli, new_server, new_token, new_user
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge
from tests.integration.test_activation_web import PASSWORD, Site, activate_alice, check, product_token, serve


@pytest.fixture
def site(deployment: Deployment, smtp_server: SmtpServer) -> Iterator[Site]:
    yield from serve(deployment, smtp_server)


def restrict_alice(site: Site, hours: str | None) -> dict[str, object]:
    """Give Alice (employeeNumber 1001) one [[login_hours]] window every day (None: none), sync,
    and return her `users show --json`."""
    mapping = site.deployment.mapping
    text = mapping.read_text().split("\n# test: login hours\n")[0]
    if hours is not None:
        text += (
            '\n# test: login hours\n[[login_hours]]\nattribute = "employeeNumber"\nequals = "1001"\n'
            f'days = "mon-sun"\nhours = "{hours}"\ntime_zone = "UTC"\n'
        )
    mapping.write_text(text)
    result = bridge(site.deployment, "sync")
    assert result.exit_code == 0, result.output
    return dict(json.loads(bridge(site.deployment, "users", "show", "agarnier", "--json").output))


def test_verify_password_refuses_a_correct_password_outside_the_login_hours(site: Site) -> None:
    activate_alice(site)
    token = product_token(site, "--read-only")
    assert site.account("agarnier")["loginHours"] is None
    hour = datetime.now(UTC).hour
    # Inside: from an hour before now to two hours after (across midnight when it must).
    inside = f"{(hour - 1) % 24:02d}:00-{(hour + 2) % 24:02d}:00"
    shown = restrict_alice(site, inside)
    assert shown["loginHours"] == {"mapping": [{"days": "mon-sun", "hours": inside, "time_zone": "UTC"}]}
    assert check(site, token, "agarnier", PASSWORD).json() == {"valid": True}

    # Outside: every hour but the two on each side of now.
    outside = f"{(hour + 2) % 24:02d}:00-{(hour - 2) % 24:02d}:00"
    shown = restrict_alice(site, outside)
    assert shown["loginHours"] == {"mapping": [{"days": "mon-sun", "hours": outside, "time_zone": "UTC"}]}
    assert check(site, token, "agarnier", PASSWORD).json() == {"valid": False, "reason": "outside_login_hours"}
    explained = json.loads(bridge(site.deployment, "explain", "agarnier", "--json").output)
    assert explained["loginHours"] == shown["loginHours"]
    assert explained["loginHoursEntries"] == [
        {"entry": 'login_hours 1: attribute employeenumber = "1001"', "matched": True, "days": "mon-sun"}
        | {"hours": outside, "time_zone": "UTC"}
    ]
    assert "MATCH login_hours 1" in bridge(site.deployment, "explain", "agarnier").output
    # A wrong password keeps its plain answer: the reason is only for someone who knows it.
    assert check(site, token, "agarnier", PASSWORD + "x").json() == {"valid": False}
    # The change is audited as an update of the account.
    history = [h["action"] for h in shown["history"]]  # type: ignore[union-attr]
    assert history.count("update") == 2

    # The entry removed: no restriction again.
    assert restrict_alice(site, None)["loginHours"] is None
    assert check(site, token, "agarnier", PASSWORD).json() == {"valid": True}


@pytest.fixture(params=["sqlite"])
def scim_hours(request: pytest.FixtureRequest) -> Iterator[ScimServer]:
    """A `bridge serve` whose mapping restricts SCIM role "Kiosk" to weekday mornings in Paris."""
    with new_server(request, request.param, "bridge-hours-") as server:
        mapping = server.root / "mapping.toml"
        mapping.write_text(
            mapping.read_text() + '\n[[login_hours]]\nscim_role = "Kiosk"\ndays = "mon-fri"\nhours = "07:00-12:00"\n'
            'time_zone = "Europe/Paris"\n'
        )
        bridge_cli(server.config, "db", "upgrade")
        server.start()
        yield server


def test_the_scim_account_extension_and_webhook_account_show_the_login_hours(scim_hours: ScimServer) -> None:
    scim = ScimClient(scim_hours, *new_token(scim_hours))
    kiosk = new_user(scim, "kiosk", roles=[{"value": "Kiosk"}, {"value": "Administrator"}])["id"]
    free = new_user(scim, "free", roles=[{"value": "Administrator"}])["id"]
    _, token = new_token(scim_hours, scim.tenant, read_only=True)
    product = ScimClient(scim_hours, scim.tenant, token)
    assert product.ok("GET", f"/Users/{kiosk}")[ACCOUNT]["loginHours"] == [
        {"type": "mapping", "days": "mon-fri", "hours": "07:00-12:00", "timeZone": "Europe/Paris"}
    ]
    assert "loginHours" not in product.ok("GET", f"/Users/{free}")[ACCOUNT]
    schema = product.ok("GET", "/Schemas/urn:bridge:params:scim:schemas:extension:2.0:Account")
    assert "loginHours" in [a["name"] for a in schema["attributes"]]
    # The product's feed names the account with the same windows (webhooks carry the same `account`).
    feed = requests.get(f"{scim_hours.url}/api/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    accounts = {e["account"]["userName"]: e["account"] for e in feed.json()["events"]}
    assert accounts["kiosk"]["loginHours"] == {
        "mapping": [{"days": "mon-fri", "hours": "07:00-12:00", "time_zone": "Europe/Paris"}]
    }
    assert accounts["free"]["loginHours"] is None
