"""Leaver policies (issue 17): an account suspended longer than `archive_after_suspended_days`
is archived by the scheduler's job, and `email_domains` keeps activation mail inside the
tenant's domains; on SQLite and PostgreSQL, with the real outbox worker and aiosmtpd."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bridge.store.tables import Account, AuditEvent
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge, mails_to, notify_config, outbox_rows, run_worker, runtime_of

LOCKED = "pwdAccountLockedTime"


def configure(d: Deployment, tenant_keys: str, extra: str = "") -> None:
    (d.root / "schedules").mkdir(exist_ok=True)
    (d.root / "schedules" / "jobs.toml").write_text('[jobs.expire]\ntarget = "expire_external"\nevery = "1h"\n')
    d.write_config(extra=extra + '\n[schedules]\ndir = "schedules"\n')
    text = d.config.read_text().replace('mappings = "mapping.toml"\n', f'mappings = "mapping.toml"\n{tenant_keys}', 1)
    d.config.write_text(text)


def suspended_accounts(d: Deployment) -> dict[str, str]:
    with runtime_of(d) as runtime, runtime.engine.connect() as conn:
        rows = conn.execute(select(Account.user_name, Account.id).where(Account.status == "suspended")).all()
    return {r.user_name: r.id for r in rows}


def test_an_account_suspended_past_the_policy_is_archived_and_a_recent_one_is_not(deployment: Deployment) -> None:
    configure(deployment, "archive_after_suspended_days = 30\n")
    people = deployment.people()
    recent = next(p for p in people if p not in suspended_accounts(deployment))
    deployment.edit_person(recent, LOCKED, "000001010000Z")
    assert bridge(deployment, "sync").exit_code == 0
    suspended = suspended_accounts(deployment)
    assert recent in suspended and len(suspended) >= 2
    old = next(u for u in suspended if u != recent)
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        # The old one was suspended 31 days ago (its suspension's audit event, or its creation).
        long_ago = datetime.now(UTC) - timedelta(days=31)
        conn.execute(
            update(AuditEvent.__table__)
            .where(AuditEvent.__table__.c.account_id == suspended[old])
            .values(occurred_at=long_ago)
        )
        conn.execute(
            update(Account.__table__).where(Account.__table__.c.id == suspended[old]).values(created_at=long_ago)
        )

    ran = bridge(deployment, "jobs", "run", "expire")
    assert ran.exit_code == 0, ran.output
    after = suspended_accounts(deployment)
    assert old not in after and recent in after
    shown = json.loads(bridge(deployment, "users", "show", old, "--json").output)
    assert shown["status"] == "archived"
    archive = [h for h in shown["history"] if h["action"] == "archive"]
    assert archive and archive[-1]["actor"] == "job:archive_suspended" and "30 days" in archive[-1]["reason"]
    # The next sync still sees the person, disabled, and leaves the account archived.
    assert json.loads(bridge(deployment, "sync", "--json").output)["reactivated"] == 0
    assert json.loads(bridge(deployment, "users", "show", old, "--json").output)["status"] == "archived"


def test_without_the_policy_nobody_suspended_is_archived(deployment: Deployment) -> None:
    configure(deployment, "")
    assert bridge(deployment, "sync").exit_code == 0
    before = suspended_accounts(deployment)
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        conn.execute(update(AuditEvent.__table__).values(occurred_at=datetime.now(UTC) - timedelta(days=400)))
    assert bridge(deployment, "jobs", "run", "expire").exit_code == 0
    assert suspended_accounts(deployment) == before


def test_an_address_outside_the_email_domains_gets_no_activation_mail(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    configure(deployment, 'email_domains = ["example.org"]\n', extra=notify_config(smtp=smtp_server))
    assert bridge(deployment, "sync").exit_code == 0
    run_worker(deployment)
    refused = [r for r in outbox_rows(deployment, channel="email") if r.status == "failed"]
    outside = [r for r in refused if (r.last_error or "").startswith("email_domain:")]
    assert outside, [(r.status, r.last_error) for r in outbox_rows(deployment, channel="email")]
    addresses = {r.payload["to"] for r in outside}
    assert all(not a.endswith("@example.org") for a in addresses)
    for address in addresses:
        assert mails_to(smtp_server, address) == []
    assert mails_to(smtp_server, "alice.garnier@example.org")  # inside the domains: mailed
    user = next(r.payload["userName"] for r in outside)
    explained = json.loads(bridge(deployment, "explain", user, "--json").output)
    assert explained["activationNotSent"].startswith("email_domain:")
