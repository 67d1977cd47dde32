"""`bridge jobs` and `bridge scheduler`: the scheduled jobs of schedules/*.toml."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime

import click

from bridge.cli.base import State, pass_state, table
from bridge.errors import NotFound


@click.group()
def jobs() -> None:
    """Scheduled jobs: last run, outcome, next run; run one now."""


@jobs.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def jobs_list(state: State, as_json: bool) -> None:
    from bridge.scheduler import job_status

    data = job_status(state.runtime)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table(
        ["JOB", "SCHEDULE", "LAST RUN", "OUTCOME", "NEXT RUN"],
        [
            [d["name"], d["schedule"], d["lastRun"] or "never", d["lastOutcome"] or "", d["nextRun"] or "disabled"]
            for d in data
        ],
    )


@jobs.command("run")
@click.argument("name")
@pass_state
def jobs_run(state: State, name: str) -> None:
    """Run one job now (it still takes the job's lease: never beside a scheduled run)."""
    from bridge.scheduler import load_jobs, run_tick

    specs = {j.name: j for j in load_jobs(state.runtime)}
    if name not in specs:
        raise NotFound(f'no job named "{name}" (jobs: {", ".join(specs) or "none"})')
    outcome = run_tick(state.runtime, specs[name], datetime.now(UTC))
    click.echo(f"{name}: {outcome}")
    if outcome != "ok":
        sys.exit(1)


@click.command()
@pass_state
def scheduler(state: State) -> None:
    """Run only the scheduled jobs (no HTTP), until SIGTERM or Ctrl-C."""
    from bridge.logs import setup_logging
    from bridge.scheduler import build_scheduler

    runtime = state.checked_runtime()
    setup_logging(runtime.config.logging["format"], runtime.config.logging["level"])
    sched = build_scheduler(runtime)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sched.start()
    click.echo(f"scheduler running {len(sched.get_jobs())} jobs", err=True)
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sched.shutdown(wait=True)
