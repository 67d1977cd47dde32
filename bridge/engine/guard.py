"""The SCIM guard (issue 17): a mass deprovisioning pushed over SCIM waits for a person.

An identity provider deprovisions one request at a time: a scope change or an unassigned group
makes Entra send `active:false` for hundreds of people, each alone harmless. Per tenant, the
guard counts the deprovisionings SCIM writes ask for (a suspension, a DELETE's archive, a change
that leaves someone no role) in a sliding window of `scim_deprovision_window_minutes`; past
both `scim_deprovision_limit` of the tenant's live accounts and `scim_deprovision_minimum`, the
account change is not applied but held in the tenant's open plan of source `scim` (one collects
them all while it waits; while it waits, every further deprovisioning joins it), and the
tenant's alert addresses hear of it once. The write itself succeeds: the identity is stored as
sent, so the identity provider reads back what it wrote.

Approving re-plans the held people from what is stored about them now and applies that, in one
transaction with the approval's audit event: the identity provider may have re-activated some
of them meanwhile; the approval then applies what their identity says now and reports the
difference. Rejecting (or letting the plan expire) leaves the accounts as they are, and keeps
them so (bridge.store.guard.keep): no later re-plan of the same identities applies what was
held; the identity provider's next version of a person is planned, and guarded, as any write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from bridge.config import Config
from bridge.core.guard import allowed, over_limit
from bridge.core.held import (
    APPROVED,
    HELD_DIGEST,
    SCIM_DEPROVISION_LIMIT,
    account_plan_from_json,
    account_plan_to_json,
    main_change,
    plan_counts,
    plan_header,
)
from bridge.core.plan import AccountPlan, Plan
from bridge.engine.alerts import raise_alert
from bridge.engine.held import approved_event, plan_event
from bridge.errors import BridgeError
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import TenantView, replan, replan_waiting, room_freed, scim_delete, tenant_view
from bridge.store import guard as window
from bridge.store.db import transaction
from bridge.store.plans import add_account, decide, hold_plan, open_plan, plan_account, plan_accounts
from bridge.store.scim import SOURCE as SCIM_SOURCE


def _plan_of(parts: list[AccountPlan]) -> Plan:
    return Plan(source=SCIM_SOURCE, accounts=parts, unchanged=0, active_before=0)


def _counts(part: AccountPlan) -> dict[str, int]:
    return plan_counts(_plan_of([part]))


class ScimGuard:
    """The guard of one SCIM write (bridge.provision.replan.Guard): called, in the write's
    transaction, for each account change that takes someone's access away."""

    def __init__(self, config: Config, view: TenantView, ctx: ApplyContext) -> None:
        self.config = config
        self.view = view
        self.ctx = ctx

    def __call__(self, conn: Connection, plan: AccountPlan, digest: str) -> bool:
        settings = self.view.config
        tenant_id, now = self.view.id, self.ctx.now
        since = now - timedelta(minutes=settings.scim_deprovision_window_minutes)
        window.lock_window(conn, tenant_id)
        waiting = open_plan(conn, tenant_id, SCIM_SOURCE)
        count = window.count_since(conn, tenant_id, since) + 1  # this one included
        held = waiting is not None
        live = 0
        if not held and count > settings.scim_deprovision_minimum:
            # The live count only when the minimum is passed: the usual leaver costs two
            # indexed reads and one insert.
            live = window.live_count(conn, tenant_id)
            held = over_limit(count, live, settings.scim_deprovision_limit, settings.scim_deprovision_minimum)
        window.record(conn, tenant_id, plan.account_id, held=held, now=now, forget_before=since)
        if held:
            self._hold(conn, plan, digest, waiting, count, live)
        return held

    def _hold(self, conn: Connection, plan: AccountPlan, digest: str, waiting: Any, count: int, live: int) -> None:
        settings = self.view.config
        kind, why = main_change(plan)
        part = {
            "account_id": plan.account_id,
            "user_name": plan.user_name,
            "kind": kind,
            "reason": why,
            "payload": {**account_plan_to_json(plan), HELD_DIGEST: digest},
        }
        if waiting is not None:
            old = plan_account(conn, waiting.id, plan.account_id) if plan.account_id else None
            counts = dict(waiting.counts)
            for key, value in _counts(plan).items():
                counts[key] = int(counts.get(key, 0)) + value
            if old is not None:  # the person's newer change takes the place of the older
                for key, value in _counts(account_plan_from_json(old.payload)).items():
                    counts[key] = int(counts.get(key, 0)) - value
            add_account(conn, waiting.id, self.view.id, part, counts, replaces=old.seq if old else None)
            return
        limit = allowed(live, settings.scim_deprovision_limit, settings.scim_deprovision_minimum)
        detail = (
            f"{count} people deprovisioned over SCIM within {settings.scim_deprovision_window_minutes} minutes, "
            f"more than the {limit} allowed ({settings.scim_deprovision_limit:.0%} of {live} live accounts, "
            f"at least {settings.scim_deprovision_minimum})"
        )
        counts = _counts(plan)
        expires = self.ctx.now + timedelta(days=settings.held_plan_days)
        plan_id, older = hold_plan(
            conn,
            tenant_id=self.view.id,
            source=SCIM_SOURCE,
            reason=SCIM_DEPROVISION_LIMIT,
            detail=detail,
            counts=counts,
            digest=SCIM_SOURCE,  # approval re-plans from the stored identities: no inputs to compare
            header={**plan_header(_plan_of([plan])), "activeBefore": live},
            accounts=[part],
            created_at=self.ctx.now,
            expires_at=expires,
            created_by=self.ctx.actor,
            correlation_id=self.ctx.correlation_id,
        )
        assert not older  # the open plan was looked up under the tenant's lock
        plan_event(
            conn,
            self.view.id,
            self.view.name,
            "plan.held",
            action="plan_held",
            actor=self.ctx.actor,
            detail={
                "plan": plan_id,
                "source": SCIM_SOURCE,
                "reason": SCIM_DEPROVISION_LIMIT,
                "counts": counts,
                "expires": expires.isoformat(),
            },
            reason=detail,
            correlation_id=self.ctx.correlation_id,
            now=self.ctx.now,
            webhooks=self.ctx.webhooks,
        )
        raise_alert(
            conn,
            self.config,
            self.view.id,
            self.view.name,
            kind="plan_held",
            subject=SCIM_SOURCE,
            summary=f"plan {plan_id}: deprovisioning pushed over SCIM is held for a decision: {detail}",
            path=f"plans/{plan_id}",
            now=self.ctx.now,
        )


