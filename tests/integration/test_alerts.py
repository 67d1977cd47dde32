"""Alerts (issue 17): the tenant's `alert_emails` get one mail per incident, through the outbox and
the real worker to aiosmtpd, with a link to the console; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bridge.store.tables import AccountEventRow, Alert, OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge, mails_to, notify_config, outbox_rows, run_worker, runtime_of

IT = "it-alerts@example.org"


def configure(d: Deployment, smtp: SmtpServer, keys: str = "") -> None:
    (d.root / "schedules").mkdir(exist_ok=True)
    (d.root / "schedules" / "jobs.toml").write_text('[jobs.alerts]\ntarget = "alerts"\nevery = "5m"\n')
    d.write_config(extra=notify_config(smtp=smtp) + '\n[schedules]\ndir = "schedules"\n')
    tenant_keys = f'alert_emails = ["{IT}"]\n{keys}'
    text = d.config.read_text().replace('mappings = "mapping.toml"\n', f'mappings = "mapping.toml"\n{tenant_keys}', 1)
    d.config.write_text(text)


def alerts(d: Deployment) -> list[tuple[str, str, bool]]:
    """(kind, subject, open) of every alert, oldest first."""
    with runtime_of(d) as runtime, runtime.engine.connect() as conn:
        rows = conn.execute(select(Alert.kind, Alert.subject, Alert.closed_at).order_by(Alert.id)).all()
    return [(r.kind, r.subject, r.closed_at is None) for r in rows]


def alert_mails(d: Deployment) -> list[object]:
    return outbox_rows(d, topic="alert")


def test_a_source_failing_run_after_run_alerts_once_and_again_after_it_recovered(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    configure(deployment, smtp_server, "alert_after_failed_runs = 3\n")
    assert bridge(deployment, "sync").exit_code == 0
    ldif = deployment.root / "directory.ldif"
    kept = ldif.read_bytes()
    ldif.unlink()
    for run in range(1, 5):
        assert bridge(deployment, "sync").exit_code != 0
        assert len(alert_mails(deployment)) == (1 if run >= 3 else 0), run
    assert alerts(deployment) == [("source_failing", "dir", True)]
    # Each failed run is a product event too (the feed; the outbox when a webhook is configured).
    with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
        feed = conn.execute(select(AccountEventRow.payload).order_by(AccountEventRow.position)).scalars().all()
    failed = [e for e in feed if e["type"] == "sync.failed"]
    assert len(failed) == 4 and all(e["account"] is None for e in failed)
    assert failed[-1]["change"]["source"] == "dir" and failed[-1]["change"]["outcome"] in ("failed", "aborted")
    run_worker(deployment)
    (mail,) = mails_to(smtp_server, IT)
    body = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "source_failing".replace("_", " ") in mail.subject and "example" in mail.subject
    assert "dir did not go through 3 runs in a row" in body and "/admin/t/example/runs" in body

    ldif.write_bytes(kept)
    assert bridge(deployment, "sync").exit_code == 0
    assert alerts(deployment) == [("source_failing", "dir", False)]
    ldif.unlink()
    for _ in range(3):
        bridge(deployment, "sync")
    assert alerts(deployment) == [("source_failing", "dir", False), ("source_failing", "dir", True)]
    assert len(alert_mails(deployment)) == 2
    shown = bridge(deployment, "audit", "--tenant", "example", "--json").output
    assert shown.count('"alert_opened"') == 2


def test_dead_and_stuck_mail_alert_once_per_incident(deployment: Deployment, smtp_server: SmtpServer) -> None:
    configure(deployment, smtp_server, "alert_queued_minutes = 30\n")
    assert bridge(deployment, "sync").exit_code == 0
    assert bridge(deployment, "jobs", "run", "alerts").exit_code == 0
    assert alerts(deployment) == []  # freshly queued activations are no incident
    activations = outbox_rows(deployment, topic="activation")
    dead, stuck = activations[0].id, activations[1].id
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        table = OutboxMessage.__table__
        conn.execute(update(table).where(table.c.id == dead).values(status="dead", last_error="550 no such user"))
        conn.execute(
            update(table).where(table.c.id == stuck).values(created_at=datetime.now(UTC) - timedelta(minutes=45))
        )
    for _ in range(2):
        assert bridge(deployment, "jobs", "run", "alerts").exit_code == 0
    assert sorted(alerts(deployment)) == [("mail_problems", "mail", True), ("mail_stuck", "mail", True)]
    assert len(alert_mails(deployment)) == 2

    run_worker(deployment)  # delivers the queue, the alerts and the stuck activation included
    subjects = sorted(m.subject for m in mails_to(smtp_server, IT))
    assert len(subjects) == 2 and "mail problems" in subjects[0] and "mail stuck" in subjects[1]
    assert bridge(deployment, "outbox", "retry", str(dead)).exit_code == 0
    run_worker(deployment)
    assert bridge(deployment, "jobs", "run", "alerts").exit_code == 0
    assert all(not is_open for _, _, is_open in alerts(deployment)), alerts(deployment)
    assert len(mails_to(smtp_server, IT)) == 2


def test_alert_addresses_are_checked_when_the_config_loads(deployment: Deployment, smtp_server: SmtpServer) -> None:
    configure(deployment, smtp_server)
    deployment.config.write_text(deployment.config.read_text().replace(f'"{IT}"', '"not an address"'))
    result = bridge(deployment, "sync")
    assert result.exit_code == 2
    assert "tenants[1].alert_emails[1]" in result.output and "not an email address" in result.output
