"""Bad data (issue 12, items 4 and 5): an address bridge cannot mail, a mapping it cannot use.

Each is found where it enters and shown where an administrator looks (plan, explain, outbox list,
users show, start-up), and none of them stops anything else: not another row of the same batch,
not another tenant. Against real servers (aiosmtpd, a webhook receiver, `bridge serve`), on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bridge.store.tables import Account, OutboxMessage, Tenant
from tests.conftest import Deployment
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
