"""User names that cannot change (issue 19): with the tenant key `user_name_changes = "recreate"`
a changed userName archives the account (reason `renamed`) and creates a new one with its own
activation, the audit events naming each other; `update` (the default) renames in place.

Directory sync (LDIF, the example directory) with the real outbox worker and aiosmtpd, and SCIM
through a real `bridge serve` (a PATCH and a PUT of userName)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from bridge.store.tables import Account, AuditEvent, Identity, OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.scim import (
    PATCH,
    USER,
    ScimClient,
    ScimServer,
    bridge_cli,
    new_group,
    new_server,
    new_token,
    new_user,
)
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import LINK, bridge, mails_to, notify_config, run_worker, runtime_of

ALICE = "agarnier"
ALICE_MAIL = "alice.garnier@example.org"


def configure(d: Deployment, tenant_keys: str, extra: str = "") -> None:
    d.write_config(extra=extra)
    text = d.config.read_text().replace('mappings = "mapping.toml"\n', f'mappings = "mapping.toml"\n{tenant_keys}', 1)
    d.config.write_text(text)


def accounts_of(d: Deployment, *names: str) -> list[Any]:
    with runtime_of(d) as runtime, runtime.engine.connect() as conn:
        table = Account.__table__
        query = select(table).where(table.c.user_name.in_(names)).order_by(table.c.created_at, table.c.id)
        return list(conn.execute(query).all())


def audit_of(engine: Any, account_id: str) -> list[Any]:
    with engine.connect() as conn:
        table = AuditEvent.__table__
        query = select(table).where(table.c.account_id == account_id).order_by(table.c.id)
        return list(conn.execute(query).all())


def assert_linked(engine: Any, old: Any, new: Any) -> None:
    """The old account archived (reason renamed) naming the new one, the new one naming the old."""
    assert old.status == "archived" and old.id != new.id
    archive = [e for e in audit_of(engine, old.id) if e.action == "archive"]
    assert len(archive) == 1 and archive[0].reason == "renamed", archive
    assert archive[0].after["detail"]["renamedTo"] == new.id
    assert archive[0].after["status"] == "archived"
    create = [e for e in audit_of(engine, new.id) if e.action == "create"]
    assert len(create) == 1 and create[0].after["detail"]["replaces"] == old.id
    assert create[0].reason.startswith("renamed")


def test_a_renamed_person_gets_a_new_account_and_a_second_activation(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    configure(deployment, 'user_name_changes = "recreate"\n', extra=notify_config(smtp=smtp_server))
    assert bridge(deployment, "sync").exit_code == 0
    run_worker(deployment)
    assert len(mails_to(smtp_server, ALICE_MAIL)) == 1
    [before] = accounts_of(deployment, ALICE)
    assert before.status == "pending"

    deployment.edit_person(ALICE, "uid", "alice.garnier")
    synced = bridge(deployment, "sync", "--json")
    assert synced.exit_code == 0, synced.output
    summary = json.loads(synced.output)
    assert (summary["created"], summary["archived"]) == (1, 1)

    old, new = accounts_of(deployment, ALICE, "alice.garnier")
    assert old.id == before.id and old.user_name == ALICE and new.user_name == "alice.garnier"
    assert new.status == "pending" and new.email == ALICE_MAIL
    with runtime_of(deployment) as runtime:
        assert_linked(runtime.engine, old, new)
        with runtime.engine.connect() as conn:
            # The identity is the new account's; the old one sits on a tombstone nobody reads.
            identity = conn.execute(select(Identity.__table__).where(Identity.id == new.identity_id)).one()
            assert identity.anchor == before.anchor and identity.name == "alice.garnier"
            assert new.anchor == before.anchor and old.anchor != before.anchor
            tombstone = conn.execute(select(Identity.__table__).where(Identity.id == old.identity_id)).one()
            assert tombstone.deleted_at is not None
            grants = conn.execute(select(Account.held_roles).where(Account.id == old.id)).scalar_one()
            assert grants == "[]"

    run_worker(deployment)
    mails = mails_to(smtp_server, ALICE_MAIL)
    assert len(mails) == 2, [m.subject for m in mails]
    # Each activation its own link (the old account's is dead: it is archived).
    links = [LINK.search(m.content.decode(errors="replace").replace("=\r\n", "")) for m in mails]
    assert all(links) and links[0].group(2) != links[1].group(2)  # type: ignore[union-attr]

    # The next runs leave both as they are: the old account never comes back by itself.
    again = json.loads(bridge(deployment, "sync", "--json", "--full").output)
    assert (again["created"], again["archived"], again["reactivated"]) == (0, 0, 0)
    old, new = accounts_of(deployment, ALICE, "alice.garnier")
    assert (old.status, new.status) == ("archived", "pending")
    shown = json.loads(bridge(deployment, "users", "show", old.id, "--json").output)
    assert shown["status"] == "archived" and any(h["reason"] == "renamed" for h in shown["history"])
    # An administrator cannot bring the old account back: its identity went to the new one.
    refused = bridge(deployment, "users", "reactivate", old.id)
    assert refused.exit_code == 1 and "replaced by a new account" in refused.output
    explained = json.loads(bridge(deployment, "explain", old.id, "--json").output)
    assert "renamed in the source" in explained["statusReason"]

    # A later change of the person's entry reaches the new account and its identity.
    deployment.edit_person(ALICE, "sn", "Garnier-Durand")
    assert bridge(deployment, "sync").exit_code == 0
    [renamed] = accounts_of(deployment, "alice.garnier")
    assert renamed.id == new.id and renamed.family_name == "Garnier-Durand"
    assert json.loads(bridge(deployment, "sync", "--json").output)["updated"] == 0


def test_by_default_a_rename_updates_the_account_in_place(deployment: Deployment, smtp_server: SmtpServer) -> None:
    configure(deployment, "", extra=notify_config(smtp=smtp_server))
    assert bridge(deployment, "sync").exit_code == 0
    run_worker(deployment)
    [before] = accounts_of(deployment, ALICE)
    deployment.edit_person(ALICE, "uid", "alice.garnier")
    summary = json.loads(bridge(deployment, "sync", "--json").output)
    assert (summary["created"], summary["archived"], summary["updated"]) == (0, 0, 1)
    assert accounts_of(deployment, ALICE) == []
    [after] = accounts_of(deployment, "alice.garnier")
    assert after.id == before.id and after.status == "pending"
    run_worker(deployment)
    assert len(mails_to(smtp_server, ALICE_MAIL)) == 1


def test_a_change_of_case_alone_is_no_rename(deployment: Deployment) -> None:
    configure(deployment, 'user_name_changes = "recreate"\n')
    assert bridge(deployment, "sync").exit_code == 0
    [before] = accounts_of(deployment, ALICE)
    deployment.edit_person(ALICE, "uid", "AGarnier")
    summary = json.loads(bridge(deployment, "sync", "--json").output)
    assert (summary["created"], summary["archived"]) == (0, 0)
    [after] = accounts_of(deployment, "AGarnier")
    assert after.id == before.id


def test_an_unknown_user_name_changes_value_is_a_config_error(deployment: Deployment) -> None:
    configure(deployment, 'user_name_changes = "rename"\n')
    result = bridge(deployment, "sync")
    assert result.exit_code == 2
    assert "user_name_changes" in result.output and "bridge.toml" in result.output


# ---- SCIM ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def recreating_server(request: pytest.FixtureRequest) -> Iterator[ScimServer]:
    """`bridge serve` whose tenant t1 recreates renamed accounts (the others update in place)."""
    with new_server(request, request.param, "bridge-renames-") as server:
        text = server.config.read_text()
        first = 'name = "t1"\nmappings = "mapping.toml"\n'
        server.config.write_text(text.replace(first, first + 'user_name_changes = "recreate"\n', 1))
        bridge_cli(server.config, "db", "upgrade")
        server.start()
        yield server


def scim_account(server: ScimServer, tenant: str, user_name: str) -> Any:
    with server.db().connect() as conn:
        from bridge.store.tables import Tenant

        tid = conn.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one()
        return conn.execute(
            select(Account.__table__).where(Account.tenant_id == tid, Account.user_name == user_name)
        ).one()


def activations(server: ScimServer, account_id: str) -> int:
    with server.db().connect() as conn:
        rows = conn.execute(
            select(OutboxMessage.id).where(OutboxMessage.account_id == account_id, OutboxMessage.topic == "activation")
        ).all()
    return len(rows)


@pytest.mark.parametrize("how", ["patch", "put"])
def test_a_userName_changed_over_scim_recreates_the_account(recreating_server: ScimServer, how: str) -> None:
    tenant, token = new_token(recreating_server, "t1")
    scim = ScimClient(recreating_server, tenant, token)
    old_name, new_name = f"{how}.old@example.org", f"{how}.new@example.org"
    created = new_user(scim, old_name)
    uid = created["id"]
    new_group(scim, f"pos-{how}", [uid])  # ^pos- grants point_of_sale
    old = scim_account(recreating_server, tenant, old_name)
    assert old.status == "pending" and old.id == uid and activations(recreating_server, old.id) == 1

    if how == "patch":
        body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "userName", "value": new_name}]}
        answer = scim.ok("PATCH", f"/Users/{uid}", body, status=200)
    else:
        full = {**{k: v for k, v in created.items() if k not in ("meta", "groups")}, "userName": new_name}
        full["schemas"] = [USER]
        answer = scim.ok("PUT", f"/Users/{uid}", full, status=200)
    assert answer["id"] == uid and answer["userName"] == new_name

    old = scim_account(recreating_server, tenant, old_name)
    new = scim_account(recreating_server, tenant, new_name)
    assert_linked(recreating_server.db(), old, new)
    # The identity provider keeps its id: the resource shows the new userName and the new
    # account's state (pending, with the group's role).
    assert new.identity_id == uid and new.status == "pending"
    shown = scim.ok("GET", f"/Users/{uid}?attributes=userName,{ACCOUNT_EXT}")
    assert shown["userName"] == new_name
    assert shown[ACCOUNT_EXT]["status"] == "pending" and shown[ACCOUNT_EXT]["roles"] == ["point_of_sale"]
    assert activations(recreating_server, new.id) == 1
    found = scim.ok("GET", "/Users", params={"filter": f'userName eq "{old_name}"'})
    assert found["totalResults"] == 0

    # The same PATCH again changes nothing more; DELETE archives the new account.
    if how == "patch":
        scim.ok("PATCH", f"/Users/{uid}", body, status=200)
        assert scim_account(recreating_server, tenant, new_name).id == new.id
    scim.ok("DELETE", f"/Users/{uid}", status=204)
    assert scim_account(recreating_server, tenant, new_name).status == "archived"
    assert scim_account(recreating_server, tenant, old_name).status == "archived"


def test_other_tenants_of_the_server_rename_in_place(recreating_server: ScimServer) -> None:
    tenant, token = new_token(recreating_server, "t2")
    scim = ScimClient(recreating_server, tenant, token)
    uid = new_user(scim, "inplace.old@example.org")["id"]
    body = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "userName", "value": "inplace.new@example.org"}],
    }
    scim.ok("PATCH", f"/Users/{uid}", body, status=200)
    account = scim_account(recreating_server, tenant, "inplace.new@example.org")
    assert account.id == uid


ACCOUNT_EXT = "urn:bridge:params:scim:schemas:extension:2.0:Account"


def test_a_csv_export_with_a_changed_address_recreates_the_account(tmp_path: Any, db_url: str) -> None:
    # The staff export's userName is its mail column: a corrected address is a new login.
    from tests.integration.test_sync_csv import CsvDeployment

    d = CsvDeployment(tmp_path, db_url)
    text = d.config.read_text(encoding="utf-8")
    text = text.replace('mappings = "staff.toml"\n', 'mappings = "staff.toml"\nuser_name_changes = "recreate"\n', 1)
    d.config.write_text(text, encoding="utf-8")
    assert d.sync()["exit"] == 0
    old_mail, new_mail = "theo.lefevre@example.org", "theo.lefevre-martin@example.org"
    raw = d.csv.read_bytes().replace(old_mail.encode("cp1252"), new_mail.encode("cp1252"))
    d.csv.write_bytes(raw)
    summary = d.sync()
    assert (summary["exit"], summary["created"], summary["archived"]) == (0, 1, 1)
    users = d.users()
    assert users[old_mail]["status"] == "archived" and users[new_mail]["status"] != "archived"
    assert users[old_mail]["id"] != users[new_mail]["id"]
