"""Scheduled jobs from `schedules/*.toml`, run by APScheduler 3 inside `bridge serve` or
`bridge scheduler`.

Several processes (gunicorn workers, machines) may run the same schedule against one database.
Each tick is identified by its *nominal* fire time, which every process computes alike, and
runs once: the runner takes the job's lease (one run at a time, even a long one) and records the
tick in `job_runs`, whose unique (job, scheduled_for) refuses a second run of the same tick.
A process that loses either race logs that it skipped the tick.

APScheduler's own jitter would give each process a different fire time, so jitter is applied
here, after the tick is claimed, as a random delay.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge.errors import BridgeError, ConfigError
from bridge.runtime import Runtime
from bridge.store.db import transaction
from bridge.store.jobs import claim_tick, finish_job_run, latest_job_runs, purge_job_runs
from bridge.store.lease import HOLDER, try_lease

log = logging.getLogger(__name__)

TARGETS = (
    "sync_delta",
    "sync_full",
    "expire_external",
    "activation_reminders",
    "outbox_drain",
    "purge",
    "replan",
    "alerts",
)
_JOB_KEYS = {"target", "source", "cron", "every", "timezone", "jitter", "misfire_grace", "enabled", "lease_seconds"}
_EVERY = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Interval ticks are counted from this instant, so every process puts them at the same times.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class JobSpec:
    name: str
    target: str
    origin: str
    source: str | None = None
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str = "UTC"
    jitter: float = 0.0
    misfire_grace: int = 300
    enabled: bool = True
    lease_seconds: float = 120.0

    def trigger(self) -> BaseTrigger:
        if self.cron:
            return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))
        assert self.every_seconds
        return IntervalTrigger(seconds=self.every_seconds, start_date=_EPOCH, timezone=UTC)

    def describe(self) -> str:
        when = f"cron {self.cron} {self.timezone}" if self.cron else f"every {self.every_seconds}s"
        return f"{self.target}{' ' + self.source if self.source else ''} ({when})"


def _parse_job(name: str, spec: Any, origin: str, default_tz: str) -> JobSpec:
    where = f"jobs.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(origin, where, "must be a table")
    for key in spec:
        if key not in _JOB_KEYS:
            raise ConfigError(origin, f"{where}.{key}", f"unknown key (known: {', '.join(sorted(_JOB_KEYS))})")
    target = spec.get("target")
    if target not in TARGETS:
        raise ConfigError(origin, f"{where}.target", f"must be one of {', '.join(TARGETS)}")
    if ("cron" in spec) == ("every" in spec):
        raise ConfigError(origin, where, "needs exactly one of cron or every")
    tz = spec.get("timezone", default_tz)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(origin, f"{where}.timezone", f"unknown time zone {tz!r}") from None
    every_seconds = None
    if "every" in spec:
        match = _EVERY.match(str(spec["every"]))
        if not match or int(match.group(1)) == 0:
            raise ConfigError(origin, f"{where}.every", 'must look like "30s", "15m", "1h" or "1d"')
        every_seconds = int(match.group(1)) * _UNITS[match.group(2)]
    cron = spec.get("cron")
    if cron is not None:
        try:
            CronTrigger.from_crontab(cron, timezone=ZoneInfo(tz))
        except ValueError as exc:
            raise ConfigError(origin, f"{where}.cron", f"invalid cron expression: {exc}") from None
    for key in ("jitter", "misfire_grace", "lease_seconds"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ConfigError(origin, f"{where}.{key}", "must be a number of seconds")
    source = spec.get("source")
    if source is not None and target not in ("sync_delta", "sync_full"):
        raise ConfigError(origin, f"{where}.source", "only sync jobs take a source")
    return JobSpec(
        name=name,
        target=target,
        origin=origin,
        source=source,
        cron=cron,
        every_seconds=every_seconds,
        timezone=tz,
        jitter=float(spec.get("jitter", 0)),
        misfire_grace=int(spec.get("misfire_grace", 300)),
        enabled=bool(spec.get("enabled", True)),
        lease_seconds=float(spec.get("lease_seconds", 120)),
    )


def load_jobs(runtime: Runtime) -> list[JobSpec]:
    """Every job of every `*.toml` in the schedules directory; names must be unique."""
    directory: Path = runtime.config.schedules_dir
    default_tz = runtime.config.schedules_timezone or "UTC"
    jobs: dict[str, JobSpec] = {}
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.toml")):
        origin = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(origin, None, f"cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(origin, None, f"invalid TOML: {exc}") from None
        for key in data:
            if key != "jobs":
                raise ConfigError(origin, key, "unknown key (jobs are [jobs.NAME] tables)")
        for name, spec in (data.get("jobs") or {}).items():
            if name in jobs:
                raise ConfigError(origin, f"jobs.{name}", f"job name already used in {jobs[name].origin}")
            job = _parse_job(name, spec, origin, default_tz)
            if job.source is not None and job.source not in runtime.config.sources:
                raise ConfigError(origin, f"jobs.{name}.source", f'no source named "{job.source}" in the config')
            jobs[name] = job
    return list(jobs.values())


# ---- targets -------------------------------------------------------------------------------


def _sync(runtime: Runtime, job: JobSpec, mode: str) -> str:
    from bridge.engine.sync import run_sync

    names = [job.source] if job.source else list(runtime.config.sources)
    outcomes = []
    for name in names:
        result = run_sync(runtime.config, runtime.engine, name, mode=mode)
        outcomes.append(f"{name}: {'aborted: ' + (result.reason or '') if result.aborted else result.counts}")
        if result.aborted:
            raise JobAborted("; ".join(outcomes))
    return "; ".join(outcomes) or "no sources"


def _expire(runtime: Runtime, job: JobSpec) -> str:
    from bridge.provision.expiry import archive_long_suspended, expire_external_accounts

    # One job for the archives no source asks for: expired externals and long-suspended leavers.
    now = datetime.now(UTC)
    expired = expire_external_accounts(runtime, now)
    from bridge.engine.plans import expire_held_plans

    # Held plans nobody decided (tenant key held_plan_days) expire here too: nothing of them applies.
    plans = expire_held_plans(runtime.engine, now)
    suspended = archive_long_suspended(runtime, now)
    return f"{expired} expired, {suspended} long suspended: archived; {plans} held plans expired"


def _reminders(runtime: Runtime, job: JobSpec) -> str:
    from bridge.notify.activation import send_activation_reminders

    return str(send_activation_reminders(runtime, datetime.now(UTC)))


def _drain(runtime: Runtime, job: JobSpec) -> str:
    from bridge.notify.worker import drain_outbox

    return str(drain_outbox(runtime, datetime.now(UTC)))


def _purge(runtime: Runtime, job: JobSpec) -> str:
    from bridge.store.events import purge_events
    from bridge.store.runs import purge_sync_runs

    cutoff = datetime.now(UTC) - timedelta(days=90)
    retention = int(runtime.config.api["event_retention_days"])
    with transaction(runtime.engine) as conn:
        runs = purge_sync_runs(conn, cutoff)
        jobs = purge_job_runs(conn, cutoff)
    with transaction(runtime.engine) as conn:
        events = purge_events(conn, datetime.now(UTC) - timedelta(days=retention))
    from bridge.notify.activation import purge_activation_tokens
    from bridge.notify.outbox import purge_outbox

    tokens = purge_activation_tokens(runtime, datetime.now(UTC))
    messages = purge_outbox(runtime.engine, datetime.now(UTC))
    requests = purge_request_log(runtime, datetime.now(UTC))
    return (
        f"purged {runs} sync runs, {jobs} job runs older than 90 days; tokens: {tokens}; "
        f"outbox rows: {messages} (sent over 30 days ago, dead or failed over 90); "
        f"account events: {events} (over {retention} days old); "
        f"SCIM requests: {requests} (older than each tenant's request_log_days)"
    )


def purge_request_log(runtime: Runtime, now: datetime) -> int:
    """Delete each tenant's SCIM requests older than its `request_log_days` (default 14, also
    for a tenant that exists only in the database); one short transaction per tenant."""
    from bridge.store.requestlog import purge_requests
    from bridge.store.tenants import list_tenants

    with transaction(runtime.engine, write=False) as conn:
        tenants = list_tenants(conn)
    purged = 0
    for tenant in tenants:
        days = runtime.config.tenant_settings(tenant.name).request_log_days
        with transaction(runtime.engine) as conn:
            purged += purge_requests(conn, tenant.id, now - timedelta(days=days))
    return purged


def _replan(runtime: Runtime, job: JobSpec) -> str:
    from bridge.engine.pause import finish_catch_ups
    from bridge.engine.replan import replan_changed_tenants

    caught_up = finish_catch_ups(runtime.config, runtime.engine, actor="scheduler:replan")
    done = [f"{r.tenant} (SCIM catch-up after resume): {r.counts}" for r in caught_up] + [
        f"{r.tenant} ({r.mode}): {r.counts}"
        for r in replan_changed_tenants(runtime.config, runtime.engine, actor="scheduler:replan")
        if r.mode == "full" or any(a.changes for a in (r.plan.accounts if r.plan else ()))
    ]
    return "; ".join(done) or "no mapping changed, nobody waiting got room"


def _alerts(runtime: Runtime, job: JobSpec) -> str:
    from bridge.engine.alerts import check_mail

    return f"{check_mail(runtime, datetime.now(UTC))} incidents opened"


# At the scheduler's start, a changed mapping is re-planned without waiting for the first tick
# (under the job's own name, so never beside a scheduled run of it).
START_REPLAN = JobSpec(name="replan", target="replan", origin="<start>", misfire_grace=3600, lease_seconds=600)


_RUNNERS: dict[str, Callable[[Runtime, JobSpec], str]] = {
    "sync_delta": lambda r, j: _sync(r, j, "delta"),
    "sync_full": lambda r, j: _sync(r, j, "full"),
    "expire_external": _expire,
    "activation_reminders": _reminders,
    "outbox_drain": _drain,
    "purge": _purge,
    "replan": _replan,
    "alerts": _alerts,
}


class JobAborted(BridgeError):
    pass


# ---- running one tick ----------------------------------------------------------------------


def run_tick(runtime: Runtime, job: JobSpec, scheduled_for: datetime, *, holder: str = HOLDER) -> str:
    """Run `job` for the tick `scheduled_for` unless another process runs or ran it.

    Returns the outcome: ok / failed / aborted, or skipped-lease / skipped-done.
    """
    lease = try_lease(runtime.engine, f"job:{job.name}", ttl=job.lease_seconds, holder=holder)
    if lease is None:
        log.info("job %s: tick %s skipped: another process holds the lease", job.name, scheduled_for.isoformat())
        return "skipped-lease"
    with lease:
        # Holding the lease means no run of this job is alive anywhere: a row still "running"
        # belongs to a holder that crashed, and claim_tick marks it abandoned.
        run_id = claim_tick(runtime.engine, job.name, scheduled_for, holder=holder, now=datetime.now(UTC))
        if run_id is None:
            log.info("job %s: tick %s skipped: already run by another process", job.name, scheduled_for.isoformat())
            return "skipped-done"
        if job.jitter:
            time.sleep(random.uniform(0, job.jitter))
        outcome, detail = "ok", ""
        try:
            detail = _RUNNERS[job.target](runtime, job)
        except JobAborted as exc:
            outcome, detail = "aborted", str(exc)
        except Exception as exc:  # the job's failure is recorded; the scheduler keeps going
            log.exception("job %s failed", job.name)
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        finish_job_run(runtime.engine, run_id, outcome, detail, now=datetime.now(UTC))
        _observe(job, outcome)
        log.info("job %s: tick %s %s: %s", job.name, scheduled_for.isoformat(), outcome, detail)
        return outcome


def _observe(job: JobSpec, outcome: str) -> None:
    try:
        from bridge.metrics import JOB_RUNS
    except ImportError:
        return
    JOB_RUNS.labels(job=job.name, outcome=outcome).inc()


# ---- APScheduler wiring --------------------------------------------------------------------

_tick = threading.local()


class _TickExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """Hands each nominal fire time to the job; APScheduler 3 calls jobs without it."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def run_each(job: Any, alias: str, times: list[datetime], logger_name: str) -> list[Any]:
            events: list[Any] = []
            for run_time in times:
                _tick.scheduled_for = run_time
                events.extend(run_job(job, alias, [run_time], logger_name))
            return events

        def callback(future: Any) -> None:
            exc = future.exception()
            if exc:
                self._run_job_error(job.id, exc, getattr(exc, "__traceback__", None))
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(run_each, job, job._jobstore_alias, run_times, self._logger.name).add_done_callback(callback)


