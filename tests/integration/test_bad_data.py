"""Bad data (issue 12, items 4 and 5): an address bridge cannot mail, a mapping it cannot use.

Each is found where it enters and shown where an administrator looks (plan, explain, outbox list,
users show, start-up), and none of them stops anything else: not another row of the same batch,
not another tenant. Against real servers (aiosmtpd, a webhook receiver, `bridge serve`), on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from bridge.store.tables import Account, OutboxMessage, Tenant
from tests.conftest import Deployment
from tests.fixtures.scim import ScimClient
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.webhook import WebhookReceiver
from tests.integration.notify_support import WEBHOOK_SECRET, bridge, notify_config, outbox_rows, run_worker, runtime_of

outbox = OutboxMessage.__table__
accounts = Account.__table__
tenants = Tenant.__table__

OTHER_LDIF = """dn: ou=people,dc=other,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=other,dc=org
objectClass: organizationalUnit
ou: groups

dn: uid=olga,ou=people,dc=other,dc=org
objectClass: inetOrgPerson
uid: olga
cn: Olga Other
sn: Other
givenName: Olga
mail: olga@other.example
entryUUID: 0b0b0b0b-0000-4000-8000-000000000001

dn: cn=front-desk,ou=groups,dc=other,dc=org
objectClass: groupOfNames
cn: front-desk
entryUUID: 0b0b0b0b-0000-4000-8000-000000000002
member: uid=olga,ou=people,dc=other,dc=org
"""


def two_tenants(d: Deployment, extra: str) -> None:
    """The example tenant, and a second one ("other") with one person who gets a role."""
    (d.root / "other.ldif").write_text(OTHER_LDIF)
    d.write_config(
        extra=extra
        + '\n[[tenants]]\nname = "other"\nmappings = "mapping.toml"\n\n'
        + '[[sources]]\nname = "other-dir"\ntenant = "other"\nkind = "ldif"\nflavor = "openldap"\n'
        + 'path = "other.ldif"\nuser_base = "ou=people,dc=other,dc=org"\n'
        + 'group_base = "ou=groups,dc=other,dc=org"\n'
    )
    result = bridge(d, "sync")
    assert result.exit_code == 0, result.output


def test_a_row_that_cannot_be_prepared_is_failed_and_the_rest_of_the_batch_goes_out(
    deployment: Deployment,
    smtp_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    two_tenants(deployment, notify_config(smtp=smtp_server, webhook_url=webhook_receiver.url))
    # An activation queued for "@example.org" (as bridge accepted it over SCIM before it checked
    # addresses), due before everything else: it is claimed first, in the same batch as the rest.
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        example = conn.execute(select(tenants.c.id).where(tenants.c.name == "example")).scalar_one()
        bad = conn.execute(
            select(outbox.c.id, outbox.c.payload, outbox.c.next_attempt_at)
            .where(outbox.c.tenant_id == example, outbox.c.topic == "activation")
            .order_by(outbox.c.id)
        ).first()
        earliest = conn.execute(select(outbox.c.next_attempt_at).order_by(outbox.c.next_attempt_at)).scalar()
        conn.execute(
            update(outbox)
            .where(outbox.c.id == bad.id)
            .values(payload={**bad.payload, "to": "@example.org"}, next_attempt_at=earliest - timedelta(seconds=1))
        )
    webhooks = len(outbox_rows(deployment, channel="webhook"))

    stats = run_worker(deployment)

    assert stats.refused == 1
    assert [m for m in smtp_server.messages if "olga@other.example" in m.rcpt_tos], "the other tenant's mail"
    mails = outbox_rows(deployment, channel="email")
    assert {r.status for r in mails if r.id != bad.id} == {"sent"}
    assert len(webhook_receiver.accepted()) == webhooks
    (row,) = outbox_rows(deployment, id=bad.id)
    assert row.status == "failed" and row.attempts == 1
    assert row.last_error.startswith("address_unusable: ") and "before the @" in row.last_error

    listed = json.loads(bridge(deployment, "outbox", "list", "--json").output)
    assert [(d["id"], d["status"]) for d in listed] == [(bad.id, "failed")]
    assert listed[0]["lastError"] == row.last_error
    assert [d["id"] for d in json.loads(bridge(deployment, "outbox", "list", "--dead", "--json").output)] == [bad.id]
    shown = json.loads(bridge(deployment, "users", "show", row.account_id, "--tenant", "example", "--json").output)
    assert [(m["id"], m["status"], m["reason"]) for m in shown["mail"]] == [(bad.id, "failed", row.last_error)]
    text = bridge(deployment, "users", "show", row.account_id, "--tenant", "example").output
    assert "failed" in text and "address_unusable" in text
    # Another pass leaves it alone: refused for good.
    assert run_worker(deployment).refused == 0


def test_a_message_that_breaks_its_template_is_failed_alone(
    deployment: Deployment, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception while a row is prepared or built, not only a bad address."""
    two_tenants(deployment, notify_config(smtp=smtp_server))
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        first = conn.execute(select(outbox.c.id, outbox.c.payload).order_by(outbox.c.id)).first()
        conn.execute(
            update(outbox).where(outbox.c.id == first.id).values(payload={**first.payload, "language": ["fr"]})
        )
    stats = run_worker(deployment)
    (row,) = outbox_rows(deployment, id=first.id)
    assert row.status == "failed" and "cannot prepare the message" in row.last_error
    assert stats.refused == 1 and stats.sent == len(outbox_rows(deployment, status="sent")) > 1


