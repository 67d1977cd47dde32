"""Pausing a tenant (issue 17): while paused, what the sources send is stored and no account
changes; resuming plans the tenant once. Over SCIM against a real `bridge serve` (SQLite and
PostgreSQL), and for a directory source through `bridge sync`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update

from bridge.store.tables import Account, AuditEvent, SyncRun, Tenant
from tests.conftest import Deployment
from tests.fixtures.scim import ScimClient, account, bridge_cli, new_user, patch
from tests.integration.notify_support import bridge, runtime_of

LOCKED = "pwdAccountLockedTime"


def account_events(scim: ScimClient) -> list[tuple[str, str]]:
    """(account id, action) of every account event of the tenant, oldest first."""
    with scim.server.db().connect() as conn:
        tenant_id = conn.execute(select(Tenant.id).where(Tenant.name == scim.tenant)).scalar_one()
        rows = conn.execute(
            select(AuditEvent.account_id, AuditEvent.action)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.account_id.is_not(None))
            .order_by(AuditEvent.id)
        ).all()
    return [(r.account_id, r.action) for r in rows]


def has_account(scim: ScimClient, user_id: str) -> bool:
    with scim.server.db().connect() as conn:
        return conn.execute(select(func.count()).where(Account.id == user_id)).scalar_one() == 1


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("bridge")
    return subprocess.run([str(exe), "--config", str(config), *args], capture_output=True, text=True, timeout=120)


def test_scim_writes_while_paused_are_stored_and_applied_once_on_resume(scim: ScimClient) -> None:
    alice = new_user(scim, "alice", roles=[{"value": "Administrator"}])["id"]
    bob = new_user(scim, "bob", roles=[{"value": "Administrator"}])["id"]
    assert account(scim, alice)["status"] == account(scim, bob)["status"] == "pending"
    assert "paused" in bridge_cli(scim.server.config, "tenants", "pause", scim.tenant)
    before = account_events(scim)

    carol = new_user(scim, "carol", roles=[{"value": "Administrator"}])["id"]
    patch(scim, f"/Users/{alice}", {"op": "replace", "path": "active", "value": False})
    assert scim.call("DELETE", f"/Users/{bob}").status_code == 204

    # The identity provider's view is what it sent; the product's accounts have not moved.
    assert scim.ok("GET", f"/Users/{carol}")["userName"] == "carol"
    assert scim.ok("GET", f"/Users/{alice}")["active"] is False
    assert scim.call("GET", f"/Users/{bob}").status_code == 404
    assert not has_account(scim, carol)
    assert account(scim, alice)["status"] == account(scim, bob)["status"] == "pending"
    assert account_events(scim) == before
    listed = json.loads(bridge_cli(scim.server.config, "tenants", "list", "--json"))
    assert next(t for t in listed if t["name"] == scim.tenant)["paused"] is not None

    resumed = cli(scim.server.config, "tenants", "resume", scim.tenant)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "scim (resume)" in resumed.stdout
    assert account(scim, carol) | {"userName": ""} == {
        "status": "pending",
        "roles": ["administration"],
        "mails": 1,
        "userName": "",
        "tenant": scim.tenant,
    }
    assert account(scim, alice)["status"] == "suspended"
    assert account(scim, bob)["status"] == "archived"
    applied = account_events(scim)[len(before) :]
    assert sorted(a for i, a in applied if i == alice) == ["suspend"]
    assert [a for i, a in applied if i == bob].count("archive") == 1  # with its roles revoked, as a DELETE does
    assert "create" in [a for i, a in applied if i == carol]

    # Once: resuming again runs nothing, and a re-plan finds nothing left to do.
    again = cli(scim.server.config, "tenants", "resume", scim.tenant)
    assert again.returncode == 0 and "was not paused" in again.stdout
    replanned = json.loads(bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant, "--json"))
    assert replanned["paused"] is False
    assert account_events(scim)[len(before) + len(applied) :] == []
    with scim.server.db().connect() as conn:
        audit = conn.execute(
            select(AuditEvent.action, AuditEvent.actor).where(
                AuditEvent.action.in_(["tenant_paused", "tenant_resumed"])
            )
        ).all()
    assert sorted(a for a, _ in audit) == ["tenant_paused", "tenant_resumed"]
    assert all(actor.startswith("cli:") for _, actor in audit)


def test_a_paused_directory_sync_reads_nothing_and_resume_runs_it_in_full(deployment: Deployment) -> None:
    assert bridge(deployment, "sync").exit_code == 0
    leaver = deployment.people()[0]
    assert json.loads(bridge(deployment, "users", "show", leaver, "--json").output)["status"] != "suspended"
    assert bridge(deployment, "tenants", "pause", "example").exit_code == 0
    assert "already paused" in bridge(deployment, "tenants", "pause", "example").output
    deployment.edit_person(leaver, LOCKED, "000001010000Z")

    ran = bridge(deployment, "sync", "--json")
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.output)
    assert result["paused"] is True and result["suspended"] == 0 and "paused" in result["reason"]
    assert json.loads(bridge(deployment, "users", "show", leaver, "--json").output)["status"] != "suspended"
    # A dry run still shows what resuming will do.
    dry = json.loads(bridge(deployment, "sync", "--dry-run", "--json").output)
    assert dry["paused"] is False and dry["suspended"] == 1
    replan = json.loads(bridge(deployment, "replan", "--tenant", "example", "--json").output)
    assert replan["paused"] is True and replan["suspended"] == 0

    resumed = bridge(deployment, "tenants", "resume", "example")
    assert resumed.exit_code == 0, resumed.output
    assert "dir (full)" in resumed.output
    shown = json.loads(bridge(deployment, "users", "show", leaver, "--json").output)
    assert shown["status"] == "suspended"
    assert [h["action"] for h in shown["history"]].count("suspend") == 1
    with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
        outcomes = conn.execute(select(SyncRun.source, SyncRun.outcome).order_by(SyncRun.id)).all()
    assert ("dir", "paused") in outcomes and ("replan", "paused") in outcomes
    assert outcomes[-1][1] == "ok"


def test_a_resume_that_did_not_finish_is_caught_up_by_the_replan_job(scim: ScimClient) -> None:
    from bridge.engine.pause import finish_catch_ups
    from bridge.runtime import open_runtime

    bridge_cli(scim.server.config, "tenants", "pause", scim.tenant)
    dave = new_user(scim, "dave", roles=[{"value": "Administrator"}])["id"]
    # What a process that crashed right after clearing the pause leaves behind.
    with scim.server.db().begin() as conn:
        conn.execute(
            update(Tenant.__table__)
            .where(Tenant.__table__.c.name == scim.tenant)
            .values(paused_at=None, catch_up_due_at=datetime.now(UTC))
        )
    assert not has_account(scim, dave)
    runtime = open_runtime(scim.server.config)
    try:
        (caught_up,) = finish_catch_ups(runtime.config, runtime.engine, actor="scheduler:replan")
        assert caught_up.tenant == scim.tenant and caught_up.counts["created"] == 1
        assert finish_catch_ups(runtime.config, runtime.engine, actor="scheduler:replan") == []
    finally:
        runtime.engine.dispose()
    assert account(scim, dave)["status"] == "pending"
