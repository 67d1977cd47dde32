"""`bridge tenants`: add, list, pause and resume tenants."""

from __future__ import annotations

import sys

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table, utc_now
from bridge.errors import ConfigError


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
    from bridge.store.accounts import seat_counts
    from bridge.store.db import transaction
    from bridge.store.tenants import list_tenants

    configured = state.runtime.config.tenants
    seats: dict[str, dict[str, dict[str, int | None]]] = {}
    with transaction(state.runtime.engine, write=False) as conn:
        rows = list_tenants(conn)
        for t in rows:
            cfg = configured.get(t.name)
            try:
                mapping = cfg.mapping() if cfg is not None else None
            except ConfigError:
                mapping = None  # listing tenants must not need every mapping right; `sync` says what is wrong
            if mapping is None or not mapping.modules:
                seats[t.name] = {}
                continue
            _, used = seat_counts(conn, t.id, mapping, suspended_counts_as_seat=cfg.suspended_counts_as_seat)
            seats[t.name] = {m.id: {"used": used[m.id], "limit": m.seat_limit} for m in mapping.modules.values()}
    data = [
        {
            "name": t.name,
            "seatLimit": configured[t.name].seat_limit
            if t.name in configured and configured[t.name].seat_limit is not None
            else t.seat_limit,
            "configured": t.name in configured,
            "created": t.created_at.isoformat(),
            "paused": t.paused_at.isoformat() if t.paused_at else None,
            # Seats per module of the mapping's [modules] ({} without modules).
            "seats": seats[t.name],
        }
        for t in rows
    ]
    if as_json:
        print_json(data)
    else:
        table(
            ["NAME", "SEAT LIMIT", "IN CONFIG", "CREATED", "PAUSED", "MODULE SEATS"],
            [
                [d["name"], d["seatLimit"], d["configured"], d["created"], d["paused"] or "", _module_seats(d["seats"])]
                for d in data
            ],
        )


def _module_seats(seats: dict[str, dict[str, int | None]]) -> str:
    return ", ".join(
        f"{m} {s['used']}/{s['limit']}" if s["limit"] is not None else f"{m} {s['used']}" for m, s in seats.items()
    )


@tenants.command("pause")
@click.argument("name")
@pass_state
def tenants_pause(state: State, name: str) -> None:
    """Pause a tenant: identities keep updating, no account changes until `tenants resume`."""
    from bridge.engine.pause import pause_tenant

    runtime = state.checked_runtime()
    if pause_tenant(runtime.config, runtime.engine, name, actor=cli_actor()):
        click.echo(f"tenant {name} paused: identities keep updating, accounts do not change until it is resumed")
    else:
        click.echo(f"tenant {name} was already paused")


@tenants.command("resume")
@click.argument("name")
@pass_state
def tenants_resume(state: State, name: str) -> None:
    """Resume a paused tenant and plan it once (each directory source in full, then SCIM)."""
    from bridge.engine.pause import resume_tenant

    runtime = state.checked_runtime()
    resumed = resume_tenant(runtime.config, runtime.engine, name, actor=cli_actor())
    if resumed is None:
        click.echo(f"tenant {name} was not paused")
        return
    click.echo(f"tenant {name} resumed (paused since {resumed.paused_at:%Y-%m-%d %H:%M} UTC)")
    for run in resumed.runs:
        data = run.to_json()
        counts = ", ".join(f"{k} {data[k]}" for k in ("created", "updated", "rolesChanged", "suspended", "archived"))
        state_word = f"aborted: {run.reason}" if run.aborted else counts
        click.echo(f"  {run.source} ({run.mode}): {state_word}")
        for error in run.errors:
            click.echo(f"    error: {error}", err=True)
    if resumed.failed:
        sys.exit(1)
