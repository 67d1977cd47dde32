"""Re-planning a whole tenant from its stored identities: `bridge replan`, a changed mapping, and
capacity that frees up (issue 12, item 3).

A directory source is re-planned by every sync; people pushed over SCIM only when the identity
provider sends a change for them. Whatever the rules or the capacity say after a mapping change or
a freed seat must still reach them, so this runs every live account of a tenant, of every source,
through the same planner and the same apply as a sync:

- The plan of each source is computed once from what is stored, in one read transaction, as a
  sync computes it from a read: it decides who changes, and a dry run prints it.
- The people it changes are then re-planned again, at most `CHUNK` per write transaction, from
  the state of that moment (`provision.replan.replan`), so a SCIM write that lands meanwhile is
  never undone by a stale plan, and SQLite's write lock is never held for long. Those whose plan
  frees capacity go first, then the others in userName order (the order newcomers are admitted
  in); whoever still differs from the plan is re-planned once more at the end, when all the room
  freed by the others exists.
- Nobody is archived (a person missing from a directory is its sync's business) and no archived
  account comes back (that takes `bridge users reactivate` or the source).

The tenant's mapping fingerprint (core.mapping.mapping_fingerprint) is stored after a run that
re-planned everyone without error; until then a changed mapping counts as changed, so a crash
half-way only means the next check re-plans again, which changes nothing already applied.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from bridge.config import Config
from bridge.core.plan import AccountPlan, AccountState, Plan, build_plan, frees_capacity, is_seat_denial
from bridge.engine.sync import SyncResult
from bridge.logs import correlation_id as correlation_var
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import Guard, TenantView, planning_fingerprint, replan, tenant_view
from bridge.store.accounts import live_accounts, load_account_states, usage_outside
from bridge.store.db import transaction
from bridge.store.identities import load_subjects
from bridge.store.runs import record_sync_run
from bridge.store.tenants import list_tenants, save_fingerprint, stored_fingerprint

# The logger keeps the name it had before the engine package: operators filter on it.
log = logging.getLogger("bridge.tenant_replan")

SOURCE = "replan"  # the name runs carry in `sync_runs`, `sync --history` and `--json`
CHUNK = 500  # people per write transaction


def run_replan(
    config: Config,
    engine: Engine,
    tenant_name: str,
    *,
    dry_run: bool = False,
    waiting_only: bool = False,
    actor: str | None = None,
    reason: str = "on demand",
    now: datetime | None = None,
) -> SyncResult:
    """Re-plan every live account of the tenant (or, `waiting_only`, those waiting for a seat or a
    limited role) and apply the result; returns it in the shape of a sync's result.

    A full run records itself in `sync_runs` under the source name "replan"; a `waiting_only` run
    only when it changed something (the scheduler runs one per tenant every few minutes).
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    correlation_id = f"replan-{uuid.uuid4().hex[:16]}"
    token = correlation_var.set(correlation_id)
    try:
        return _run(config, engine, tenant_name, dry_run, waiting_only, actor, reason, now, correlation_id, started)
    finally:
        correlation_var.reset(token)


