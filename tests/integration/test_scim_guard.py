"""The SCIM guard (issue 17), over HTTP against a real `bridge serve` on SQLite and PostgreSQL:
a burst of deprovisioning pushed over SCIM is answered and stored as sent, and past the tenant's
window (defaults: 10% of the live accounts, at least 5, within 60 minutes) its account changes
are held in one plan of source `scim` until a person approves or rejects it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from bridge.store.tables import Alert, AuditEvent, ScimDeprovision, Tenant
from tests.fixtures.scim import ScimClient, account, bridge_cli, new_group, new_user, patch

SUSPEND = {"op": "replace", "path": "active", "value": False}
RESUME = {"op": "replace", "path": "active", "value": True}


def people(scim: ScimClient, n: int) -> list[str]:
    # No roles: nobody waits for a seat, so a suspension changes nobody else.
    return [new_user(scim, f"p{i:03d}")["id"] for i in range(n)]


def statuses(scim: ScimClient, ids: list[str]) -> list[str]:
    return [account(scim, i)["status"] for i in ids]


def scim_plans(scim: ScimClient) -> list[dict[str, Any]]:
    listed = json.loads(bridge_cli(scim.server.config, "plans", "list", "--tenant", scim.tenant, "--json"))
    return [p for p in listed if p["source"] == "scim"]


def tenant_id(scim: ScimClient) -> int:
    with scim.server.db().connect() as conn:
        return int(conn.execute(select(Tenant.id).where(Tenant.name == scim.tenant)).scalar_one())


def alerts(scim: ScimClient) -> list[Any]:
    with scim.server.db().connect() as conn:
        return list(conn.execute(select(Alert).where(Alert.tenant_id == tenant_id(scim))))


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("bridge")
    return subprocess.run(
        [str(exe), "--config", str(config), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_burst_of_suspensions_is_held_past_the_limit_and_applied_when_approved(scim: ScimClient) -> None:
    ids = people(scim, 100)
    before = statuses(scim, ids)
    burst = ids[:30]
    for user_id in burst:
        patch(scim, f"/Users/{user_id}", SUSPEND)

    # The IdP reads back what it sent, for everyone.
    assert all(scim.ok("GET", f"/Users/{u}")["active"] is False for u in burst)
    # 10% of 100 live accounts: the first 10 apply, the 20 after them wait.
    assert statuses(scim, burst[:10]) == ["suspended"] * 10
    assert statuses(scim, burst[10:]) == before[10:30]
    assert statuses(scim, ids[30:]) == before[30:]
    (plan,) = scim_plans(scim)
    assert plan["status"] == "held" and plan["reason"] == "scim_deprovision_limit"
    assert plan["suspended"] == 20
    shown = json.loads(bridge_cli(scim.server.config, "plans", "show", plan["id"], "--json"))
    assert sorted(c["userName"] for c in shown["changes"]) == [f"p{i:03d}" for i in range(10, 30)]
    assert {c["kind"] for c in shown["changes"]} == {"suspend"}
    (alert,) = alerts(scim)
    assert alert.kind == "plan_held" and alert.subject == "scim" and alert.closed_at is None
    # A re-plan of the tenant does not apply them behind the reviewer's back.
    bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant)
    assert statuses(scim, burst[10:]) == before[10:30]

    out = bridge_cli(scim.server.config, "plans", "approve", plan["id"])
    assert "approved and applied" in out and "suspended 20" in out
    assert statuses(scim, burst) == ["suspended"] * 30
    assert statuses(scim, ids[30:]) == before[30:]
    assert scim_plans(scim)[0]["status"] == "approved"
    (alert,) = alerts(scim)
    assert alert.closed_at is not None
    with scim.server.db().connect() as conn:
        approved = conn.execute(
            select(AuditEvent.actor, AuditEvent.after).where(
                AuditEvent.tenant_id == tenant_id(scim), AuditEvent.action == "plan_approved"
            )
        ).one()
    assert approved.actor.startswith("cli:") and approved.after["differences"] == []


def test_rejecting_leaves_the_accounts_and_a_later_replan_does_not_apply_them(scim: ScimClient) -> None:
    ids = people(scim, 20)  # 10% of 20 is 2: the minimum, 5, lets five through
    before = statuses(scim, ids)
    for user_id in ids[:8]:
        patch(scim, f"/Users/{user_id}", SUSPEND)
    assert statuses(scim, ids[:5]) == ["suspended"] * 5
    assert statuses(scim, ids[5:8]) == before[5:8]
    (plan,) = scim_plans(scim)
    assert plan["suspended"] == 3

    out = bridge_cli(scim.server.config, "plans", "reject", plan["id"])
    assert "rejected" in out
    assert statuses(scim, ids[5:8]) == before[5:8]
    assert scim.ok("GET", f"/Users/{ids[5]}")["active"] is False  # the IdP's view is unchanged
    # Neither a re-plan of the tenant nor a pause and resume apply the rejected changes.
    bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant)
    bridge_cli(scim.server.config, "tenants", "pause", scim.tenant)
    bridge_cli(scim.server.config, "tenants", "resume", scim.tenant)
    assert statuses(scim, ids[5:8]) == before[5:8]
    assert alerts(scim)[0].closed_at is not None


def test_a_delete_counts_and_is_held_and_approval_follows_what_the_idp_says_now(scim: ScimClient) -> None:
    ids = people(scim, 20)
    before = statuses(scim, ids)
    for user_id in ids[:5]:
        assert scim.call("DELETE", f"/Users/{user_id}").status_code == 204
    assert statuses(scim, ids[:5]) == ["archived"] * 5
    assert scim.call("DELETE", f"/Users/{ids[5]}").status_code == 204  # the sixth: held
    assert scim.call("GET", f"/Users/{ids[5]}").status_code == 404
    assert account(scim, ids[5])["status"] == before[5]
    patch(scim, f"/Users/{ids[6]}", SUSPEND)  # joins the open plan
    patch(scim, f"/Users/{ids[7]}", SUSPEND)
    assert statuses(scim, ids[6:8]) == before[6:8]
    (plan,) = scim_plans(scim)
    assert (plan["archived"], plan["suspended"]) == (1, 2)
    assert len(alerts(scim)) == 1

    patch(scim, f"/Users/{ids[7]}", RESUME)  # the IdP re-activates one before anyone decides
    done = cli(scim.server.config, "plans", "approve", plan["id"])
    assert done.returncode == 0, done.stderr
    assert "p007: held suspend, applied unchanged" in done.stdout
    assert account(scim, ids[5])["status"] == "archived"
    assert account(scim, ids[6])["status"] == "suspended"
    assert account(scim, ids[7])["status"] == before[7]


def test_a_slow_trickle_outside_the_window_is_not_held(scim: ScimClient) -> None:
    ids = people(scim, 20)
    for user_id in ids[:5]:
        patch(scim, f"/Users/{user_id}", SUSPEND)
    # An hour and more passes (the window's rows are moved back rather than the clock on).
    with scim.server.db().begin() as conn:
        conn.execute(
            update(ScimDeprovision)
            .where(ScimDeprovision.tenant_id == tenant_id(scim))
            .values(at=datetime.now(UTC) - timedelta(minutes=61))
        )
    for user_id in ids[5:10]:
        patch(scim, f"/Users/{user_id}", SUSPEND)
    assert statuses(scim, ids[:10]) == ["suspended"] * 10
    assert scim_plans(scim) == []
    assert alerts(scim) == []


def test_group_removals_that_take_every_role_count_too(scim: ScimClient) -> None:
    ids = people(scim, 12)
    group = new_group(scim, "front-desk", ids)["id"]
    assert {account(scim, u)["roles"] == ["front_desk"] for u in ids} == {True}
    for user_id in ids[:7]:  # the IdP removes them from the group one by one
        patch(scim, f"/Groups/{group}", {"op": "remove", "path": f'members[value eq "{user_id}"]'})
    assert [account(scim, u)["roles"] for u in ids[:5]] == [[]] * 5
    assert [account(scim, u)["roles"] for u in ids[5:7]] == [["front_desk"]] * 2
    (plan,) = scim_plans(scim)
    shown = json.loads(bridge_cli(scim.server.config, "plans", "show", plan["id"], "--json"))
    assert sorted(c["userName"] for c in shown["changes"]) == ["p005", "p006"]
    assert {c["kind"] for c in shown["changes"]} == {"revoke_roles"}
    bridge_cli(scim.server.config, "plans", "approve", plan["id"])
    assert [account(scim, u)["roles"] for u in ids[:7]] == [[]] * 7
    assert [account(scim, u)["roles"] for u in ids[7:]] == [["front_desk"]] * 5