# ---- mappings (item 5) --------------------------------------------------------------------------

BRIDGE = str(Path(sys.executable).with_name("bridge"))
UNDEFINED_ROLE = '[roles.front_desk]\ntitle = "Front desk"\n\n[[rules]]\ngroup_name = "x"\nroles = ["admin"]\n'
BROKEN_MAPPINGS = {
    "empty": ("", ": roles: no roles defined"),
    "undefined role": (UNDEFINED_ROLE, ': rules[1].roles: role "admin" is not defined in [roles]'),
    "not TOML": ("[roles.front_desk\ntitle = 1\n", ": invalid TOML: "),
}


def _run(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    # A command that ignores a broken mapping would start for good: the timeout ends it (on main).
    return subprocess.run(
        [BRIDGE, "--config", str(d.config), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("broken", list(BROKEN_MAPPINGS))
def test_serve_scheduler_and_sync_refuse_a_mapping_they_cannot_use(tmp_path: Path, broken: str) -> None:
    d = Deployment(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}")
    (tmp_path / "scim-only.toml").write_text(BROKEN_MAPPINGS[broken][0])
    d.write_config(extra='\n[[tenants]]\nname = "scim-only"\nmappings = "scim-only.toml"\n')
    assert _run(d, "db", "upgrade").returncode == 0  # the reading commands below create no database
    port = _port()
    for args in (
        ["serve", "--port", str(port), "--no-scheduler"],
        ["scheduler"],
        ["sync"],
        ["sync", "--source", "dir"],
    ):
        result = _run(d, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(tmp_path / "scim-only.toml") + BROKEN_MAPPINGS[broken][1] in lines[0], (
            args,
            result.stderr,
        )
        assert "Traceback" not in result.stderr and "serving" not in result.stderr
    # Nothing was synced for the good tenant either: the check comes before any work.
    assert "0 accounts" in _run(d, "users", "list", "--tenant", "example").stdout
    # Reading commands still work, so the administrator can look around while fixing the file.
    assert _run(d, "outbox", "list").returncode == 0


def test_a_tenant_with_a_directory_source_needs_a_mapping(tmp_path: Path) -> None:
    d = Deployment(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}")
    d.config.write_text(d.config.read_text().replace('mappings = "mapping.toml"\n', ""))
    result = _run(d, "sync")
    assert result.returncode == 2
    assert f"{d.config}: tenants[1].mappings: " in result.stderr and "directory source" in result.stderr


def test_a_tenant_without_a_mapping_takes_scim_writes_and_explain_answers(tmp_path: Path) -> None:
    """`tenants add` makes a SCIM-only tenant with no mapping: its accounts are no_access, and
    `explain` says why instead of "its mapping is unknown"."""
    d = Deployment(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}")
    port = _port()
    d.write_config(extra=f'\n[server]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n')
    assert _run(d, "tenants", "add", "acme").returncode == 0
    token = _run(d, "tokens", "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - the server's output, read on failure
    proc = subprocess.Popen(
        [BRIDGE, "--config", str(d.config), "serve", "--port", str(port), "--no-scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, proc, tmp_path / "serve.log")
        created = requests.post(
            f"{base}/scim/v2/Users",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "ann@acme.example",
                "roles": [{"value": "Administrator"}],
            },
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = _run(d, "explain", "ann@acme.example", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    assert "no_access" in result.stdout and "no mapping file" in result.stdout
    data = json.loads(_run(d, "explain", "ann@acme.example", "--tenant", "acme", "--json").stdout)
    assert data["mapping"] is None and data["rules"] == [] and data["status"] == "no_access"


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("bridge serve did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)


def test_a_mapping_broken_after_start_answers_500_without_the_path_or_the_file(tmp_path: Path) -> None:
    """A process that loads the mapping only after it was broken (a spawned worker) must not show
    the server's path or the file's text to the identity provider; the log has them."""
    from waitress import create_server

    from bridge.app import create_app
    from bridge.runtime import open_runtime

    d = Deployment(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}")
    d.mapping.write_text('[roles.x\nsecret_looking = "in the file"\n')
    runtime = open_runtime(d.config)  # no check: what a worker that loaded late would hold
    _, token = _token(d)
    port = _port()
    server = create_server(create_app(runtime), host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        answer = requests.post(
            f"http://127.0.0.1:{port}/scim/v2/Users",
            json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ann"},
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=30,
        )
    finally:
        server.close()
        thread.join(timeout=5)
        runtime.engine.dispose()
    assert answer.status_code == 500
    body = answer.json()
    assert body["status"] == "500" and "mapping cannot be used" in body["detail"]
    assert str(tmp_path) not in answer.text and "mapping.toml" not in answer.text and "TOML" not in answer.text


def _token(d: Deployment) -> tuple[str, str]:
    out = _run(d, "tokens", "create", "--tenant", "example")
    assert out.returncode == 0, out.stderr
    return "example", out.stdout.strip().splitlines()[-1]


# ---- addresses where they enter (item 4) -------------------------------------------------------

SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def test_scim_refuses_an_address_bridge_cannot_mail_and_stores_nothing(scim: ScimClient) -> None:
    for bad in ("@example.org", "ann@", "ann smith@example.org", "ann@localhost"):
        answer = scim.call(
            "POST", "/Users", {"schemas": [SCIM_USER], "userName": "ann", "emails": [{"value": bad, "primary": True}]}
        )
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["scimType"] == "invalidValue" and bad in body["detail"] and "mail" in body["detail"]
    assert scim.ok("GET", "/Users")["totalResults"] == 0
    created = scim.ok(
        "POST", "/Users", {"schemas": [SCIM_USER], "userName": "ann", "emails": [{"value": "ann@example.org"}]}
    )
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"emails": [{"value": "@example.org", "primary": True}]}}],
    }
    assert scim.call("PATCH", f"/Users/{created['id']}", patch).json()["scimType"] == "invalidValue"
    assert scim.ok("GET", f"/Users/{created['id']}")["emails"][0]["value"] == "ann@example.org"


def test_a_directory_address_bridge_cannot_mail_shows_in_the_plan_explain_and_the_outbox(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    deployment.write_config(extra=notify_config(smtp=smtp_server))
    deployment.edit_person("fsimon", "mail", "@example.org")
    dry = bridge(deployment, "sync", "--dry-run")
    assert dry.exit_code == 0, dry.output
    (line,) = [ln for ln in dry.output.splitlines() if ln.startswith("fsimon ")]
    assert "activation mail: address_unusable: the email address has nothing before the @" in line

    assert bridge(deployment, "sync").exit_code == 0
    explained = json.loads(bridge(deployment, "explain", "fsimon", "--json").output)
    assert explained["status"] == "pending" and explained["activationNotSent"].startswith("address_unusable: ")
    assert "no activation mail can be sent" in bridge(deployment, "explain", "fsimon").output
    (refused,) = [
        d for d in json.loads(bridge(deployment, "outbox", "list", "--json").output) if d["status"] != "queued"
    ]
    assert refused["status"] == "failed" and refused["to"] == "@example.org"
    assert refused["lastError"] == explained["activationNotSent"]

    stats = run_worker(deployment)
    assert stats.sent == len(outbox_rows(deployment, channel="email")) - 1 and stats.refused == 0
    # The address corrected in the directory: a new activation goes out to it.
    deployment.edit_person("fsimon", "mail", "fsimon@example.org")
    assert bridge(deployment, "sync").exit_code == 0
    run_worker(deployment)
    assert [m for m in smtp_server.messages if "fsimon@example.org" in m.rcpt_tos]


def test_a_relay_outage_is_logged_once_with_its_reason_not_at_every_pass(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    from datetime import UTC, datetime

    from bridge.notify.worker import OutboxWorker

    deployment.write_config(extra=notify_config(port=1))
    assert bridge(deployment, "sync").exit_code == 0
    at = datetime.now(UTC)
    with runtime_of(deployment) as runtime, caplog.at_level(logging.INFO, logger="bridge.notify.worker"):
        worker = OutboxWorker(runtime, clock=lambda: at)
        for _ in range(3):
            assert worker.run_once().retried > 0
            at += timedelta(minutes=10)  # every row due again
    down = [r.getMessage() for r in caplog.records if "relay unavailable" in r.getMessage()]
    assert len(down) == 1 and "127.0.0.1:1" in down[0] and "refused" in down[0].lower()
    assert not [r for r in caplog.records if r.getMessage().startswith("outbox: retried")]


def test_a_group_removed_and_re_added_keeps_the_activation_in_flight(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    """One mail, and its link works: not a second mail that kills the first link (issue 12)."""
    from datetime import UTC, datetime

    from bridge.notify.activation import LinkState, look_up
    from tests.integration.notify_support import link_in

    deployment.write_config(extra=notify_config(smtp=smtp_server))
    original = deployment.ldif.read_text()
    member = "member: uid=fsimon,ou=people,dc=example,dc=org\n"
    assert member in original
    assert bridge(deployment, "sync").exit_code == 0
    for deliver_first in (True, False):
        if deliver_first:
            run_worker(deployment)  # the first mail is out before the group goes
        deployment.ldif.write_text(original.replace(member, ""))
        assert bridge(deployment, "sync").exit_code == 0
        assert json.loads(bridge(deployment, "users", "show", "fsimon", "--json").output)["status"] == "no_access"
        deployment.ldif.write_text(original)
        assert bridge(deployment, "sync").exit_code == 0
        assert json.loads(bridge(deployment, "users", "show", "fsimon", "--json").output)["status"] == "pending"
        run_worker(deployment)
        mails = [m for m in smtp_server.messages if "fabien.simon@example.org" in m.rcpt_tos]
        assert len(mails) == 1, [m.subject for m in mails]
        _, token = link_in(mails[0])
        with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
            assert look_up(conn, token, datetime.now(UTC)).state is LinkState.VALID
        smtp_server.messages.clear()
        if deliver_first:
            # The next round starts with the mail still queued: re-send it to clear the slate.
            assert bridge(deployment, "users", "resend-activation", "fsimon").exit_code == 0
