"""`bridge audit`: the audit events of a tenant or an account."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from bridge.cli.base import State, pass_state, print_json, table


@click.command()
@click.option("--tenant", default=None)
@click.option("--user", default=None)
@click.option("--since", default=None, metavar="ISO8601")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def audit(state: State, tenant: str | None, user: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Audit events, oldest first."""
    from bridge.store.accounts import find_account
    from bridge.store.audit import list_audit
    from bridge.store.db import transaction
    from bridge.store.tenants import get_tenant

    since_dt = None
    if since:
        try:
            since_dt = datetime.fromisoformat(since)
        except ValueError:
            raise click.BadParameter(f"not an ISO 8601 date or time: {since}", param_hint="--since") from None
        if since_dt.tzinfo is None:
            since_dt = since_dt.replace(tzinfo=UTC)
    with transaction(state.runtime.engine, write=False) as conn:
        tenant_row = get_tenant(conn, state.tenant_name(tenant))
        account_id = find_account(conn, tenant_row.id, user).id if user else None
        events = list_audit(conn, tenant_row.id, account_id=account_id, since=since_dt, limit=limit)
    data = [
        {
            "id": e.id,
            "at": e.occurred_at.isoformat(),
            "tenant": tenant_row.name,
            "account": e.account_id,
            "actor": e.actor,
            "action": e.action,
            "before": e.before,
            "after": e.after,
            "reason": e.reason,
            "correlationId": e.correlation_id,
        }
        for e in events
    ]
    if as_json:
        print_json(data)
        return
    table(
        ["AT", "ACTOR", "ACTION", "ACCOUNT", "FROM", "TO", "REASON"],
        [
            [
                d["at"],
                d["actor"],
                d["action"],
                d["account"] or "",
                (d["before"] or {}).get("status"),
                (d["after"] or {}).get("status"),
                d["reason"],
            ]
            for d in data
        ],
    )
