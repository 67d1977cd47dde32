"""Archives no source asks for, run by the scheduler's `expire_external` job: temporary external
accounts at their `expires_at`, and (a leaver policy, issue 17) accounts suspended for longer
than the tenant's `archive_after_suspended_days`. Each is audited and carries an administrator's
hold, so the next sync does not bring it straight back: an expired contractor or a leaver who
returns is brought back on purpose, with `Reactivate` (`bridge users reactivate`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bridge.config import TenantConfig
from bridge.core.lifecycle import Status
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import archive_account, replan_waiting, room_freed, tenant_view
from bridge.runtime import Runtime
from bridge.store.accounts import account_roles, expired_external_ids, get_account, long_suspended_ids
from bridge.store.db import transaction
from bridge.store.tenants import get_tenant

# Which accounts of a tenant are due (None: the policy is off for it), and the archive's reason.
Due = Callable[[Any, int, TenantConfig, datetime], list[str] | None]
Reason = Callable[[Any, TenantConfig], str]


def expire_external_accounts(runtime: Runtime, now: datetime) -> int:
    """Archive every external account past its expiry date; returns how many were archived."""
    return _archive_due(
        runtime,
        now,
        actor="job:expire_external",
        due=lambda conn, tenant_id, _cfg, moment: expired_external_ids(conn, tenant_id, moment),
        reason=lambda row, _cfg: f"external account expired on {row.expires_at.isoformat()}",
    )


def archive_long_suspended(runtime: Runtime, now: datetime) -> int:
    """Archive every account suspended longer than its tenant's `archive_after_suspended_days`
    (Okta deactivates leavers and never deletes them: without this they keep a seat forever)."""

    def due(conn: Any, tenant_id: int, cfg: TenantConfig, moment: datetime) -> list[str] | None:
        days = cfg.archive_after_suspended_days
        return None if days is None else long_suspended_ids(conn, tenant_id, moment - timedelta(days=days))

    return _archive_due(
        runtime,
        now,
        actor="job:archive_suspended",
        due=due,
        reason=lambda _row, cfg: (
            f"suspended for more than {cfg.archive_after_suspended_days} days (archive_after_suspended_days)"
        ),
    )


def _archive_due(runtime: Runtime, now: datetime, *, actor: str, due: Due, reason: Reason) -> int:
    archived = 0
    correlation_id = f"{actor.split(':', 1)[1]}-{uuid.uuid4().hex[:16]}"
    with transaction(runtime.engine, write=False) as conn:
        tenants = {t: get_tenant(conn, t) for t in runtime.config.tenants}
    for name, tenant in tenants.items():
        if tenant.paused_at is not None:
            continue  # due again, and archived, once the tenant is resumed
        settings = runtime.config.tenant_settings(name)
        freed: ApplyContext | None = None
        with transaction(runtime.engine, write=False) as conn:
            ids = due(conn, tenant.id, settings, now)
            if not ids:
                continue
            view = tenant_view(conn, settings)
        for account_id in ids:
            # One transaction per account: a failure leaves the others archived and this one
            # due again at the next run.
            with transaction(runtime.engine) as conn:
                row = get_account(conn, tenant.id, account_id)
                if row.status == Status.ARCHIVED.value:
                    continue
                ctx = ApplyContext.for_tenant(
                    runtime.config, tenant.id, name, actor=actor, correlation_id=correlation_id, now=now
                )
                roles = [r for r, _ in account_roles(conn, [row.id]).get(row.id, [])]
                plan = archive_account(conn, row, roles, ctx, reason=reason(row, settings), tenant=view)
                archived += 1
                if room_freed([plan], view):
                    freed = ctx
        if freed is not None:  # the seats given up go to those waiting for one
            replan_waiting(runtime.engine, settings, freed)
    return archived
