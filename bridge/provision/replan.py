"""Re-planning a few accounts from stored identities, inside the caller's transaction.

Used wherever one change touches a handful of people: a SCIM write, a manual reactivation.
Seats and limited roles held by everybody else are counted in the database, so the outcome is
the same as a full sync would reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, update

from bridge.config import TenantConfig
from bridge.core.lifecycle import Status
from bridge.core.plan import AccountPlan, Archive, Change, Plan, Reactivate, ResendActivation, RevokeRoles, build_plan
from bridge.errors import BridgeError
from bridge.provision.apply import ApplyContext, apply_account
from bridge.store.identities import load_subjects
from bridge.store.repo import get_tenant, load_account_states, usage_outside
from bridge.store.tables import Account

accounts_table = Account.__table__


@dataclass(frozen=True)
class TenantView:
    id: int
    name: str
    seat_limit: int | None
    config: TenantConfig


def tenant_view(conn: Connection, tenant_cfg: TenantConfig) -> TenantView:
    row = get_tenant(conn, tenant_cfg.name)
    limit = tenant_cfg.seat_limit if tenant_cfg.seat_limit is not None else row.seat_limit
    return TenantView(id=row.id, name=row.name, seat_limit=limit, config=tenant_cfg)


def replan(conn: Connection, tenant: TenantView, source: str, anchors: Sequence[str], ctx: ApplyContext) -> Plan:
    """Plan and apply the given people of one source from what is stored about them."""
    mapping = tenant.config.mapping()
    subjects = load_subjects(conn, tenant.id, source, anchors)
    states = load_account_states(conn, tenant.id, source, anchors)
    usage = usage_outside(
        conn,
        tenant.id,
        mapping,
        exclude_ids=[s.id for s in states.values()],
        suspended_counts_as_seat=tenant.config.suspended_counts_as_seat,
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
    )
    for account_plan in plan.accounts:
        apply_account(conn, account_plan, ctx)
    return plan


class ManualActionRefused(BridgeError):
    pass


def _manual_plan(a: Any, changes: list[Change], after: Status) -> AccountPlan:
    return AccountPlan(
        anchor=a.anchor,
        source=a.source,
        account_id=a.id,
        user_name=a.user_name,
        before=Status(a.status),
        after=after,
        status_before_suspend=None,
        roles_after=frozenset(),
        changes=changes,
        granted={},
        denied=a.denied or {},
        user=None,
        identity_changed=False,
        seat_before=False,
        seat_after=False,
        user_type=a.user_type,
    )


def archive_account(
    conn: Connection, account: Any, roles: Sequence[str], ctx: ApplyContext, *, reason: str | None = None
) -> None:
    status = Status(account.status)
    if status is Status.ARCHIVED:
        raise ManualActionRefused(f"{account.user_name} is already archived")
    reason = reason or f"archived by {ctx.actor}"
    changes: list[Change] = []
    if roles:
        changes.append(RevokeRoles(roles=tuple(sorted(roles)), event=None, reason=reason))
    changes.append(Archive(reason=reason))
    apply_account(conn, _manual_plan(account, changes, Status.ARCHIVED), ctx)
    conn.execute(update(accounts_table).where(accounts_table.c.id == account.id).values(admin_hold=True))


def reactivate_account(conn: Connection, tenant: TenantView, account: Any, ctx: ApplyContext) -> Plan:
    """archived -> no_access, then the rules apply again (roles -> pending with a new mail)."""
    if Status(account.status) is not Status.ARCHIVED:
        raise ManualActionRefused(f"{account.user_name} is {account.status}, not archived")
    apply_account(
        conn, _manual_plan(account, [Reactivate(reason=f"reactivated by {ctx.actor}")], Status.NO_ACCESS), ctx
    )
    values: dict[str, Any] = {"admin_hold": False}
    days = tenant.config.mapping().external_expires_after_days
    if account.user_type == "external" and days:
        # Reactivating a temporary external account renews it for one more period.
        values["expires_at"] = ctx.now + timedelta(days=days)
    conn.execute(update(accounts_table).where(accounts_table.c.id == account.id).values(**values))
    return replan(conn, tenant, account.source, [account.anchor], ctx)


def resend_activation(conn: Connection, account: Any, ctx: ApplyContext) -> None:
    status = Status(account.status)
    if status is not Status.PENDING:
        raise ManualActionRefused(
            f"{account.user_name} is {status.value}; only pending accounts have an activation to resend"
        )
    plan = _manual_plan(account, [ResendActivation(reason=f"resent by {ctx.actor}")], Status.PENDING)
    plan.roles_after = frozenset()
    apply_account(conn, plan, ctx)
