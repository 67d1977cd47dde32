"""Held plans (issue 17) against a real slapd, on SQLite and PostgreSQL, through the CLI: a sync
refused by the deletion threshold keeps its plan; approve applies exactly that plan, or refuses
and holds a new one when the directory changed; reject; expiry by the scheduler's job."""

from __future__ import annotations

import getpass
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bridge.notify.webhook import SIGNATURE_HEADER, verify_signature
from bridge.store.db import make_engine
from bridge.store.tables import AccountEventRow, AuditEvent, HeldPlan, OutboxMessage
from tests.fixtures.slapd import Slapd
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.webhook import WebhookReceiver
from tests.integration.notify_support import WEBHOOK_SECRET, notify_config, run_worker
from tests.ldap_deployment import LdapDeployment

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"
NAMES = [f"user{i:02d}" for i in range(10)]


def person(uid: str) -> str:
    return (
        f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()} Tester\nsn: Tester\n"
        f"givenName: {uid.title()}\nmail: {uid}@example.org"
    )


@pytest.fixture
def directory(slapd: Slapd) -> Slapd:
    members = "".join(f"member: uid={u},{PEOPLE}\n" for u in NAMES[:5])
    slapd.add_ldif(
        "\n\n".join([*(person(u) for u in NAMES), f"dn: cn=staff,{GROUPS}\nobjectClass: groupOfNames\ncn: staff\n"])
        + members
        + "\n"
    )
    return slapd