@dataclass
class ScimApproval:
    """What approving a SCIM guard's plan applied: the counts, and the people for whom what
    their identity says now differs from what was held (`userName`, `held`, `applied`)."""

    counts: dict[str, int] = field(default_factory=dict)
    differences: list[dict[str, Any]] = field(default_factory=list)


def approve_scim(config: Config, engine: Engine, row: Any, *, actor: str) -> ScimApproval | None:
    """Apply a held plan of source `scim` from the identities as they are now (see the module's
    text). None when it is no longer held (someone decided first)."""
    now = datetime.now(UTC)
    settings = config.tenant_settings(row.tenant)
    correlation = f"approve-{row.id[:20]}"
    with transaction(engine) as conn:
        view = tenant_view(conn, settings)
        if view.paused:
            raise BridgeError(f"tenant {row.tenant} is paused: resume it before approving plan {row.id}")
        if not decide(conn, row.id, APPROVED, actor=actor, now=now):
            return None  # the conditional UPDATE: a plan is applied once
        parts, _ = plan_accounts(conn, row.id)
        held_kind = {p.account_id: (p.user_name, p.kind) for p in parts if p.account_id is not None}
        anchors = list(held_kind)  # a SCIM user's account id is its identity's anchor
        ctx = ApplyContext.for_tenant(config, view.id, view.name, actor=actor, correlation_id=correlation, now=now)
        window.forget(conn, anchors)  # an earlier rejection of some of them is overruled
        deleted = window.deleted_among(conn, view.id, anchors)
        applied: list[AccountPlan] = []
        for anchor in anchors:
            if anchor in deleted:
                archived = scim_delete(conn, view, anchor, ctx, ignore_kept=True)
                if archived is not None:
                    applied.append(archived)
        rest = [a for a in anchors if a not in deleted]
        if rest:
            applied.extend(replan(conn, view, SCIM_SOURCE, rest, ctx, ignore_kept=True).accounts)
        result = ScimApproval(counts=plan_counts(_plan_of(applied)))
        now_kind = {p.account_id: main_change(p)[0] for p in applied}
        for account_id, (user_name, kind) in held_kind.items():
            applied_kind = now_kind.get(account_id, "unchanged")
            if applied_kind != kind:
                result.differences.append({"userName": user_name, "held": kind, "applied": applied_kind})
        approved_event(
            conn,
            row,
            actor=actor,
            correlation_id=correlation,
            now=now,
            webhooks=ctx.webhooks,
            detail={"applied": result.counts, "differences": result.differences},
        )
    if room_freed(applied, view):
        replan_waiting(engine, settings, ctx)
    return result
