"""`bridge replan`: re-plan every account of a tenant from what is stored about it."""

from __future__ import annotations

import json
import sys

import click

from bridge.cli.base import State, cli_actor, pass_state
from bridge.cli.sync import print_plan


@click.command()
@click.option("--tenant", required=True, help="The tenant whose accounts are re-planned.")
@click.option("--dry-run", is_flag=True, help="Plan and print what would change, write nothing.")
@click.option("--json", "as_json", is_flag=True, help='The sync JSON shape, with source "replan".')
@pass_state
def replan(state: State, tenant: str, dry_run: bool, as_json: bool) -> None:
    """Re-plan every account of a tenant (SCIM and directory alike) from what is stored about it."""
    from bridge.engine.replan import run_replan

    runtime = state.checked_runtime()
    result = run_replan(runtime.config, runtime.engine, tenant, dry_run=dry_run, actor=cli_actor())
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        if dry_run:
            print_plan(result)
            if result.seat_refused:
                click.echo(f"left out by the seat limit: {', '.join(result.seat_refused)}")
        data = result.to_json()
        counts = ", ".join(
            f"{k} {data.get(k, 0)}"
            for k in ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")
        )
        seats = f"seat delta {data['seatDelta']:+d}; "
        if data["seatRefused"]:
            seats += f"seat limit refused {data['seatRefused']}; "
        verb = "would change" if dry_run else "changed"
        click.echo(f"replan ({tenant}): {verb}: {counts}; {seats}{data['durationSeconds']:.2f}s")
        for error in result.errors:
            click.echo(f"  error: {error}", err=True)
    if result.errors:
        sys.exit(1)