def _job_entry(runtime: Runtime, spec: JobSpec) -> Callable[[], None]:
    def entry() -> None:
        scheduled = getattr(_tick, "scheduled_for", None) or datetime.now(UTC)
        run_tick(runtime, spec, scheduled.astimezone(UTC))

    return entry


def build_scheduler(runtime: Runtime, jobs: list[JobSpec] | None = None) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(executors={"default": _TickExecutor(max_workers=4)}, timezone=UTC)
    for spec in jobs if jobs is not None else load_jobs(runtime):
        if not spec.enabled:
            continue
        scheduler.add_job(
            _job_entry(runtime, spec),
            spec.trigger(),
            id=spec.name,
            name=spec.name,
            misfire_grace_time=spec.misfire_grace,
            # Not coalesced: every tick missed within misfire_grace still runs, each under its own
            # nominal time, so "each tick once" holds when a process falls a second behind.
            coalesce=False,
            max_instances=1,
        )
    scheduler.add_job(
        _job_entry(runtime, START_REPLAN),
        "date",  # once, now
        id="replan-at-start",
        name="replan-at-start",
        misfire_grace_time=START_REPLAN.misfire_grace,
    )
    return scheduler


def start_scheduler_service(runtime: Runtime, enabled: bool) -> Callable[[], None] | None:
    """The scheduler as a background service of `bridge serve` (bridge/services.py)."""
    if not enabled:
        return None
    from bridge.store.db import make_engine

    engine = make_engine(runtime.config.database_url, origin=runtime.config.origin, create=False)
    scheduler = build_scheduler(Runtime(config=runtime.config, engine=engine))
    scheduler.start()
    log.info("scheduler started with %d jobs", len(scheduler.get_jobs()))

    def stop() -> None:
        scheduler.shutdown(wait=False)
        engine.dispose()

    return stop


def job_status(runtime: Runtime, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    jobs = load_jobs(runtime)
    out = []
    with transaction(runtime.engine, write=False) as conn:
        latest = latest_job_runs(conn)
    for spec in jobs:
        last = latest.get(spec.name)
        next_run = spec.trigger().get_next_fire_time(None, now) if spec.enabled else None
        out.append(
            {
                "name": spec.name,
                "target": spec.target,
                "source": spec.source,
                "schedule": spec.describe(),
                "enabled": spec.enabled,
                "lastRun": last.started_at.isoformat() if last else None,
                "lastOutcome": last.outcome if last else None,
                "lastDetail": last.detail if last else None,
                "nextRun": next_run.astimezone(UTC).isoformat() if next_run else None,
            }
        )
    return out
