"""The administrator's actions both doors call (bridge/provision/manual.py), called directly as
the web console calls them, on SQLite and PostgreSQL: what they change, what they audit, and that
an action scoped to one tenant cannot reach another tenant's account, token or message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from bridge.core.actions import ActionRefused
from bridge.errors import InvalidValue, NotFound
from bridge.provision.manual import (
    create_scim_token,
    retry_outbox_message,
    revoke_scim_token,
    run_action,
)
from bridge.runtime import Runtime
from bridge.store.audit import list_audit
from bridge.store.outbox import RetryRefused
from bridge.store.tables import ScimToken
from bridge.store.tenants import get_tenant
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge, notify_config, outbox_rows, run_worker, runtime_of

ADMIN = "admin:ops@example.org"


@pytest.fixture
def synced(deployment: Deployment) -> Deployment:
    assert bridge(deployment, "sync").exit_code == 0
    assert bridge(deployment, "tenants", "add", "other").exit_code == 0
    return deployment


@pytest.fixture
def runtime(synced: Deployment) -> Iterator[Runtime]:
    with runtime_of(synced) as rt:
        yield rt


def tenant_id(runtime: Runtime, name: str) -> int:
    with runtime.engine.connect() as conn:
        return int(get_tenant(conn, name).id)


def events(runtime: Runtime, tenant: str, **where: Any) -> list[Any]:
    with runtime.engine.connect() as conn:
        found = list_audit(conn, tenant_id(runtime, tenant))
    return [e for e in found if all(getattr(e, k) == v for k, v in where.items())]


def accounts(d: Deployment) -> dict[str, dict[str, Any]]:
    return {u["userName"]: u for u in json.loads(bridge(d, "users", "list", "--json").output)}


def test_account_actions_change_the_status_and_audit_the_actor(synced: Deployment, runtime: Runtime) -> None:
    person = next(u for u in accounts(synced).values() if u["status"] == "pending")
    archived = run_action(runtime, "example", person["id"], "archive", actor=ADMIN, correlation_id="admin-test-1")
    assert (archived.user_name, archived.before, archived.after) == (person["userName"], "pending", "archived")
    assert archived.account_id == person["id"]
    resent = run_action(runtime, "example", person["email"], "reactivate", actor=ADMIN)
    assert (resent.before, resent.after) == ("archived", "pending")
    again = run_action(runtime, "example", person["userName"], "resend", actor=ADMIN)
    assert (again.before, again.after) == ("pending", "pending")

    mine = events(runtime, "example", account_id=person["id"], actor=ADMIN)
    done = [e.action for e in mine]
    assert {"archive", "reactivate", "resend_activation"} <= set(done)
    assert done.index("archive") < done.index("reactivate") < done.index("resend_activation")
    assert next(e for e in mine if e.action == "archive").correlation_id == "admin-test-1"
    assert all(e.correlation_id.startswith("admin-") for e in mine)


def test_account_actions_refuse_as_before(synced: Deployment, runtime: Runtime) -> None:
    users = accounts(synced)
    collaborator = next(u for u in users.values() if u["status"] == "no_access")
    with pytest.raises(ActionRefused, match="only pending accounts"):
        run_action(runtime, "example", collaborator["id"], "resend", actor=ADMIN)
    with pytest.raises(NotFound, match='no account "nobody-here"'):
        run_action(runtime, "example", "nobody-here", "archive", actor=ADMIN)


def test_an_account_of_another_tenant_is_not_found(synced: Deployment, runtime: Runtime) -> None:
    person = next(u for u in accounts(synced).values() if u["status"] == "pending")
    for user in (person["id"], person["userName"], person["email"]):
        with pytest.raises(NotFound):
            run_action(runtime, "other", user, "archive", actor=ADMIN)
    assert accounts(synced)[person["userName"]]["status"] == "pending"
    assert events(runtime, "other") == []


def test_tokens_are_created_and_revoked_audited_and_scoped_to_their_tenant(runtime: Runtime) -> None:
    made = create_scim_token(
        runtime, "example", label="entra", read_only=True, expires_days=30, actor=ADMIN, correlation_id="admin-t"
    )
    assert made.token.startswith("brg_") and made.read_only and made.expires_at is not None
    (created,) = events(runtime, "example", action="token_created")
    assert created.actor == ADMIN and created.correlation_id == "admin-t" and created.account_id is None
    assert created.after["token"] == made.id and created.after["label"] == "entra" and created.after["readOnly"]
    assert made.token not in json.dumps([created.before, created.after, created.reason])

    # A tenant administrator of "other" cannot revoke it; the answer is the one an unknown id gets.
    with pytest.raises(NotFound, match=f"no active token {made.id}$"):
        revoke_scim_token(runtime, made.id, actor="admin:other@example.org", tenant_id=tenant_id(runtime, "other"))
    with runtime.engine.connect() as conn:
        assert conn.execute(select(ScimToken.revoked_at).where(ScimToken.id == made.id)).scalar_one() is None
    assert events(runtime, "example", action="token_revoked") == []
    assert events(runtime, "other") == []

    revoke_scim_token(runtime, made.id, actor=ADMIN, tenant_id=tenant_id(runtime, "example"))
    with runtime.engine.connect() as conn:
        assert conn.execute(select(ScimToken.revoked_at).where(ScimToken.id == made.id)).scalar_one() is not None
    (revoked,) = events(runtime, "example", action="token_revoked")
    assert revoked.actor == ADMIN and revoked.before["token"] == made.id
    with pytest.raises(NotFound, match="no active token"):
        revoke_scim_token(runtime, made.id, actor=ADMIN)
    with pytest.raises(NotFound, match="no active token"):
        revoke_scim_token(runtime, "no-such-token", actor=ADMIN)


def test_token_creation_refuses_a_bad_expiry_and_an_unknown_tenant(runtime: Runtime) -> None:
    for days in (0, -1, 3651):
        with pytest.raises(InvalidValue, match="1 to 3650 days"):
            create_scim_token(runtime, "example", label=None, read_only=False, expires_days=days, actor=ADMIN)
    with pytest.raises(NotFound):
        create_scim_token(runtime, "nope", label=None, read_only=False, expires_days=None, actor=ADMIN)
    assert events(runtime, "example", action="token_created") == []


@pytest.fixture
def dead_mail(deployment: Deployment, smtp_server: SmtpServer) -> Deployment:
    """Every activation mail refused for good (550), so each row is dead."""
    deployment.write_config(extra=notify_config(smtp=smtp_server))
    assert bridge(deployment, "sync").exit_code == 0
    assert bridge(deployment, "tenants", "add", "other").exit_code == 0
    smtp_server.refuse, smtp_server.refuse_stage, smtp_server.refuse_reply = True, "RCPT", "550 5.1.1 no such user"
    assert run_worker(deployment).dead > 0
    smtp_server.refuse = False
    return deployment


def test_outbox_retry_is_scoped_to_the_tenant_and_audited(dead_mail: Deployment) -> None:
    dead = outbox_rows(dead_mail, status="dead")
    first = dead[0]
    with runtime_of(dead_mail) as runtime:
        with pytest.raises(NotFound, match=f"no outbox message {first.id}$"):
            retry_outbox_message(
                runtime, first.id, actor="admin:other@example.org", tenant_id=tenant_id(runtime, "other")
            )
        assert outbox_rows(dead_mail, id=first.id)[0].status == "dead"
        assert events(runtime, "other") == []

        done = retry_outbox_message(
            runtime, first.id, actor=ADMIN, tenant_id=tenant_id(runtime, "example"), correlation_id="admin-r"
        )
        assert (done.message_id, done.before, done.tenant_id) == (first.id, "dead", tenant_id(runtime, "example"))
        row = outbox_rows(dead_mail, id=first.id)[0]
        assert row.status == "queued" and row.attempts == 0
        (event,) = events(runtime, "example", action="outbox_retried")
        assert event.actor == ADMIN and event.correlation_id == "admin-r" and event.account_id is None
        assert event.before["message"] == first.id and event.before["status"] == "dead"
        assert "550" in event.before["lastError"] and event.before["account"] == first.account_id
        assert event.after["status"] == "queued"

        assert run_worker(dead_mail).sent == 1
        with pytest.raises(RetryRefused, match="is sent"):
            retry_outbox_message(runtime, first.id, actor=ADMIN)
        with pytest.raises(NotFound, match="no outbox message 999999"):
            retry_outbox_message(runtime, 999999, actor=ADMIN)
        # The operator's scope (no tenant) reaches every tenant's rows.
        assert retry_outbox_message(runtime, dead[1].id, actor=ADMIN).before == "dead"


def test_the_cli_audits_tokens_and_retries_as_its_os_user(dead_mail: Deployment) -> None:
    created = bridge(dead_mail, "tokens", "create", "--tenant", "example", "--label", "okta")
    token_id = created.output.split()[1]
    assert bridge(dead_mail, "tokens", "revoke", token_id).exit_code == 0
    dead = outbox_rows(dead_mail, status="dead")[0]
    assert "dead -> queued" in bridge(dead_mail, "outbox", "retry", str(dead.id)).output
    trail = json.loads(bridge(dead_mail, "audit", "--tenant", "example", "--json").output)
    by_action = {e["action"]: e for e in trail}
    for action in ("token_created", "token_revoked", "outbox_retried"):
        assert by_action[action]["actor"].startswith("cli:"), action
        assert by_action[action]["correlationId"].startswith("cli-"), action
    assert by_action["token_created"]["after"]["token"] == token_id
    assert by_action["outbox_retried"]["after"]["message"] == dead.id
