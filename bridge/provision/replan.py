"""Re-planning a few accounts from stored identities, inside the caller's transaction.

Used wherever one change touches a handful of people: a SCIM write, a manual reactivation.
Seats and limited roles held by everybody else are counted in the database, so the outcome is
the same as a full sync would reach.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from bridge.config import TenantConfig
from bridge.core import actions
from bridge.core.guard import DELETED, deprovisions
from bridge.core.lifecycle import Status
from bridge.core.mapping import mapping_fingerprint, names_group
from bridge.core.plan import (
    AccountPlan,
    AccountState,
    Plan,
    build_plan,
    effective_seat_limit,
    frees_capacity,
    holds_seat,
)
from bridge.provision.apply import ApplyContext, apply_account, apply_accounts
from bridge.store.accounts import account_of_identity, account_state, live_accounts, load_account_states, usage_outside
from bridge.store.changes import set_account_flags
from bridge.store.db import transaction
from bridge.store.guard import kept
from bridge.store.identities import effective_groups, load_subjects, stored_groups
from bridge.store.plans import waiting_in_open_plan
from bridge.store.scim import SOURCE as SCIM_SOURCE
from bridge.store.tenants import get_tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantView:
    id: int
    name: str
    seat_limit: int | None
    config: TenantConfig
    # Paused (bridge.engine.pause): what the sources send is stored, and no account changes by
    # itself until the tenant is resumed. A person's own action (archive, reactivate) still does.
    paused: bool = False


class Guard(Protocol):
    """The SCIM guard (bridge.engine.guard) as a SCIM write hands it to the re-plan: given an
    account plan that takes someone's access away and the identity digest it was computed from,
    it counts it in the tenant's window and returns True when it held it (then it is not applied)."""

    def __call__(self, conn: Connection, plan: AccountPlan, digest: str) -> bool: ...


def tenant_view(conn: Connection, tenant_cfg: TenantConfig) -> TenantView:
    row = get_tenant(conn, tenant_cfg.name)
    limit = effective_seat_limit(tenant_cfg.seat_limit, row.seat_limit)
    return TenantView(id=row.id, name=row.name, seat_limit=limit, config=tenant_cfg, paused=row.paused_at is not None)


def planning_fingerprint(tenant: TenantView) -> str:
    """What the tenant's plans depend on besides its people: its mapping and capacity settings."""
    cfg = tenant.config
    return mapping_fingerprint(
        cfg.mapping(), seat_limit=tenant.seat_limit, suspended_counts_as_seat=cfg.suspended_counts_as_seat
    )


def replan(
    conn: Connection,
    tenant: TenantView,
    source: str,
    anchors: Sequence[str],
    ctx: ApplyContext,
    *,
    live_only: bool = False,
    guard: Guard | None = None,
    ignore_kept: bool = False,
) -> Plan:
    """Plan and apply the given people of one source from what is stored about them; returns
    the plan of what was applied.

    `live_only` leaves out people without an account or with an archived one: a re-plan of the
    tenant (bridge.engine.replan) brings nobody back to life and creates nobody; that stays the
    business of their source.

    For SCIM people, a deprovisioning a person rejected (a held plan of the SCIM guard) is not
    applied while the identity is the one it was computed from, whoever re-plans (a write, the
    replan job, a resume), unless `ignore_kept` (an approval). With `guard` (a SCIM write), each
    other deprovisioning goes through it and is left out when it is held.
    """
    mapping = tenant.config.mapping()
    states = load_account_states(conn, tenant.id, source, anchors)
    if live_only:
        anchors = [a for a in anchors if a in states and states[a].status is not Status.ARCHIVED]
    subjects = load_subjects(conn, tenant.id, source, anchors) if anchors else []
    usage = usage_outside(
        conn,
        tenant.id,
        mapping,
        exclude_ids=[s.id for s in states.values()],
        suspended_counts_as_seat=tenant.config.suspended_counts_as_seat,
        # The seat count is read only for a limit to check it against (build_plan reads no other).
        seats=tenant.seat_limit is not None or bool(mapping.limited_modules()),
    )
    plan = build_plan(
        source,
        subjects,
        states,
        mapping,
        now=ctx.now,
        seat_limit=tenant.seat_limit,
        usage=usage,
        complete_scope=False,
        suspended_counts_as_seat=tenant.config.suspended_counts_as_seat,
        recreate_renamed=tenant.config.recreate_renamed,
    )
    if source != SCIM_SOURCE:
        apply_accounts(conn, plan.accounts, ctx)
        return plan
    leaving = [p for p in plan.accounts if deprovisions(p)]
    leaving_ids = {id(p) for p in leaving}
    rejected: dict[str, str] = {}
    waiting: set[str] = set()
    if leaving and not ignore_kept:
        ids = [p.account_id for p in leaving if p.account_id]
        rejected = kept(conn, ids)
        # Without a guard (the replan job, a seat freed), a change the open plan holds waits for
        # its decision; with one (a write, a resume), the guard adds it to that plan.
        waiting = set() if guard is not None else waiting_in_open_plan(conn, tenant.id, SCIM_SOURCE, ids)
    applied: list[AccountPlan] = []
    pending: list[AccountPlan] = []  # written as one batch (a write of 1,000 members: 2,000 people)
    for account_plan in plan.accounts:
        if id(account_plan) in leaving_ids:
            digest = account_plan.digest or ""
            if account_plan.account_id in rejected and rejected[account_plan.account_id] == digest:
                continue  # a person kept this account as it is, for this very identity
            if account_plan.account_id in waiting:
                continue
            if guard is not None:
                # The guard counts the live accounts: it sees every change applied before this one.
                apply_accounts(conn, pending, ctx)
                pending = []
                if guard(conn, account_plan, digest):
                    continue
        pending.append(account_plan)
        applied.append(account_plan)
    apply_accounts(conn, pending, ctx)
    return plan if len(applied) == len(plan.accounts) else replace(plan, accounts=applied)


