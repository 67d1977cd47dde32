"""The outbox worker against real servers: aiosmtpd (plain and STARTTLS) and a threaded HTTP
receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from bridge.notify import outbox as policy
from bridge.notify.activation import purge_activation_tokens, send_activation_reminders
from bridge.notify.mail import message_id
from bridge.notify.webhook import SIGNATURE_HEADER, verify_signature
from bridge.notify.worker import OutboxWorker
from bridge.store import outbox as queue
from bridge.store.tables import ActivationToken, AuditEvent, OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.webhook import WebhookReceiver
from tests.integration.notify_support import (
    WEBHOOK_SECRET,
    bridge,
    later,
    link_in,
    mails_to,
    notify_config,
    outbox_rows,
    run_worker,
    runtime_of,
)

outbox = OutboxMessage.__table__


def synced(d: Deployment, config: str) -> None:
    d.write_config(extra=config)
    result = bridge(d, "sync")
    assert result.exit_code == 0, result.output


def pending_users(d: Deployment) -> dict[str, str]:
    listed = json.loads(bridge(d, "users", "list", "--status", "pending", "--json").output)
    return {u["userName"]: u["email"] for u in listed}


def test_each_pending_user_gets_exactly_one_activation_mail(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    pending = pending_users(deployment)
    stats = run_worker(deployment)
    assert stats.sent == len(pending) and stats.failed == 0
    assert sorted(a for m in smtp_server.messages for a in m.rcpt_tos) == sorted(pending.values())
    ids = Counter(m.message["Message-ID"] for m in smtp_server.messages)
    assert len(ids) == len(pending) and max(ids.values()) == 1
    # Nothing left to do: a second run sends nothing.
    assert run_worker(deployment).sent == 0
    assert len(smtp_server.messages) == len(pending)
    mail = mails_to(smtp_server, "alice.garnier@example.org")[0]
    assert mail.subject == "Activez votre compte example"  # preferredLanguage: fr
    assert mail.message.get_body(("html",)) is not None and mail.message["Auto-Submitted"] == "auto-generated"
    _, token = link_in(mail)
    with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
        stored = conn.execute(select(ActivationToken.__table__.c.token_hash)).scalars().all()
        raw_anywhere = conn.execute(select(outbox.c.payload)).scalars().all()
    assert len(stored) == len(pending) and token not in stored
    assert token not in json.dumps(raw_anywhere)


def test_starttls_relay_gets_the_mail_over_tls(deployment: Deployment, smtp_server_tls: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server_tls, starttls=True))
    stats = run_worker(deployment)
    assert stats.sent == len(pending_users(deployment)) > 0
    assert all(m.tls for m in smtp_server_tls.messages)


def test_starttls_relay_refuses_plain_sessions_and_rows_wait(
    deployment: Deployment, smtp_server_tls: SmtpServer
) -> None:
    synced(deployment, notify_config(smtp=smtp_server_tls, starttls=False))
    stats = run_worker(deployment)
    assert stats.sent == 0 and stats.retried > 0
    rows = outbox_rows(deployment, status="queued")
    assert rows and all("530" in (r.last_error or "") for r in rows)


def test_smtp_down_keeps_rows_queued_with_their_error_until_it_is_back(deployment: Deployment) -> None:
    smtp = SmtpServer().start()
    port = smtp.port
    smtp.stop()
    try:
        synced(deployment, notify_config(port=port))
        # The worker's clock is fixed: "backed off" and "not due yet" are then facts of the
        # schedule, not of how fast a busy machine ran the two passes.
        tried_at = datetime.now(UTC)
        first = run_worker(deployment, at=tried_at)
        assert first.sent == 0 and first.retried == len(pending_users(deployment))
        rows = outbox_rows(deployment, topic="activation")
        assert all(r.status == "queued" and r.attempts == 1 and "Connection refused" in r.last_error for r in rows)
        assert all(r.next_attempt_at > tried_at for r in rows)  # backed off
        assert run_worker(deployment, at=tried_at).sent == 0  # not due yet

        smtp.start()
        assert smtp.port == port
        back = run_worker(deployment, at=later())
        assert back.sent == len(rows) and len(smtp.messages) == len(rows)
        assert all(r.status == "sent" and r.last_error is None for r in outbox_rows(deployment, topic="activation"))
    finally:
        smtp.stop()


def test_smtp_refusing_with_4xx_keeps_rows_queued_then_delivers(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    smtp_server.refuse = True
    stats = run_worker(deployment)
    assert stats.sent == 0 and stats.retried > 0 and stats.dead == 0
    assert all("451" in r.last_error for r in outbox_rows(deployment, status="queued"))
    smtp_server.refuse = False
    assert run_worker(deployment, at=later()).sent == stats.retried


def test_permanent_refusal_is_dead_listed_and_can_be_retried(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    smtp_server.refuse, smtp_server.refuse_stage, smtp_server.refuse_reply = True, "RCPT", "550 5.1.1 no such user"
    stats = run_worker(deployment)
    assert stats.dead == len(pending_users(deployment)) and stats.retried == 0
    listed = json.loads(bridge(deployment, "outbox", "list", "--dead", "--json").output)
    assert len(listed) == stats.dead and all("550" in d["lastError"] for d in listed)
    assert "dead" in bridge(deployment, "outbox", "list").output

    smtp_server.refuse = False
    first = listed[0]["id"]
    result = bridge(deployment, "outbox", "retry", str(first))
    assert result.exit_code == 0 and "dead -> queued" in result.output
    assert run_worker(deployment).sent == 1 and len(smtp_server.messages) == 1
    again = bridge(deployment, "outbox", "retry", str(first))
    assert again.exit_code == 1 and "sent" in again.output
    assert bridge(deployment, "outbox", "retry", "999999").exit_code == 1


def test_transient_failures_die_after_max_attempts(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server, outbox="max_attempts = 3"))
    smtp_server.refuse = True
    at = datetime.now(UTC)
    for expected in ("queued", "queued", "dead"):
        run_worker(deployment, at=at)
        at += timedelta(minutes=10)
        assert {r.status for r in outbox_rows(deployment, topic="activation")} == {expected}
    assert {r.attempts for r in outbox_rows(deployment, topic="activation")} == {3}


def test_backoff_doubles_with_jitter_and_stays_capped() -> None:
    for attempts, low, high in ((1, 15, 30), (2, 30, 60), (3, 60, 120), (20, 1800, 3600)):
        delays = [policy.backoff_seconds(attempts, base=30, cap=3600) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high and len(set(delays)) > 100


def test_two_workers_never_claim_the_same_row(deployment: Deployment) -> None:
    synced(deployment, notify_config(port=1))
    now = datetime.now(UTC)
    claims: dict[str, list[int]] = {}
    with runtime_of(deployment) as runtime:
        total = len(outbox_rows(deployment, status="queued"))
        barrier = threading.Barrier(4)

        def claimer(name: str) -> None:
            barrier.wait()
            got: list[int] = []
            while rows := queue.claim(runtime.engine, name, now, limit=3, lease=timedelta(minutes=5)):
                got += [r.id for r in rows]
            claims[name] = got

        threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    every = [i for got in claims.values() for i in got]
    assert len(every) == len(set(every)) == total
    if deployment.db_url.startswith("postgresql"):
        # SKIP LOCKED lets them work side by side; SQLite serializes the claims, so there one
        # claimer may well take everything.
        assert sum(1 for got in claims.values() if got) >= 2


def test_two_workers_running_together_send_each_mail_once(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server, outbox="batch_size = 5"))
    expected = len(pending_users(deployment))
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_worker(deployment))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.sent for r in results) == expected
    ids = Counter(m.message["Message-ID"] for m in smtp_server.messages)
    assert len(ids) == expected and set(ids.values()) == {1}


def test_an_expired_claim_is_taken_over_and_a_live_one_is_not(deployment: Deployment) -> None:
    synced(deployment, notify_config(port=1))
    now = datetime.now(UTC)
    with runtime_of(deployment) as runtime:
        mine = queue.claim(runtime.engine, "crashed", now, limit=1000, lease=timedelta(seconds=30))
        assert mine
        assert (
            queue.claim(runtime.engine, "other", now + timedelta(seconds=10), limit=1000, lease=timedelta(seconds=30))
            == []
        )
        taken = queue.claim(
            runtime.engine, "other", now + timedelta(seconds=31), limit=1000, lease=timedelta(seconds=30)
        )
        assert {r.id for r in taken} == {r.id for r in mine}
        # The crashed worker's late marking must not count.
        assert not queue.mark_sent(runtime.engine, mine[0].id, "crashed", now)


def test_activation_for_an_account_no_longer_pending_is_not_sent(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    user = sorted(pending_users(deployment))[0]
    assert bridge(deployment, "users", "archive", user).exit_code == 0
    stats = run_worker(deployment)
    assert stats.superseded == 1 and stats.sent == len(pending_users(deployment))
    assert not [m for m in smtp_server.messages if user in m.message["To"]]


def test_resend_supersedes_the_queued_mail_and_kills_the_delivered_link(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    user, address = sorted(pending_users(deployment).items())[0]
    run_worker(deployment)
    _, old = link_in(mails_to(smtp_server, address)[0])
    assert bridge(deployment, "users", "resend-activation", user).exit_code == 0
    run_worker(deployment)
    mails = mails_to(smtp_server, address)
    assert len(mails) == 2 and mails[0].message["Message-ID"] != mails[1].message["Message-ID"]
    _, new = link_in(mails[1])
    assert new != old
    with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
        from bridge.notify.activation import LinkState, look_up

        assert look_up(conn, old, datetime.now(UTC)).state is LinkState.REPLACED
        assert look_up(conn, new, datetime.now(UTC)).state is LinkState.VALID


def test_a_retried_row_carries_the_same_link_and_message_id(deployment: Deployment, smtp_server: SmtpServer) -> None:
    """What a crash between SMTP accept and marking sent amounts to: the row goes out again."""
    synced(deployment, notify_config(smtp=smtp_server))
    run_worker(deployment)
    row = outbox_rows(deployment, status="sent")[0]
    expected = message_id(row.idempotency_key, "Bridge <no-reply@bridge.example>")
    first = next(m for m in smtp_server.messages if m.message["Message-ID"] == expected)
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == row.id).values(status="queued"))
    assert run_worker(deployment).sent == 1
    again = smtp_server.messages[-1]
    assert again.message["Message-ID"] == expected and link_in(again) == link_in(first)


def test_reminder_repeats_the_same_link_once_before_expiry(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server, email="reminder_before_days = 2\n"))
    pending = pending_users(deployment)
    run_worker(deployment)
    with runtime_of(deployment) as runtime:
        assert send_activation_reminders(runtime, datetime.now(UTC)) == 0  # 7 days left
        in_six_days = datetime.now(UTC) + timedelta(days=6)
        assert send_activation_reminders(runtime, in_six_days) == len(pending)
        assert send_activation_reminders(runtime, in_six_days) == 0
    smtp_server.clear()
    assert run_worker(deployment, at=in_six_days).sent == len(pending)
    reminder = mails_to(smtp_server, "alice.garnier@example.org")[0]
    assert "Rappel" in reminder.subject
    with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
        from bridge.notify.activation import LinkState, look_up

        assert look_up(conn, link_in(reminder)[1], datetime.now(UTC)).state is LinkState.VALID


def test_purge_removes_links_long_expired_only(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    run_worker(deployment)
    with runtime_of(deployment) as runtime:
        assert purge_activation_tokens(runtime, datetime.now(UTC)) == 0
        assert purge_activation_tokens(runtime, datetime.now(UTC) + timedelta(days=40)) == len(
            pending_users(deployment)
        )


# ---- webhooks -----------------------------------------------------------------------------------


def test_webhook_receiver_gets_each_event_once_with_a_valid_signature(
    deployment: Deployment, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    synced(deployment, notify_config(port=1, webhook_url=webhook_receiver.url))
    queued = outbox_rows(deployment, channel="webhook")
    assert queued
    stats = run_worker(deployment)
    assert stats.sent == len(queued)
    got = webhook_receiver.accepted()
    assert len(got) == len(queued)
    assert Counter(d.event["id"] for d in got) == Counter({r.payload["id"]: 1 for r in queued})
    now = time.time()
    for delivery in got:
        assert verify_signature(WEBHOOK_SECRET.encode(), delivery.headers[SIGNATURE_HEADER], delivery.body, now)
        assert not verify_signature(b"another secret", delivery.headers[SIGNATURE_HEADER], delivery.body, now)
        event = delivery.event
        assert {"id", "type", "tenant", "occurred_at", "account", "change"} <= set(event)
        assert event["account"]["userName"] and event["tenant"] == "example"
    types = Counter(d.event["type"] for d in got)
    assert types["account.created"] == len(deployment.people()) and types["account.pending"] > 0
    assert run_worker(deployment).sent == 0 and len(webhook_receiver.deliveries) == len(got)


def test_webhook_5xx_is_retried_and_delivered_later(
    deployment: Deployment, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    synced(deployment, notify_config(port=1, webhook_url=webhook_receiver.url))
    webhook_receiver.status = 503
    first = run_worker(deployment)
    assert first.sent == 0 and first.retried > 0
    assert all(r.last_error == "HTTP 503 Service Unavailable" for r in outbox_rows(deployment, channel="webhook"))
    webhook_receiver.status = 200
    assert run_worker(deployment, at=later()).sent == len(outbox_rows(deployment, channel="webhook"))
    ids = Counter(d.event["id"] for d in webhook_receiver.accepted())
    assert set(ids.values()) == {1}


def test_webhook_410_disables_the_endpoint_with_an_audit_event(
    deployment: Deployment, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    synced(deployment, notify_config(port=1, webhook_url=webhook_receiver.url))
    webhook_receiver.script = [200, 410]
    total = len(outbox_rows(deployment, channel="webhook"))
    stats = run_worker(deployment)
    assert stats.sent == 1 and stats.dead == total - 1
    assert len(webhook_receiver.deliveries) == 2  # nothing more once disabled
    with runtime_of(deployment) as runtime, runtime.engine.connect() as conn:
        events = conn.execute(
            select(AuditEvent.__table__).where(AuditEvent.__table__.c.action == "webhook_disabled")
        ).all()
    assert len(events) == 1 and "410" in events[0].reason
    assert bridge(deployment, "outbox", "enable-webhook").output.strip() == "webhook endpoint enabled"
    dead = json.loads(bridge(deployment, "outbox", "list", "--dead", "--json").output)
    assert bridge(deployment, "outbox", "retry", str(dead[0]["id"])).exit_code == 0
    assert run_worker(deployment).sent == 1


def test_webhook_without_a_secret_is_a_config_error(deployment: Deployment, webhook_receiver: WebhookReceiver) -> None:
    deployment.write_config(
        extra=notify_config(port=1, webhook_url=webhook_receiver.url).replace(
            'secret_env = "BRIDGE_TEST_WEBHOOK_SECRET"\n', ""
        )
    )
    assert bridge(deployment, "db", "upgrade").exit_code == 0  # `outbox run` creates no database
    result = bridge(deployment, "outbox", "run", "--once")
    assert result.exit_code == 2 and "webhook.secret_env" in result.output


def test_outbox_run_once_exits_1_while_the_relay_is_down(deployment: Deployment) -> None:
    synced(deployment, notify_config(port=1))
    result = bridge(deployment, "outbox", "run", "--once")
    assert result.exit_code == 1 and "retried" in result.output


def test_unknown_channel_and_topic_are_refused_at_once(deployment: Deployment, smtp_server: SmtpServer) -> None:
    synced(deployment, notify_config(smtp=smtp_server))
    with runtime_of(deployment) as runtime, runtime.engine.begin() as conn:
        tenant_id, account_id = conn.execute(select(outbox.c.tenant_id, outbox.c.account_id)).first()
        now = datetime.now(UTC)
        for channel, topic in (("sms", "x"), ("email", "newsletter")):
            conn.execute(
                insert(outbox).values(
                    tenant_id=tenant_id,
                    account_id=account_id,
                    channel=channel,
                    topic=topic,
                    payload={"to": "a@b.org"},
                    idempotency_key=f"{channel}:{topic}",
                    status="queued",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    run_worker(deployment)
    refused = outbox_rows(deployment, status="failed")
    assert sorted(r.last_error for r in refused) == ["no template for mail topic 'newsletter'", "unknown channel 'sms'"]


def test_a_short_webhook_secret_is_a_config_error(
    deployment: Deployment, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", "hunter2")
    deployment.write_config(extra=notify_config(port=1, webhook_url=webhook_receiver.url))
    assert bridge(deployment, "db", "upgrade").exit_code == 0  # `outbox run` creates no database
    result = bridge(deployment, "outbox", "run", "--once")
    assert result.exit_code == 2, result.output
    assert "webhook.secret_env" in result.output and "at least 32" in result.output
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("email", "warned"),
    [
        ('smtp_host = "192.0.2.25"\nusername = "bridge"\npassword_env = "BRIDGE_TEST_SMTP_PASSWORD"\n', True),
        (
            'smtp_host = "192.0.2.25"\nusername = "bridge"\npassword_env = "BRIDGE_TEST_SMTP_PASSWORD"\n'
            "starttls = true\n",
            False,
        ),
        ('username = "bridge"\npassword_env = "BRIDGE_TEST_SMTP_PASSWORD"\n', False),  # 127.0.0.1
        ('smtp_host = "192.0.2.25"\n', False),  # no AUTH, no password to leak
    ],
)
def test_smtp_auth_in_clear_to_a_remote_relay_is_warned_about(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, email: str, warned: bool
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_SMTP_PASSWORD", "relay-password")
    synced(deployment, notify_config(port=1))
    text = notify_config(port=1)
    if "smtp_host" in email:
        text = text.replace('smtp_host = "127.0.0.1"\n', "")
    deployment.write_config(extra=text.replace("[email]\n", "[email]\n" + email, 1))
    with caplog.at_level("WARNING"), runtime_of(deployment) as runtime:
        OutboxWorker(runtime)
    found = [r.getMessage() for r in caplog.records if "without TLS" in r.getMessage()]
    assert bool(found) == warned, found
    assert all("192.0.2.25:1" in m and "relay-password" not in m for m in found)


def test_purge_bounds_the_outbox_and_keeps_every_link_as_it_was(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    """Sent rows go after 30 days, dead ones after 90; the newest activation row of each account
    stays, so a link replaced by a resend stays replaced once the old rows are gone."""
    synced(deployment, notify_config(smtp=smtp_server))
    pending = sorted(pending_users(deployment).items())
    run_worker(deployment)
    (first, first_address), (second, _) = pending[:2]
    _, old = link_in(mails_to(smtp_server, first_address)[0])
    for user in (first, second):
        assert bridge(deployment, "users", "resend-activation", user).exit_code == 0
    run_worker(deployment)
    _, new = link_in(mails_to(smtp_server, first_address)[1])
    rows = outbox_rows(deployment)
    assert len(rows) == len(pending) + 2 and {r.status for r in rows} == {"sent"}
    replaced = [r for r in rows if any(o.account_id == r.account_id and o.id > r.id for o in rows)]
    assert len(replaced) == 2
    with runtime_of(deployment) as runtime:
        with runtime.engine.begin() as conn:  # one replaced row is dead: an operator may still look at it
            conn.execute(update(outbox).where(outbox.c.id == replaced[1].id).values(status="dead"))
        assert policy.purge_outbox(runtime.engine, datetime.now(UTC)) == 0
        assert policy.purge_outbox(runtime.engine, datetime.now(UTC) + timedelta(days=31)) == 1
        assert policy.purge_outbox(runtime.engine, datetime.now(UTC) + timedelta(days=91)) == 1
        # Years later every account still has its newest activation row, so no link changes state.
        assert policy.purge_outbox(runtime.engine, datetime.now(UTC) + timedelta(days=3650)) == 0
        with runtime.engine.connect() as conn:
            from bridge.notify.activation import LinkState, look_up

            assert look_up(conn, old, datetime.now(UTC)).state is LinkState.REPLACED
            assert look_up(conn, new, datetime.now(UTC)).state is LinkState.VALID
    left = outbox_rows(deployment)
    assert sorted(r.id for r in left) == sorted(r.id for r in rows if r not in replaced)
