"""`bridge sync`: run a directory sync, print its plan (shared with `replan`) or its history."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table
from bridge.runtime import Runtime


def _progress_printer(enabled: bool) -> Callable[[str, int, int], None] | None:
    if not enabled:
        return None

    def show(phase: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        click.echo(f"\r{phase} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", nl=done >= total, err=True)

    return show


def print_plan(result: Any) -> None:
    plan = result.plan
    if plan is None:
        return
    rows = []
    for account in sorted(plan.accounts, key=lambda a: a.user_name.casefold()):
        if not account.changes:
            continue
        kinds = ", ".join(c.kind for c in account.changes)
        rows.append(
            [
                account.user_name,
                (account.before.value if account.before else "-") + " -> " + account.after.value,
                kinds,
                ", ".join(sorted(account.roles_after)),
                ", ".join(
                    [f"{r}: {why}" for r, why in sorted(account.denied.items())]
                    + [f"activation mail: {p}" for p in [account.activation_problem()] if p]
                ),
            ]
        )
    if rows:
        table(["USER", "STATUS", "CHANGES", "ROLES", "LEFT OUT"], rows)
        click.echo("")


@click.command()
@click.option("--source", "source_name", default=None, help="One source (default: every configured source).")
@click.option(
    "--full",
    is_flag=True,
    help="Full reconciliation. Without it an LDAP source reads only what changed since its last run "
    "(delta; leavers wait for the next full run); its first run, and LDIF sources, are always full.",
)
@click.option("--dry-run", is_flag=True, help="Plan and print, write nothing.")
@click.option("--force", is_flag=True, help="Override the deletion threshold and the empty-read check.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source, one per line.")
@click.option("--history", is_flag=True, help="Show recent runs instead of running.")
@pass_state
def sync(
    state: State, source_name: str | None, full: bool, dry_run: bool, force: bool, as_json: bool, history: bool
) -> None:
    """Run a directory sync now."""
    from bridge.engine.sync import run_sync

    if history:
        _sync_history(state.runtime, source_name, as_json)
        return
    # A dry run is the first thing a new deployment runs: it may create the (empty) database,
    # and writes no account, audit event or outbox row.
    runtime = state.checked_runtime(create=True)
    names = [source_name] if source_name else list(runtime.config.sources)
    if not names:
        raise click.UsageError(f"{runtime.config.origin}: no [[sources]] configured")
    show_progress = sys.stderr.isatty() and not as_json
    failed = False
    for name in names:
        result = run_sync(
            runtime.config,
            runtime.engine,
            name,
            dry_run=dry_run,
            force=force,
            mode="full" if full else "delta",
            progress=_progress_printer(show_progress),
            actor=cli_actor(),
        )
        failed = failed or result.aborted
        if as_json:
            click.echo(json.dumps(result.to_json(), ensure_ascii=False))
            continue
        if result.paused:
            click.echo(f"{name} ({result.tenant}): not run: {result.reason}; `bridge tenants resume` runs it")
            continue
        if dry_run:
            print_plan(result)
            if result.seat_refused:
                click.echo(f"left out by the seat limit: {', '.join(result.seat_refused)}")
        data = result.to_json()
        if result.aborted:
            # Nothing was written: what the plan held is what it would have done, never "changed".
            planned = data["planned"] or {}
            verb, shown, seats = "nothing written; would have changed", planned, ""
        else:
            verb, shown = ("would change" if dry_run else "changed"), data
            seats = f"seat delta {data['seatDelta']:+d}; "
            if data["seatRefused"]:
                seats += f"seat limit refused {data['seatRefused']}; "
        counts = ", ".join(
            f"{k} {shown.get(k, 0)}"
            for k in ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")
        )
        click.echo(f"{name} ({result.tenant}, {result.mode}): {verb}: {counts}; {seats}{data['durationSeconds']:.2f}s")
        for error in result.errors:
            click.echo(f"  error: {error}", err=True)
        for warning in result.warnings:
            click.echo(f"  warning: {warning}", err=True)
        if result.aborted:
            click.echo(f"{name}: aborted: {result.reason}", err=True)
        if result.held:
            click.echo(f"{name}: plan {result.held} is held for review: bridge plans show {result.held}")
    if failed:
        sys.exit(1)


def _sync_history(runtime: Runtime, source_name: str | None, as_json: bool) -> None:
    from bridge.store.db import transaction
    from bridge.store.runs import recent_sync_runs

    with transaction(runtime.engine, write=False) as conn:
        rows = recent_sync_runs(conn, source=source_name)
    data = [
        {
            "id": r.id,
            "source": r.source,
            "tenant": r.tenant,
            "mode": r.mode,
            "outcome": r.outcome,
            "started": r.started_at.isoformat(),
            "finished": r.finished_at.isoformat() if r.finished_at else None,
            "reason": r.reason,
            "counts": r.counts or {},
            "planned": r.planned,
            "forced": r.forced,
            "errors": len(r.errors or []),
            "warnings": list(r.warnings or []),
            "correlationId": r.correlation_id,
        }
        for r in rows
    ]
    if as_json:
        print_json(data)
        return
    table(
        ["ID", "SOURCE", "MODE", "STARTED", "OUTCOME", "CREATED", "ARCHIVED", "ERRORS", "WARNINGS", "REASON"],
        [
            [
                d["id"],
                d["source"],
                d["mode"],
                d["started"],
                d["outcome"],
                _applied(d, "created"),
                _applied(d, "archived"),
                d["errors"],
                len(d["warnings"]),
                d["reason"] or (f"forced by {d['forced']['actor']} ({d['forced']['check']})" if d["forced"] else ""),
            ]
            for d in data
        ],
    )


def _applied(run: dict[str, Any], key: str) -> str:
    """A history count: what the run applied; an aborted run applied nothing (`0, would 7`)."""
    applied = int(run["counts"].get(key, 0))
    if run["outcome"] == "aborted" and (run["planned"] or {}).get(key):
        return f"{applied} (would {run['planned'][key]})"
    return str(applied)
