"""Pausing a tenant (issue 17): identities keep updating, accounts do not change.

An administrator pauses a tenant when its source is about to do something they do not trust yet
(an identity provider being reconfigured, a directory being migrated, a mapping under review), as
Okta pauses an import until someone resumes it. While paused:

- SCIM writes are answered and stored as the identity provider sent them (a GET returns them), but
  no account is planned from them (scim.handlers skips the re-plan, a DELETE only marks the identity).
- A directory sync reads nothing and records the run `paused`; the bookmark stays where it was.
- Re-plans (a changed mapping, freed seats) and the expiry job leave the tenant alone.
- What a person does by hand (archive, reactivate, resend an activation) still happens: it is a
  decision, which is what the pause waits for.

Resuming clears the flag first (so every path below plans normally), then plans the tenant once:
each directory source in full (its threshold and other checks apply as in any run), every SCIM user
from what is stored (creations, changes and suspensions received while paused) and the accounts of
the SCIM users deleted meanwhile (archived), then a re-plan of whoever waits for room or, if the
mapping changed while paused, of everyone. A failing step is recorded as that run's failure and
does not stop the next: the scheduler's runs converge on what is left. The SCIM catch-up is the
one step no scheduled run would redo by itself, so resuming marks it due in the same statement
that clears the pause (tenants.catch_up_due_at) and only its success clears the mark; until then
the scheduler's `replan` job runs it again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from bridge.config import Config
from bridge.core.plan import AccountPlan, Plan
from bridge.engine.guard import ScimGuard
from bridge.engine.replan import CHUNK, replan_chunks, replan_if_needed
from bridge.engine.sync import SyncResult, run_sync
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import scim_delete, tenant_view
from bridge.store.audit import record_tenant_event
from bridge.store.db import transaction
from bridge.store.runs import record_sync_run
from bridge.store.scim import SOURCE as SCIM_SOURCE
from bridge.store.scim import deleted_with_live_account, user_anchors
from bridge.store.tenants import catch_up_done, catch_up_due, get_tenant, set_paused

log = logging.getLogger(__name__)


@dataclass
class Resumed:
    """What resuming ran: one result per directory source, the SCIM catch-up, the re-plan."""

    tenant: str
    paused_at: datetime
    runs: list[SyncResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.aborted or r.errors for r in self.runs)


def pause_tenant(config: Config, engine: Engine, tenant_name: str, *, actor: str, now: datetime | None = None) -> bool:
    """Pause the tenant; False when it already was (nothing written)."""
    config.tenant_settings(tenant_name)  # an unknown tenant is refused before anything is written
    now = now or datetime.now(UTC)
    with transaction(engine) as conn:
        row = get_tenant(conn, tenant_name)
        if row.paused_at is not None:
            return False
        set_paused(conn, row.id, now, now)
        record_tenant_event(
            conn,
            row.id,
            actor=actor,
            action="tenant_paused",
            after={"pausedAt": now.isoformat()},
            reason=None,
            correlation_id=None,
            now=now,
        )
    log.info("tenant %s paused by %s", tenant_name, actor)
    return True


def resume_tenant(
    config: Config, engine: Engine, tenant_name: str, *, actor: str, now: datetime | None = None
) -> Resumed | None:
    """Resume the tenant and plan it once; None when it was not paused (nothing run)."""
    tenant_cfg = config.tenant_settings(tenant_name)
    now = now or datetime.now(UTC)
    with transaction(engine) as conn:
        row = get_tenant(conn, tenant_name)
        if row.paused_at is None:
            return None
        set_paused(conn, row.id, None, now)
        record_tenant_event(
            conn,
            row.id,
            actor=actor,
            action="tenant_resumed",
            before={"pausedAt": row.paused_at.isoformat()},
            after=None,
            reason=None,
            correlation_id=None,
            now=now,
        )
    log.info("tenant %s resumed by %s (paused since %s)", tenant_name, actor, row.paused_at.isoformat())
    resumed = Resumed(tenant=tenant_name, paused_at=row.paused_at)
    for source in sorted(s.name for s in config.sources.values() if s.tenant == tenant_cfg.name):
        try:
            resumed.runs.append(run_sync(config, engine, source, mode="full", actor=actor))
        except Exception:  # recorded as the run's failure by the sync itself
            log.exception("resuming %s: the sync of %s failed; its next scheduled run retries", tenant_name, source)
            resumed.runs.append(SyncResult(source=source, tenant=tenant_name, dry_run=False, errors=["failed"]))
    resumed.runs.append(catch_up_scim(config, engine, tenant_name, actor=actor))
    resumed.runs.append(replan_if_needed(config, engine, tenant_name, actor=actor))
    return resumed


def finish_catch_ups(config: Config, engine: Engine, *, actor: str) -> list[SyncResult]:
    """The SCIM catch-up of every tenant resumed by a process that did not finish it (it crashed,
    or the catch-up failed): the scheduler's `replan` job runs this first."""
    with transaction(engine, write=False) as conn:
        unfinished = [n for n in catch_up_due(conn) if n in config.tenants]
    results = []
    for name in unfinished:
        log.info("tenant %s was resumed and its SCIM users not yet planned again: planning them now", name)
        results.append(catch_up_scim(config, engine, name, actor=actor))
    return results