def membership_matters(conn: Connection, tenant: TenantView, source: str, group_anchor: str) -> bool:
    """Whether adding people to the group or removing them from it can change anyone's plan: the
    mapping names it, or a group it is nested in (`core.mapping.names_group`). When it cannot,
    the people whose membership changed need no re-plan: their roles, user type and login hours
    stay what they are (a SCIM client's groups that no rule names, Entra's "assigned" groups)."""
    mapping = tenant.config.mapping()
    refs = [*stored_groups(conn, tenant.id, source, [group_anchor]).values()]
    refs += effective_groups(conn, tenant.id, source, [group_anchor]).get(group_anchor, ())
    return any(names_group(mapping, ref) for ref in refs)


# People per write transaction when many are re-planned at once (SQLite's write lock is held for
# one transaction at a time: short ones keep SCIM writes flowing meanwhile).
CHUNK = 500


def replan_waiting(engine: Engine, tenant_cfg: TenantConfig, ctx: ApplyContext) -> list[Plan]:
    """Re-plan the tenant's accounts waiting for a seat or a limited role, after a change that may
    have freed one (an archive, a suspension, a revoked role), in transactions of their own.

    Waiting people are re-planned in userName order, the order they are admitted in. Never raises:
    the change that freed the room is committed whatever happens here, and the scheduler's
    `replan` job gives the room to the waiting if this did not (docs/operations/replan.md).
    """
    plans: list[Plan] = []
    try:
        with transaction(engine, write=False) as conn:
            view = tenant_view(conn, tenant_cfg)
            if view.paused:
                return plans  # resuming re-plans everyone, the waiting included
            waiting = live_accounts(conn, view.id, waiting_only=True)
        for source, anchors in sorted(waiting.items()):
            for start in range(0, len(anchors), CHUNK):
                with transaction(engine) as conn:
                    plans.append(replan(conn, view, source, anchors[start : start + CHUNK], ctx, live_only=True))
    except Exception:
        log.exception("re-planning the accounts of %s waiting for room failed; the replan job retries", ctx.tenant_name)
    return plans


def room_freed(plans: Sequence[AccountPlan], tenant: TenantView) -> bool:
    """Whether someone may be waiting for what `plans` gave up (then `replan_waiting`, after the
    commit). Cheap: it looks at the plans only, never at the database."""
    mapping = tenant.config.mapping()
    limited = tenant.seat_limit is not None
    return any(frees_capacity(p, mapping, seats_limited=limited) for p in plans)


def _seat_held(state: AccountState, tenant: TenantView | None) -> bool:
    if tenant is None:
        return False
    return holds_seat(state, tenant.config.mapping(), tenant.config.suspended_counts_as_seat)


def archive_account(
    conn: Connection,
    account: Any,
    roles: Sequence[str],
    ctx: ApplyContext,
    *,
    reason: str | None = None,
    tenant: TenantView | None = None,
) -> AccountPlan:
    """Archive by hand (or by expiry); returns the plan applied (`room_freed` tells whether someone
    waiting for a seat or a limited role should be re-planned after the commit)."""
    state = account_state(account, roles)
    plan = actions.archive(state, actor=ctx.actor, reason=reason, seat_before=_seat_held(state, tenant))
    apply_account(conn, plan, ctx)
    set_account_flags(conn, account.id, admin_hold=True)
    return plan


def scim_delete(
    conn: Connection,
    tenant: TenantView,
    anchor: str,
    ctx: ApplyContext,
    *,
    guard: Guard | None = None,
    ignore_kept: bool = False,
) -> AccountPlan | None:
    """SCIM DELETE archives the account through the core (no admin hold, unlike `bridge users
    archive`: the person is gone from the source, as a directory leaver is). None when there is no
    live account, or nothing was applied: a person rejected this deletion (held by the SCIM guard),
    or `guard` holds it now (see `replan`)."""
    found = account_of_identity(conn, tenant.id, anchor)
    if found is None:
        return None
    state = account_state(*found)
    plan = actions.scim_delete(state, seat_before=_seat_held(state, tenant))
    if plan is None:
        return None
    if not ignore_kept and kept(conn, [state.id]).get(state.id) == DELETED:
        return None
    if guard is None and not ignore_kept and waiting_in_open_plan(conn, tenant.id, SCIM_SOURCE, [state.id]):
        return None
    if guard is not None and guard(conn, plan, DELETED):
        return None
    apply_account(conn, plan, ctx)
    return plan


def reactivate_account(conn: Connection, tenant: TenantView, account: Any, ctx: ApplyContext) -> Plan:
    """archived -> no_access, then the rules apply again (roles -> pending with a new mail)."""
    apply_account(conn, actions.reactivate(account_state(account, ()), actor=ctx.actor), ctx)
    values: dict[str, Any] = {"admin_hold": False}
    days = tenant.config.mapping().external_expires_after_days
    if account.user_type == "external" and days:
        # Reactivating a temporary external account renews it for one more period.
        values["expires_at"] = ctx.now + timedelta(days=days)
    set_account_flags(conn, account.id, **values)
    return replan(conn, tenant, account.source, [account.anchor], ctx)


def resend_activation(conn: Connection, account: Any, ctx: ApplyContext) -> None:
    apply_account(conn, actions.resend_activation(account_state(account, ()), actor=ctx.actor), ctx)