def _run(
    config: Config,
    engine: Engine,
    tenant_name: str,
    dry_run: bool,
    waiting_only: bool,
    actor: str | None,
    reason: str,
    now: datetime,
    correlation_id: str,
    started: float,
) -> SyncResult:
    tenant_cfg = config.tenant_settings(tenant_name)
    mode = "waiting" if waiting_only else "full"
    result = SyncResult(source=SOURCE, tenant=tenant_name, dry_run=dry_run, run_id=correlation_id, mode=mode)
    with transaction(engine, write=False) as conn:
        view = tenant_view(conn, tenant_cfg)
        live = live_accounts(conn, view.id, waiting_only=waiting_only) if not view.paused or dry_run else {}
    if view.paused and not dry_run:
        # Nothing changes while the tenant is paused; resuming re-plans it (engine.pause). The
        # mapping's fingerprint is left as it was, so a changed mapping is still re-planned then.
        result.paused = True
        result.reason = "the tenant is paused"
        if not waiting_only:
            with transaction(engine) as conn:
                _record(conn, view.id, result, "paused", reason, correlation_id, now)
        return result
    fingerprint = planning_fingerprint(view)
    ctx = ApplyContext.for_tenant(
        config, view.id, view.name, actor=actor or "replan", correlation_id=correlation_id, now=now
    )
    merged: dict[tuple[str, str], AccountPlan] = {}
    refused: set[str] = set()
    considered = 0
    outcome = "ok"
    try:
        for source, anchors in sorted(live.items()):
            considered += len(anchors)
            plan = _plan_source(engine, view, source, anchors, now, whole_source=not waiting_only)
            refused |= set(plan.seat_refused)
            if dry_run:
                for account in plan.accounts:
                    merged[(source, account.anchor)] = account
                continue
            _apply_source(engine, view, source, plan, ctx, merged, result.errors)
    except Exception as exc:
        outcome = "failed"
        result.reason = f"{type(exc).__name__}: {exc}"[:1000]
        raise
    finally:
        # Whose seat the plan refused, as the accounts now stand (a re-plan may have changed it).
        for account in merged.values():
            seat_denied = any(is_seat_denial(why) for why in account.denied.values())
            (refused.add if seat_denied else refused.discard)(account.user_name)
        result.plan = Plan(
            source=SOURCE,
            accounts=list(merged.values()),
            unchanged=considered - len(merged),
            active_before=considered,
            seat_refused=tuple(sorted(refused, key=str.casefold)),
            modules=tuple(tenant_cfg.mapping().modules),
        )
        result.counts = result.plan.counts()
        result.planned = {**result.counts, "seatRefused": len(refused)}
        if outcome == "ok" and result.errors:
            outcome = "partial"
        result.duration = time.monotonic() - started
        if dry_run:
            outcome = "dry-run"
        else:
            changed = any(a.changes for a in merged.values())
            try:
                with transaction(engine) as conn:
                    if not waiting_only and outcome == "ok":
                        # Everyone now follows this mapping: the check stops re-planning the tenant.
                        save_fingerprint(conn, view.id, fingerprint)
                    if not waiting_only or changed or outcome != "ok":
                        _record(conn, view.id, result, outcome, reason, correlation_id, now)
            except Exception:
                if outcome != "failed":
                    raise
                log.exception("replan %s: could not record the failed run", tenant_name)  # the cause is raised
        log.info(
            "replan %s (%s, %s): %s %s in %.1fs",
            tenant_name,
            mode,
            reason,
            outcome,
            result.counts,
            result.duration,
            extra={"correlation_id": correlation_id},
        )
    return result


def _plan_source(
    engine: Engine, view: TenantView, source: str, anchors: Sequence[str], now: datetime, *, whole_source: bool
) -> Plan:
    """The plan of one source's people from what is stored, read in one transaction; writes nothing."""
    with transaction(engine, write=False) as conn:
        return plan_source(conn, view, source, anchors, now, whole_source=whole_source)[0]


def plan_source(
    conn: Connection, view: TenantView, source: str, anchors: Sequence[str], now: datetime, *, whole_source: bool
) -> tuple[Plan, dict[str, AccountState]]:
    """`_plan_source` inside the caller's transaction, with the account states it planned from
    (the mapping preview reads every source in one read-only transaction)."""
    cfg = view.config
    mapping = cfg.mapping()
    subjects = []
    for start in range(0, len(anchors), CHUNK):  # bound the size of each IN list
        subjects += load_subjects(conn, view.id, source, anchors[start : start + CHUNK])
    states = load_account_states(conn, view.id, source, None if len(anchors) > CHUNK else anchors)
    if whole_source:
        usage = usage_outside(
            conn, view.id, mapping, exclude_source=source, suspended_counts_as_seat=cfg.suspended_counts_as_seat
        )
    else:  # some of the source's people only: the others keep what they hold
        usage = usage_outside(
            conn,
            view.id,
            mapping,
            exclude_ids=[states[a].id for a in anchors if a in states],
            suspended_counts_as_seat=cfg.suspended_counts_as_seat,
        )
    plan = build_plan(
        source,
        subjects,
        states,
        mapping,
        now=now,
        seat_limit=view.seat_limit,
        usage=usage,
        complete_scope=False,  # a re-plan archives nobody
        suspended_counts_as_seat=cfg.suspended_counts_as_seat,
        recreate_renamed=cfg.recreate_renamed,
    )
    return plan, states


def _apply_source(
    engine: Engine,
    view: TenantView,
    source: str,
    plan: Plan,
    ctx: ApplyContext,
    merged: dict[tuple[str, str], AccountPlan],
    errors: list[str],
) -> None:
    mapping = view.config.mapping()
    # Room first: whoever gives up a seat or a limited role, then the rest in userName order.
    order = sorted(plan.accounts, key=lambda a: (not frees_capacity(a, mapping), a.user_name.casefold()))
    replan_chunks(engine, view, source, [a.anchor for a in order], ctx, merged, errors)
    # Those a chunk planned before room was freed in a later one get what the plan gave them now.
    behind = []
    for wanted in order:
        got = merged.get((source, wanted.anchor))
        if got is None or got.roles_after != wanted.roles_after or got.after is not wanted.after:
            behind.append(wanted.anchor)
    if behind:
        replan_chunks(engine, view, source, behind, ctx, merged, errors)


