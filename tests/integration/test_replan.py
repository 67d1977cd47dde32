"""Re-planning accounts no sync touches (issue 12, item 3): people pushed over SCIM follow a
mapping change (at the scheduler's start, and with `bridge replan`), get a seat or a role slot that
frees up, and `explain` tells the truth about them. Against a real `bridge serve` and the real
`bridge` command, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.store.tables import Account, AuditEvent, OutboxMessage, RoleGrant, SyncRun, Tenant
from tests.conftest import stale_held_roles
from tests.fixtures.scim import ScimClient, account, bridge_cli, new_group, new_user, patch

ADMIN = [{"value": "Administrator"}]


def own_mapping(scim: ScimClient) -> Path:
    """Give the test's tenant a mapping file of its own (the others share the example's), which
    `bridge` reads at once and the running server at its next start."""
    server = scim.server
    mapping = server.root / f"mapping-{scim.tenant}.toml"
    mapping.write_text((server.root / "mapping.toml").read_text())
    text = server.config.read_text()
    before = f'name = "{scim.tenant}"\nmappings = "mapping.toml"\n'
    assert before in text
    server.config.write_text(text.replace(before, f'name = "{scim.tenant}"\nmappings = "{mapping.name}"\n'))
    return mapping


def rename_front_desk_rule(mapping: Path) -> None:
    text = mapping.read_text()
    assert 'group_name = "front-desk"' in text
    mapping.write_text(text.replace('group_name = "front-desk"', 'group_name = "Front Desk"'))


def state_of_tenant(scim: ScimClient) -> dict[str, Any]:
    """Everything a re-plan could write for the tenant."""
    with scim.server.db().connect() as conn:
        tenant = conn.execute(select(Tenant.id, Tenant.mapping_fingerprint).where(Tenant.name == scim.tenant)).one()

        def count(table: Any) -> int:
            return conn.execute(
                select(func.count()).select_from(table).where(table.tenant_id == tenant.id)
            ).scalar_one()

        assert stale_held_roles(conn) == []  # every re-plan keeps the seat count's copy right
        accounts = conn.execute(
            select(Account.id, Account.status, Account.version, Account.denied)
            .where(Account.tenant_id == tenant.id)
            .order_by(Account.id)
        ).all()
        return {
            "fingerprint": tenant.mapping_fingerprint,
            "accounts": [tuple(a) for a in accounts],
            "grants": count(RoleGrant),
            "audit": count(AuditEvent),
            "outbox": count(OutboxMessage),
            "runs": count(SyncRun),
        }


def replan_runs(scim: ScimClient) -> list[Any]:
    with scim.server.db().connect() as conn:
        return list(
            conn.execute(
                select(SyncRun.outcome, SyncRun.mode, SyncRun.counts, SyncRun.reason)
                .join(Tenant, Tenant.id == SyncRun.tenant_id)
                .where(Tenant.name == scim.tenant, SyncRun.source == "replan")
                .order_by(SyncRun.id)
            ).all()
        )


def denied_of(scim: ScimClient, user_id: str) -> dict[str, str]:
    with scim.server.db().connect() as conn:
        return dict(conn.execute(select(Account.denied).where(Account.id == user_id)).scalar_one() or {})


def explain(scim: ScimClient, user_name: str) -> dict[str, Any]:
    return json.loads(bridge_cli(scim.server.config, "explain", user_name, "--tenant", scim.tenant, "--json"))  # type: ignore[no-any-return]


def role_outcome(data: dict[str, Any], role: str) -> str:
    return next(r["outcome"] for r in data["roles"] if r["role"] == role)


def test_replan_applies_a_mapping_change_to_scim_accounts_and_dry_run_writes_nothing(scim: ScimClient) -> None:
    mapping = own_mapping(scim)
    alice = new_user(scim, "alice")
    new_group(scim, "Front Desk", [alice["id"]])
    assert account(scim, alice["id"])["roles"] == []  # the rule names "front-desk"
    rename_front_desk_rule(mapping)

    # explain reads the new mapping: the role is granted, but nothing applied it yet, and no
    # "next sync" ever comes for a SCIM account.
    shown = explain(scim, "alice")
    outcome = role_outcome(shown, "front_desk")
    assert "next sync" not in outcome and "not applied yet" in outcome
    assert f"bridge replan --tenant {scim.tenant}" in outcome
    assert "mapping (or seat limit) changed" in shown["statusReason"]

    before = state_of_tenant(scim)
    planned = json.loads(bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant, "--dry-run", "--json"))
    assert planned["source"] == "replan" and planned["tenant"] == scim.tenant and planned["dryRun"] is True
    assert (planned["rolesChanged"], planned["created"], planned["archived"]) == (1, 0, 0)
    assert state_of_tenant(scim) == before, "a dry run wrote something"
    text = bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant, "--dry-run")
    assert "alice" in text and "would change" in text

    applied = json.loads(bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant, "--json"))
    assert applied["source"] == "replan" and applied["dryRun"] is False
    assert (applied["rolesChanged"], applied["archived"], applied["unchanged"]) == (1, 0, 0)
    after = account(scim, alice["id"])
    assert (after["roles"], after["status"], after["mails"]) == (["front_desk"], "pending", 1)
    assert role_outcome(explain(scim, "alice"), "front_desk") == "held"
    assert [(r.outcome, r.mode) for r in replan_runs(scim)] == [("ok", "full")]
    history = json.loads(bridge_cli(scim.server.config, "sync", "--history", "--json"))
    assert any(h["source"] == "replan" and h["tenant"] == scim.tenant for h in history)

    # Once applied, the mapping is the one the accounts follow: a second run changes nothing.
    again = json.loads(bridge_cli(scim.server.config, "replan", "--tenant", scim.tenant, "--json"))
    assert (again["rolesChanged"], again["unchanged"]) == (0, 1)
    assert account(scim, alice["id"])["mails"] == 1


def test_a_waiting_scim_user_gets_the_max_holders_slot_a_holder_gives_up(scim: ScimClient) -> None:
    # administration has max_holders = 3: the fourth candidate waits, in userName order.
    holders = [new_user(scim, f"adm-{c}", roles=ADMIN) for c in "abc"]
    waiting = new_user(scim, "adm-d", roles=ADMIN)
    assert [account(scim, h["id"])["roles"] for h in holders] == [["administration"]] * 3
    assert account(scim, waiting["id"])["roles"] == []
    assert denied_of(scim, waiting["id"]) == {"administration": "max_holders"}

    # SCIM DELETE of a holder: the waiting one gets the slot, of the request itself.
    scim.ok("DELETE", f"/Users/{holders[0]['id']}", status=204)
    got = account(scim, waiting["id"])
    assert (got["roles"], got["status"], got["mails"]) == (["administration"], "pending", 1)
    assert denied_of(scim, waiting["id"]) == {}

    # `bridge users archive` of a holder: the same for the next one waiting.
    late = new_user(scim, "adm-e", roles=ADMIN)
    assert account(scim, late["id"])["roles"] == []
    bridge_cli(scim.server.config, "users", "archive", "adm-b", "--tenant", scim.tenant)
    assert account(scim, late["id"])["roles"] == ["administration"]
    # An archived account is never planned back to life by any of this.
    assert account(scim, holders[1]["id"])["status"] == "archived"
    assert account(scim, holders[0]["id"])["status"] == "archived"


def test_a_denial_is_recorded_and_explained_for_a_scim_user_who_changes_nothing_else(scim: ScimClient) -> None:
    for c in "abc":
        new_user(scim, f"boss-{c}", roles=ADMIN)
    late = new_user(scim, "boss-d")
    assert denied_of(scim, late["id"]) == {}
    # The role arrives by a PATCH: no account change follows (the slot is full), only the denial.
    patch(scim, f"/Users/{late['id']}", {"op": "add", "path": "roles", "value": ADMIN})
    assert account(scim, late["id"])["roles"] == []
    assert denied_of(scim, late["id"]) == {"administration": "max_holders"}
    shown = explain(scim, "boss-d")
    assert role_outcome(shown, "administration").startswith("left out: the role's max_holders is reached")
    assert "roles left out: administration (max_holders)" in shown["statusReason"]
    listed = json.loads(bridge_cli(scim.server.config, "users", "show", "boss-d", "--tenant", scim.tenant, "--json"))
    assert listed["leftOut"] == {"administration": "max_holders"}


def test_the_scheduler_re_plans_scim_accounts_of_a_changed_mapping_at_start(scim: ScimClient) -> None:
    mapping = own_mapping(scim)
    bob = new_user(scim, "bob")
    new_group(scim, "Front Desk", [bob["id"]])
    assert account(scim, bob["id"])["roles"] == []
    server = scim.server
    server.stop()
    rename_front_desk_rule(mapping)
    server.start(scheduler=True)
    try:
        deadline = time.monotonic() + 90
        while account(scim, bob["id"])["roles"] != ["front_desk"]:
            if time.monotonic() > deadline:
                pytest.fail(
                    "the SCIM account did not follow the mapping change:\n"
                    + (server.root / "serve.log").read_text()[-3000:]
                )
            time.sleep(0.2)
        assert account(scim, bob["id"])["status"] == "pending"
        deadline = time.monotonic() + 30
        while not replan_runs(scim):  # recorded once the run is over
            assert time.monotonic() < deadline, "no replan run recorded"
            time.sleep(0.2)
        run = replan_runs(scim)[-1]
        assert (run.outcome, run.mode, run.reason, run.counts["rolesChanged"]) == (
            "ok",
            "full",
            "the mapping changed",
            1,
        )
    finally:
        # The rest of the module runs against a server without background jobs again.
        server.stop()
        server.start()
