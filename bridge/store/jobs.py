"""The record of scheduled job ticks (`job_runs`), written by `bridge.scheduler`.

Contract:
- A tick is one (job, scheduled_for) pair, `scheduled_for` being the nominal fire time every
  process computes alike. The unique (job, scheduled_for) key is what makes a tick run once:
  `claim_tick` returns None, and writes nothing, when another process already recorded it.
- The caller holds the job's lease (`store.lease`) while it claims and runs a tick. Holding it
  means no run of the job is alive anywhere, so `claim_tick` marks any row of the job still
  "running" as "abandoned" (its holder crashed) in the same transaction as the new row.
- The scheduler fills `outcome` ("running", then ok / failed / aborted) and `detail` (what the
  job returned or why it failed; cut to 4,000 characters here). `tenant_id` is 0: a job runs for
  the whole installation.
- Rows are kept until `purge_job_runs` removes the finished ones older than a cutoff.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bridge.store.db import transaction
from bridge.store.tables import JobRun

job_runs = JobRun.__table__

_DETAIL_MAX = 4000


def claim_tick(engine: Engine, job: str, scheduled_for: datetime, *, holder: str, now: datetime) -> int | None:
    """Record the tick as "running" and return its row id; None if the tick is already recorded."""
    try:
        with transaction(engine) as conn:
            conn.execute(
                update(job_runs)
                .where(job_runs.c.job == job, job_runs.c.outcome == "running")
                .values(outcome="abandoned", finished_at=now, detail="the process running it stopped")
            )
            return conn.execute(
                insert(job_runs).values(
                    tenant_id=0,
                    job=job,
                    scheduled_for=scheduled_for,
                    holder=holder,
                    started_at=now,
                    outcome="running",
                )
            ).inserted_primary_key[0]
    except IntegrityError:
        return None


def finish_job_run(engine: Engine, run_id: int, outcome: str, detail: str, *, now: datetime) -> None:
    with transaction(engine) as conn:
        conn.execute(
            update(job_runs)
            .where(job_runs.c.id == run_id)
            .values(finished_at=now, outcome=outcome, detail=detail[:_DETAIL_MAX])
        )


def latest_job_runs(conn: Connection) -> dict[str, Any]:
    """The last recorded tick of each job, by job name."""
    return {
        row.job: row
        for row in conn.execute(
            select(job_runs).where(
                job_runs.c.id.in_(select(func.max(job_runs.c.id)).group_by(job_runs.c.job).scalar_subquery())
            )
        )
    }


def purge_job_runs(conn: Connection, cutoff: datetime) -> int:
    """Delete the ticks finished before `cutoff`; returns how many."""
    return conn.execute(job_runs.delete().where(job_runs.c.finished_at < cutoff)).rowcount