@pytest.fixture
def deploy(tmp_path: Path, db_url: str, directory: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapDeployment:
    d = LdapDeployment(
        tmp_path,
        db_url,
        flavor="openldap",
        url=directory.url,
        bind_dn=directory.bind_dn,
        password=directory.password,
        user_base=PEOPLE,
        group_base=GROUPS,
        monkeypatch=monkeypatch,
    )
    assert d.sync()["exit"] == 0
    return d


def remove(directory: Slapd, uids: list[str]) -> None:
    conn = directory.connect()
    try:
        for uid in uids:
            assert conn.delete(f"uid={uid},{PEOPLE}"), conn.result
    finally:
        conn.unbind()


def plans(d: LdapDeployment) -> list[dict[str, Any]]:
    out = d.bridge("plans", "list", "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def show(d: LdapDeployment, plan_id: str) -> dict[str, Any]:
    out = d.bridge("plans", "show", plan_id, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def statuses(d: LdapDeployment) -> dict[str, str]:
    return {name: u["status"] for name, u in d.users().items()}


def audit(d: LdapDeployment, action: str) -> list[dict[str, Any]]:
    return [e for e in json.loads(d.bridge("audit", "--json").output) if e["action"] == action]


def trip(d: LdapDeployment, directory: Slapd, leavers: list[str]) -> dict[str, Any]:
    """Remove `leavers` from the directory and run a sync the threshold refuses."""
    remove(directory, leavers)
    out = d.sync("--full")
    assert out["exit"] == 1 and out["aborted"] and "deletion threshold" in out["reason"], out
    assert out["held"]
    return out


def test_a_threshold_trip_holds_the_plan_and_changes_no_account(deploy: LdapDeployment, directory: Slapd) -> None:
    assert deploy.sync("--full")["held"] is None  # nothing refused, nothing held
    before, statuses_before = deploy.counts(), statuses(deploy)
    leavers = NAMES[:6]
    out = trip(deploy, directory, leavers)
    # The plan and its audit event are written; no account, grant or mail is.
    after = deploy.counts()
    assert {k: after[k] for k in ("accounts", "role_grants", "identities")} == {
        k: before[k] for k in ("accounts", "role_grants", "identities")
    }
    assert statuses(deploy) == statuses_before
    [listed] = plans(deploy)
    assert listed["id"] == out["held"] and listed["status"] == "held" and listed["reason"] == "deletion_threshold"
    assert listed["tenant"] == "example" and listed["source"] == "dir" and listed["archived"] == 6
    assert listed["unchanged"] == 4 and listed["counts"]["created"] == 0 and listed["counts"]["archived"] == 6
    shown = show(deploy, out["held"])
    assert sorted(c["userName"] for c in shown["changes"] if c["kind"] == "archive") == leavers
    assert all(c["reason"] == "no longer in source" for c in shown["changes"])
    [held] = audit(deploy, "plan_held")
    assert held["after"]["plan"] == out["held"] and held["after"]["counts"]["archived"] == 6

    # The next refused run over the same directory keeps that plan (same id, no second event).
    same = deploy.sync("--full")
    assert same["exit"] == 1 and same["held"] == out["held"] and len(plans(deploy)) == 1
    assert len(audit(deploy, "plan_held")) == 1
    # A refused run over a changed directory supersedes it: one plan waits, the newest.
    remove(directory, [NAMES[6]])
    again = deploy.sync("--full")
    assert again["exit"] == 1 and again["held"] and again["held"] != out["held"]
    by_id = {p["id"]: p for p in plans(deploy)}
    assert by_id[out["held"]]["status"] == "expired" and by_id[out["held"]]["supersededBy"] == again["held"]
    assert by_id[again["held"]]["status"] == "held"
    # A dry run holds nothing.
    assert deploy.sync("--full", "--dry-run")["held"] is None and len(plans(deploy)) == 2


def test_approve_applies_exactly_the_held_plan(deploy: LdapDeployment, directory: Slapd) -> None:
    leavers = NAMES[2:8]
    plan_id = trip(deploy, directory, leavers)["held"]
    listed = sorted(c["userName"] for c in show(deploy, plan_id)["changes"])
    approved = deploy.bridge("plans", "approve", plan_id)
    assert approved.exit_code == 0, approved.output
    assert "archived 6" in approved.output
    now = statuses(deploy)
    assert sorted(u for u, s in now.items() if s == "archived") == listed == leavers
    assert all(now[u] != "archived" for u in NAMES if u not in leavers)
    assert show(deploy, plan_id)["status"] == "approved"
    actor = f"cli:{getpass.getuser()}"
    [event] = audit(deploy, "plan_approved")
    assert event["actor"] == actor and event["after"]["plan"] == plan_id
    archives = audit(deploy, "archive")
    assert len(archives) == 6 and {e["actor"] for e in archives} == {actor}
    assert {e["correlationId"] for e in archives} == {event["correlationId"]}
    # Applied once: approving again is refused, and the next sync has nothing left to do.
    again = deploy.bridge("plans", "approve", plan_id)
    assert again.exit_code == 1 and "approved, not held" in again.output
    assert deploy.sync("--full")["archived"] == 0


def test_approve_after_the_directory_changed_refuses_and_holds_the_new_plan(
    deploy: LdapDeployment, directory: Slapd
) -> None:
    plan_id = trip(deploy, directory, NAMES[:6])["held"]
    remove(directory, [NAMES[6]])  # one more gone since the review
    before, statuses_before = deploy.counts(), statuses(deploy)
    refused = deploy.bridge("plans", "approve", plan_id)
    assert refused.exit_code == 1, refused.output
    assert "the source changed" in refused.output
    new_id = next(p["id"] for p in plans(deploy) if p["status"] == "held")
    assert f"plan {new_id} is held instead" in refused.output
    assert statuses(deploy) == statuses_before
    after = deploy.counts()
    assert after["accounts"] == before["accounts"] and after["role_grants"] == before["role_grants"]
    old, new = show(deploy, plan_id), show(deploy, new_id)
    assert old["status"] == "expired" and old["supersededBy"] == new_id
    assert new["reason"] == "deletion_threshold" and new["archived"] == 7
    assert audit(deploy, "plan_approved") == []
    # The new plan is the one a person reviews and approves.
    assert deploy.bridge("plans", "approve", new_id).exit_code == 0
    assert sum(1 for s in statuses(deploy).values() if s == "archived") == 7


def test_reject_keeps_the_accounts_and_is_audited(deploy: LdapDeployment, directory: Slapd) -> None:
    plan_id = trip(deploy, directory, NAMES[:6])["held"]
    statuses_before = statuses(deploy)
    rejected = deploy.bridge("plans", "reject", plan_id)
    assert rejected.exit_code == 0 and "rejected" in rejected.output
    assert show(deploy, plan_id)["status"] == "rejected" and statuses(deploy) == statuses_before
    [event] = audit(deploy, "plan_rejected")
    assert event["actor"] == f"cli:{getpass.getuser()}" and event["after"]["plan"] == plan_id
    assert deploy.bridge("plans", "approve", plan_id).exit_code == 1
    assert statuses(deploy) == statuses_before


def test_a_plan_nobody_decides_expires_by_the_scheduler(deploy: LdapDeployment, directory: Slapd) -> None:
    (deploy.root / "schedules").mkdir()
    (deploy.root / "schedules" / "jobs.toml").write_text('[jobs.expire]\ntarget = "expire_external"\nevery = "1h"\n')
    deploy.config.write_text(deploy.config.read_text() + '\n[schedules]\ndir = "schedules"\n')
    tenant = 'mappings = "mapping.toml"\n'
    deploy.config.write_text(deploy.config.read_text().replace(tenant, tenant + "held_plan_days = 2\n"))
    plan_id = trip(deploy, directory, NAMES[:6])["held"]
    shown = show(deploy, plan_id)
    created = datetime.fromisoformat(shown["created"])
    assert datetime.fromisoformat(shown["expires"]) - created == timedelta(days=2)
    ran = deploy.bridge("jobs", "run", "expire")
    assert ran.exit_code == 0 and show(deploy, plan_id)["status"] == "held"  # not due yet
    engine = make_engine(deploy.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(HeldPlan.__table__)
                .where(HeldPlan.__table__.c.id == plan_id)
                .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
            )
    finally:
        engine.dispose()
    ran = deploy.bridge("jobs", "run", "expire")
    assert ran.exit_code == 0, ran.output
    assert show(deploy, plan_id)["status"] == "expired"
    [event] = audit(deploy, "plan_expired")
    assert event["actor"] == "job:expire_held_plans"
    late = deploy.bridge("plans", "approve", plan_id)
    assert late.exit_code == 1 and "expired, not held" in late.output
    assert sum(1 for s in statuses(deploy).values() if s == "archived") == 0


def test_an_unknown_plan_id_is_one_line_and_exit_2(deploy: LdapDeployment) -> None:
    for command in ("show", "approve", "reject"):
        out = deploy.bridge("plans", command, "no-such-plan")
        assert out.exit_code == 2 and out.output.strip() == "bridge: no held plan 'no-such-plan'"


def test_held_and_approved_plans_are_product_events(
    deploy: LdapDeployment, directory: Slapd, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan.held` and `plan.approved` go through the outbox, queued with the decision, and the
    worker delivers them signed, with `account` null (an event about the tenant)."""
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    deploy.config.write_text(deploy.config.read_text() + notify_config(port=1, webhook_url=webhook_receiver.url))
    plan_id = trip(deploy, directory, NAMES[:6])["held"]
    engine = make_engine(deploy.db_url)
    try:
        with engine.connect() as conn:
            queued = conn.execute(
                select(OutboxMessage.topic, OutboxMessage.account_id).where(OutboxMessage.channel == "webhook")
            ).all()
            held_event = conn.execute(select(AuditEvent.correlation_id).where(AuditEvent.action == "plan_held"))
            assert held_event.scalar_one()
    finally:
        engine.dispose()
    assert [(r.topic, r.account_id) for r in queued] == [("plan.held", None)]  # nothing else was written
    assert deploy.bridge("plans", "approve", plan_id).exit_code == 0
    run_worker(deploy)  # type: ignore[arg-type]
    events = [d.event for d in webhook_receiver.accepted()]
    now = time.time()
    assert all(
        verify_signature(WEBHOOK_SECRET.encode(), d.headers[SIGNATURE_HEADER], d.body, now)
        for d in webhook_receiver.accepted()
    )
    plan_events = [e for e in events if e["type"].startswith("plan.")]
    assert [e["type"] for e in plan_events] == ["plan.held", "plan.approved"]
    held, approved = plan_events
    assert held["tenant"] == "example" and held["account"] is None and approved["account"] is None
    assert held["change"]["plan"] == plan_id and held["change"]["reason"] == "deletion_threshold"
    assert held["change"]["counts"]["archived"] == 6 and approved["change"]["plan"] == plan_id
    # The approved plan's archives are account events, as any archive is.
    assert sum(1 for e in events if e["type"] == "account.archived") == 6
    # The change feed (GET /api/v1/events) carries the same events, with the webhooks' ids.
    engine = make_engine(deploy.db_url)
    try:
        with engine.connect() as conn:
            feed = list(conn.execute(select(AccountEventRow.payload).order_by(AccountEventRow.position)).scalars())
    finally:
        engine.dispose()
    assert [e["id"] for e in feed if e["type"].startswith("plan.")] == [e["id"] for e in plan_events]


def test_a_held_plan_alerts_once_while_the_source_has_one_held(
    deploy: LdapDeployment, directory: Slapd, smtp_server: SmtpServer
) -> None:
    from bridge.notify.worker import OutboxWorker
    from bridge.runtime import open_runtime
    from bridge.store.tables import Alert
    from tests.integration.notify_support import mails_to, notify_config

    text = deploy.config.read_text()
    text = text.replace('name = "example"\n', 'name = "example"\nalert_emails = ["it@example.org"]\n', 1)
    deploy.config.write_text(text + notify_config(smtp=smtp_server))
    first = trip(deploy, directory, NAMES[:6])["held"]
    assert deploy.sync("--full")["held"] == first  # the same trip again: the same plan
    again = trip(deploy, directory, NAMES[6:7])  # one more leaver: a newer plan supersedes it
    assert again["held"] and again["held"] != first
    runtime = open_runtime(deploy.config)
    try:
        OutboxWorker(runtime).run_once()  # the real worker, to aiosmtpd
        with runtime.engine.connect() as conn:
            mails = conn.execute(select(OutboxMessage.payload).where(OutboxMessage.topic == "alert")).scalars().all()
            (alert,) = conn.execute(select(Alert.__table__)).all()
        assert [m["to"] for m in mails] == ["it@example.org"]
        (mail,) = mails_to(smtp_server, "it@example.org")
        body = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "plan held" in mail.subject and f"/admin/t/example/plans/{first}" in body
        assert alert.kind == "plan_held" and alert.closed_at is None and alert.path == f"plans/{again['held']}"
        assert deploy.bridge("plans", "approve", again["held"]).exit_code == 0
        with runtime.engine.connect() as conn:
            assert conn.execute(select(Alert.closed_at)).scalar_one() is not None
    finally:
        runtime.engine.dispose()