def catch_up_scim(config: Config, engine: Engine, tenant_name: str, *, actor: str) -> SyncResult:
    """Plan every SCIM user of the tenant from what is stored, as each write would have, and archive
    the accounts of those deleted; recorded as a run of source "scim", mode "resume"."""
    started = time.monotonic()
    now = datetime.now(UTC)
    correlation_id = f"resume-{uuid.uuid4().hex[:16]}"
    tenant_cfg = config.tenant_settings(tenant_name)
    with transaction(engine, write=False) as conn:
        view = tenant_view(conn, tenant_cfg)
        live = user_anchors(conn, view.id)
        deleted = deleted_with_live_account(conn, view.id)
    ctx = ApplyContext.for_tenant(config, view.id, view.name, actor=actor, correlation_id=correlation_id, now=now)
    result = SyncResult(source=SCIM_SOURCE, tenant=tenant_name, dry_run=False, run_id=correlation_id, mode="resume")
    merged: dict[tuple[str, str], AccountPlan] = {}
    # What the identity provider pushed while paused meets the SCIM guard, as each write would
    # have: a mass deprovisioning received during the pause is held, not applied by resuming.
    guard = ScimGuard(config, view, ctx)
    outcome = "ok"
    try:
        # Deletions first: the seats they free are there for the people planned next.
        for start in range(0, len(deleted), CHUNK):
            with transaction(engine) as conn:
                for anchor in deleted[start : start + CHUNK]:
                    plan = scim_delete(conn, view, anchor, ctx, guard=guard)
                    if plan is not None:
                        merged[(SCIM_SOURCE, anchor)] = plan
        replan_chunks(engine, view, SCIM_SOURCE, live, ctx, merged, result.errors, live_only=False, guard=guard)
    except Exception as exc:
        outcome = "failed"
        result.reason = f"{type(exc).__name__}: {exc}"[:1000]
        log.exception("resuming %s: the SCIM catch-up failed; resume again or re-run `bridge replan`", tenant_name)
    result.plan = Plan(
        source=SCIM_SOURCE,
        accounts=list(merged.values()),
        unchanged=len(live) + len(deleted) - len(merged),
        active_before=len(live) + len(deleted),
        modules=tuple(view.config.mapping().modules),
    )
    result.counts = result.plan.counts()
    result.planned = {**result.counts, "seatRefused": len(result.seat_refused)}
    result.duration = time.monotonic() - started
    if outcome == "ok" and result.errors:
        outcome = "partial"
    with transaction(engine) as conn:
        record_sync_run(
            conn,
            tenant_id=view.id,
            source=SCIM_SOURCE,
            mode="resume",
            correlation_id=correlation_id,
            started_at=now,
            finished_at=datetime.now(UTC),
            outcome=outcome,
            reason=result.reason or "the tenant was resumed: what the identity provider sent while paused",
            counts={**result.counts, "seatRefused": len(result.seat_refused)},
            planned=result.planned,
            forced=None,
            errors=result.errors[:100],
            warnings=[],
        )
        if outcome == "ok":
            catch_up_done(conn, view.id)
    return result
