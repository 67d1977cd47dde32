"""Expiry of temporary external accounts: archived at `expires_at`, audited, held archived."""

from __future__ import annotations

import uuid
from datetime import datetime

from bridge.core.lifecycle import Status
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import archive_account, replan_waiting, room_freed, tenant_view
from bridge.runtime import Runtime
from bridge.store.accounts import account_roles, expired_external_ids, get_account
from bridge.store.db import transaction
from bridge.store.tenants import get_tenant


def expire_external_accounts(runtime: Runtime, now: datetime) -> int:
    """Archive every external account past its expiry date; returns how many were archived.

    The archive carries an administrator's hold so that the next sync, which still sees the
    contractor in the directory, does not bring the account straight back; renewing it is a
    deliberate `bridge users reactivate`, which also starts a new expiry period.
    """
    archived = 0
    correlation_id = f"expire-{uuid.uuid4().hex[:16]}"
    with transaction(runtime.engine, write=False) as conn:
        tenants = {t: get_tenant(conn, t) for t in runtime.config.tenants}
    for name, tenant in tenants.items():
        freed: ApplyContext | None = None
        with transaction(runtime.engine, write=False) as conn:
            view = tenant_view(conn, runtime.config.tenant_settings(name))
            due = expired_external_ids(conn, tenant.id, now)
        for account_id in due:
            # One transaction per account: a failure leaves the others archived and this one
            # due again at the next run.
            with transaction(runtime.engine) as conn:
                row = get_account(conn, tenant.id, account_id)
                if row.status == Status.ARCHIVED.value:
                    continue
                ctx = ApplyContext(
                    tenant_id=tenant.id,
                    tenant_name=name,
                    actor="job:expire_external",
                    correlation_id=correlation_id,
                    now=now,
                    webhooks=bool(runtime.config.webhook.get("url")),
                )
                roles = [r for r, _ in account_roles(conn, [row.id]).get(row.id, [])]
                plan = archive_account(
                    conn,
                    row,
                    roles,
                    ctx,
                    reason=f"external account expired on {row.expires_at.isoformat()}",
                    tenant=view,
                )  # sets the admin hold, like an administrator's archive
                archived += 1
                if room_freed([plan], view):
                    freed = ctx
        if freed is not None:  # the seats given up go to those waiting for one
            replan_waiting(runtime.engine, runtime.config.tenant_settings(name), freed)
    return archived
