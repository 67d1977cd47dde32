"""`bridge replan`: re-plan every account of a tenant from what is stored about it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bridge.cli.base import State, cli_actor, pass_state
from bridge.cli.sync import print_plan


@click.command()
@click.option("--tenant", required=True, help="The tenant whose accounts are re-planned.")
@click.option("--dry-run", is_flag=True, help="Plan and print what would change, write nothing.")
@click.option("--json", "as_json", is_flag=True, help='The sync JSON shape, with source "replan".')
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --dry-run: preview this edited mapping file instead of the tenant's (nothing is applied).",
)
@pass_state
def replan(state: State, tenant: str, dry_run: bool, as_json: bool, mapping_file: Path | None) -> None:
    """Re-plan every account of a tenant (SCIM and directory alike) from what is stored about it."""
    from bridge.engine.replan import run_replan

    if mapping_file is not None:
        if not dry_run:
            raise click.UsageError("--mapping previews an edited mapping: add --dry-run (nothing is applied)")
        _preview(state, tenant, mapping_file, as_json)
        return
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


def _preview(state: State, tenant: str, mapping_file: Path, as_json: bool) -> None:
    from bridge.core.mapping import load_mapping
    from bridge.engine.preview import preview_parsed

    runtime = state.checked_runtime()
    preview = preview_parsed(runtime, tenant, load_mapping(mapping_file))
    if as_json:
        click.echo(json.dumps(preview.to_json(), ensure_ascii=False))
        return
    for move in preview.gains:
        click.echo(f"  + {move.user_name}: {move.role} ({move.rule})")
    for move in preview.losses:
        click.echo(f"  - {move.user_name}: {move.role}")
    for user, before, after in preview.status_changes:
        click.echo(f"  {user}: {before} -> {after}")
    for refused in preview.refusals:
        click.echo(f"  refused {refused.user_name}: {refused.role} ({refused.reason})")
    for module_id, seats in preview.modules.items():
        of = f" of {seats['limit']}" if seats["limit"] is not None else ""
        click.echo(f"  module {module_id}: seats {seats['before']} -> {seats['after']}{of}")
    limit = f" of {preview.seat_limit}" if preview.seat_limit is not None else ""
    click.echo(
        f"preview ({tenant}, {mapping_file}): {len(preview.gains)} role grants, {len(preview.losses)} revokes "
        f"over {preview.considered} accounts; seats {preview.seats_before} -> {preview.seats_after}{limit} "
        f"(delta {preview.seat_delta:+d}); {len(preview.refusals)} refused; nothing applied"
    )
