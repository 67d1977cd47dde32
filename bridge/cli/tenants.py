"""`bridge tenants`: add and list tenants."""

from __future__ import annotations

import click

from bridge.cli.base import State, pass_state, print_json, table, utc_now


@click.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("add")
@click.argument("name")
@click.option("--seat-limit", type=click.IntRange(min=0), default=None)
@pass_state
def tenants_add(state: State, name: str, seat_limit: int | None) -> None:
    """Add a tenant (idempotent)."""
    from bridge.store.db import transaction
    from bridge.store.tenants import ensure_tenant

    with transaction(state.creating_runtime().engine) as conn:
        row = ensure_tenant(conn, name, seat_limit, utc_now(), update_limit=seat_limit is not None)
    click.echo(
        f"tenant {row.name} (id {row.id}, seat limit {row.seat_limit if row.seat_limit is not None else 'none'})"
    )


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def tenants_list(state: State, as_json: bool) -> None:
    from bridge.store.db import transaction
    from bridge.store.tenants import list_tenants

    with transaction(state.runtime.engine, write=False) as conn:
        rows = list_tenants(conn)
    configured = state.runtime.config.tenants
    data = [
        {
            "name": t.name,
            "seatLimit": configured[t.name].seat_limit
            if t.name in configured and configured[t.name].seat_limit is not None
            else t.seat_limit,
            "configured": t.name in configured,
            "created": t.created_at.isoformat(),
        }
        for t in rows
    ]
    if as_json:
        print_json(data)
    else:
        table(
            ["NAME", "SEAT LIMIT", "IN CONFIG", "CREATED"],
            [[d["name"], d["seatLimit"], d["configured"], d["created"]] for d in data],
        )