def replan_chunks(
    engine: Engine,
    view: TenantView,
    source: str,
    anchors: Sequence[str],
    ctx: ApplyContext,
    merged: dict[tuple[str, str], AccountPlan],
    errors: list[str],
    *,
    live_only: bool = True,
    guard: Guard | None = None,
) -> None:
    """Re-plan and apply `anchors` of one source, `CHUNK` per write transaction (one by one when a
    chunk fails), adding what each account went through to `merged` and what failed to `errors`.
    `live_only=False` also creates and revives, as the source's own writes would (engine.pause);
    `guard` is the SCIM guard those writes would have met."""
    for start in range(0, len(anchors), CHUNK):
        chunk = list(anchors[start : start + CHUNK])
        try:
            with transaction(engine) as conn:
                applied = replan(conn, view, source, chunk, ctx, live_only=live_only, guard=guard)
        except SQLAlchemyError:
            # One bad row must not hold back the others: one person per transaction instead.
            log.warning("replan of %d accounts failed; retrying one by one", len(chunk))
            applied = Plan(source=source, accounts=[], unchanged=0, active_before=0)
            for anchor in chunk:
                try:
                    with transaction(engine) as conn:
                        applied.accounts += replan(
                            conn, view, source, [anchor], ctx, live_only=live_only, guard=guard
                        ).accounts
                except SQLAlchemyError as exc:
                    message = f"{source}/{anchor}: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"
                    log.error("account not re-planned: %s", message)
                    errors.append(message)
        for account in applied.accounts:
            key = (source, account.anchor)
            before = merged.get(key)
            if before is None:
                merged[key] = account
            else:  # planned twice: one account, all its changes, the outcome of the last
                merged[key] = replace(
                    account,
                    changes=[*before.changes, *account.changes],
                    seat_before=before.seat_before,
                    modules_before=before.modules_before,
                )


def _record(
    conn: Any, tenant_id: int, result: SyncResult, outcome: str, reason: str, correlation_id: str, now: datetime
) -> None:
    record_sync_run(
        conn,
        tenant_id=tenant_id,
        source=SOURCE,
        mode=result.mode,
        correlation_id=correlation_id,
        started_at=now,
        finished_at=datetime.now(UTC),
        outcome=outcome,
        reason=result.reason or reason,
        counts={**result.counts, "seatRefused": len(result.seat_refused)},
        planned=result.planned,
        forced=None,
        errors=result.errors[:100],
        warnings=[],
    )


# ---- the checks the scheduler runs ------------------------------------------------------------


def mapping_changed(config: Config, engine: Engine, tenant_name: str) -> bool:
    with transaction(engine, write=False) as conn:
        view = tenant_view(conn, config.tenant_settings(tenant_name))
        return stored_fingerprint(conn, view.id) != planning_fingerprint(view)


def replan_changed_tenants(config: Config, engine: Engine, *, actor: str = "replan") -> list[SyncResult]:
    """Re-plan every tenant whose mapping (or seat limit) changed since its accounts were planned,
    and, in every other tenant, the accounts waiting for a seat or a limited role (room may have
    been freed by a path that did not re-plan them itself, or by a crash between the two).

    What the scheduler runs at its start and in its `replan` job (after engine.pause's unfinished
    catch-ups)."""
    with transaction(engine, write=False) as conn:
        names = [t.name for t in list_tenants(conn)]
    return [replan_if_needed(config, engine, name, actor=actor) for name in names]


def replan_if_needed(config: Config, engine: Engine, tenant_name: str, *, actor: str) -> SyncResult:
    """Everyone, when the tenant's mapping changed since its accounts were planned; otherwise those
    waiting for a seat or a limited role."""
    if mapping_changed(config, engine, tenant_name):
        return run_replan(config, engine, tenant_name, actor=actor, reason="the mapping changed")
    return run_replan(config, engine, tenant_name, waiting_only=True, actor=actor, reason="capacity may have freed up")


def replan_waiting(config: Config, engine: Engine, tenant_name: str, *, actor: str) -> SyncResult | None:
    """After a change that freed a seat or a limited role (an archive, a suspension, a revoke),
    in a transaction of its own: those waiting for it get it. Never raises: the change that freed
    the room is committed, and the scheduler's `replan` job does this again if it fails here."""
    try:
        return run_replan(config, engine, tenant_name, waiting_only=True, actor=actor, reason="capacity freed up")
    except Exception:
        log.exception("replan of %s's waiting accounts failed; the scheduler's replan job retries", tenant_name)
        return None
