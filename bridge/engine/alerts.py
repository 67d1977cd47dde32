"""Alerts (issue 17): what an administrator must hear about without watching a metric, mailed
once per incident to the tenant's `alert_emails` through the outbox, with a link to the console.

Incidents (bridge.store.alerts keeps one row while each lasts):
- `source_failing`: a source's last `alert_after_failed_runs` runs (default 3) all failed or were
  aborted (unreachable, incomplete read, a safety check): checked at the end of each run, closed
  by the next run that goes through.
- `mail_problems`: the tenant has dead or refused (failed) outbox rows; closed when none is left
  (retried, or purged).
- `mail_stuck`: its oldest queued row waits longer than `alert_queued_minutes` (default 60).
- `plan_held`: a plan is waiting for a decision (bridge.engine.plans raises it).

The mail checks run in the scheduler's `alerts` job. An alert mail is itself an outbox row: when
the mail relay is what is broken, it waits in the queue with the rest, and the console's overview
(which lists the open incidents) and `/metrics` are where the trouble shows meanwhile.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection, Engine

from bridge.config import Config, TenantConfig
from bridge.runtime import Runtime
from bridge.store.alerts import ALERT_TOPIC, close_alerts, open_alert
from bridge.store.audit import record_tenant_event
from bridge.store.changes import insert_outbox_rows
from bridge.store.db import transaction
from bridge.store.outbox import mail_health
from bridge.store.runs import failed_in_a_row
from bridge.store.tenants import list_tenants

log = logging.getLogger(__name__)

FAILING = ("failed", "aborted")  # run outcomes that count towards a failing source


def raise_alert(
    conn: Connection,
    config: Config,
    tenant_id: int,
    tenant_name: str,
    *,
    kind: str,
    subject: str,
    summary: str,
    path: str,
    now: datetime,
) -> bool:
    """Open the incident and, when it is new, queue one mail per alert address and audit it (in
    the caller's transaction). True when it was new."""
    alert_id = open_alert(conn, tenant_id, kind, subject, summary, path, now)
    if alert_id is None:
        return False
    settings = config.tenant(tenant_name)
    addresses = settings.alert_emails if settings else ()
    link = f"{str(config.server['public_url']).rstrip('/')}/admin/t/{tenant_name}/{path}"
    language = settings.default_language if settings else "en"
    insert_outbox_rows(
        conn,
        [
            {
                "tenant_id": tenant_id,
                "account_id": None,
                "channel": "email",
                "topic": ALERT_TOPIC,
                "payload": {"to": to, "language": language, "kind": kind, "summary": summary, "link": link},
                "idempotency_key": f"alert:{alert_id}:{to.casefold()}"[:100],
                "status": "queued",
                "last_error": None,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for to in addresses
        ],
    )
    if addresses:  # who was told what, when (an incident with nobody to tell shows in the console)
        record_tenant_event(
            conn,
            tenant_id,
            actor="bridge",
            action="alert_opened",
            after={"alert": alert_id, "kind": kind, "subject": subject, "mailed": list(addresses)},
            reason=summary,
            correlation_id=None,
            now=now,
        )
    log.warning("alert %s (%s) opened for tenant %s: %s", kind, subject, tenant_name, summary)
    return True


def after_run(
    engine: Engine,
    config: Config,
    tenant_id: int,
    tenant_name: str,
    source: str,
    outcome: str,
    reason: str | None,
    now: datetime,
    *,
    held: bool = False,
) -> None:
    """At the end of a sync run: a source failing run after run opens `source_failing`, a run that
    went through closes it; a run that held its plan is the `plan_held` incident's business. Never
    raises: the run is recorded whatever happens here."""
    if held:
        return
    settings = config.tenant(tenant_name)
    try:
        with transaction(engine) as conn:
            if outcome in FAILING and settings is not None:
                needed = settings.alert_after_failed_runs
                streak = failed_in_a_row(conn, tenant_id, source, FAILING, limit=needed)
                if streak >= needed:
                    raise_alert(
                        conn,
                        config,
                        tenant_id,
                        tenant_name,
                        kind="source_failing",
                        subject=source,
                        summary=f"the source {source} did not go through {streak} runs in a row; the last: {reason}",
                        path="runs",
                        now=now,
                    )
            elif outcome in ("ok", "partial"):
                close_alerts(conn, tenant_id, "source_failing", now, subject=source)
    except Exception:
        log.exception("sync %s: the failing-source alert could not be checked", source)


def check_mail(runtime: Runtime, now: datetime) -> int:
    """The scheduler's `alerts` job: dead or refused mail and mail stuck in the queue, per tenant;
    returns how many incidents were opened."""
    opened = 0
    with transaction(runtime.engine, write=False) as conn:
        known = [t for t in list_tenants(conn) if t.name in runtime.config.tenants]
    for tenant in known:
        settings = runtime.config.tenants[tenant.name]
        try:
            with transaction(runtime.engine) as conn:
                opened += _check_tenant_mail(conn, runtime.config, settings, tenant.id, now)
        except Exception:  # one tenant's trouble must not hide another's
            log.exception("alerts: the mail checks of %s failed", tenant.name)
    return opened


def _check_tenant_mail(conn: Connection, config: Config, settings: TenantConfig, tenant_id: int, now: datetime) -> int:
    health = mail_health(conn, tenant_id, now)
    opened = 0
    problems = health.dead + health.failed
    if problems:
        summary = f"{health.dead} dead and {health.failed} refused outbox messages (mail or webhooks) need a look"
        opened += raise_alert(
            conn,
            config,
            tenant_id,
            settings.name,
            kind="mail_problems",
            subject="mail",
            summary=summary,
            path="outbox",
            now=now,
        )
    else:
        close_alerts(conn, tenant_id, "mail_problems", now)
    age = health.oldest_queued_age_seconds
    if age is not None and age > settings.alert_queued_minutes * 60:
        summary = f"the oldest queued message has waited {int(age // 60)} minutes ({health.queued} queued)"
        opened += raise_alert(
            conn,
            config,
            tenant_id,
            settings.name,
            kind="mail_stuck",
            subject="mail",
            summary=summary,
            path="outbox",
            now=now,
        )
    else:
        close_alerts(conn, tenant_id, "mail_stuck", now)
    return opened
