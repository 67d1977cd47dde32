"""The source-agnostic sync engine: fetch a complete snapshot, plan, check, apply.

Safety checks look at the whole plan before anything is written: an incomplete or empty read
and a plan archiving more than the deletion threshold abort the run with nothing written
(the run itself is recorded in `sync_runs`, which is history, not account data).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from bridge.config import Config, SourceConfig
from bridge.core.held import DELETION_THRESHOLD, EMPTY_READ, SOURCE_CHANGED, inputs_digest, plan_from_json
from bridge.core.mapping import unseen_attributes
from bridge.core.model import Snapshot, expand_groups
from bridge.core.plan import Plan, Subject, build_plan, effective_seat_limit
from bridge.engine import held
from bridge.engine.alerts import after_run
from bridge.engine.sources import Source, make_source
from bridge.errors import SourceUnavailable
from bridge.logs import correlation_id as correlation_var
from bridge.provision.apply import ApplyContext, apply_plan, record_product_event
from bridge.store.accounts import load_account_states, usage_outside
from bridge.store.audit import record_tenant_event
from bridge.store.db import discardable_transaction, page_cache, refresh_statistics, transaction
from bridge.store.delta import load_bookmark, save_bookmark
from bridge.store.identities import diff_groups
from bridge.store.plans import plan_accounts
from bridge.store.runs import finish_sync_run, start_sync_run
from bridge.store.tenants import get_tenant

# The logger keeps the name it had before the engine package: operators filter on it.
log = logging.getLogger("bridge.sync")

SYNC_FAILED = "sync.failed"  # the product event of a run that failed or was aborted
# A run that wrote this many accounts (a first sync, a mapping change) refreshes PostgreSQL's
# planner statistics at once instead of leaving the next reads to plans made for empty tables.
STATISTICS_AFTER_ACCOUNTS = 5_000
# Page cache while memberships are written (bridge/store/db.page_cache): 16 MiB took a first
# sync's group step at 100k people from 9.5 s to 6.2 s when it ran alone; now that it runs while
# the plan is built, the cache adds to the plan's peak, and 8 MiB still finishes the members
# before the plan does (first sync at 100k: peak RSS 385 MB with 8 MiB, 398 MB with 16).
_GROUPS_CACHE_MIB = 8
# From this many member rows to write, a full sync writes them while it plans (see `_run`); below
# it, the groups are written after the plan, so the write lock is not held while planning.
_OVERLAP_MIN_MEMBERS = 20_000


# A sync allocates millions of objects that live for the whole run (the snapshot, the plan, each
# batch's rows). With CPython's default thresholds (700, 10, 10) the cyclic collector scans them
# again and again: a fifth of a first sync's CPU seconds and a quarter of a no-change full sync's
# at 20k people (docs/benchmarks.md, "Directory sync, second round"). While a run is on, the
# young generation is collected every 100,000 allocations instead; cycles are still collected.
_RUN_GC_THRESHOLDS = (100_000, 50, 100)
_gc_lock = threading.Lock()
_gc_runs = 0
_gc_saved: tuple[int, int, int] | None = None


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """The run's collector thresholds, process-wide while at least one run is on (runs in
    threads share them); the ones before are back after the last. A process that turned the
    collector off (threshold 0) is left alone."""
    global _gc_runs, _gc_saved
    with _gc_lock:
        if _gc_runs == 0:
            saved = gc.get_threshold()
            _gc_saved = saved if saved[0] else None
            if _gc_saved is not None:
                gc.set_threshold(*(max(a, b) for a, b in zip(saved, _RUN_GC_THRESHOLDS, strict=True)))
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)


def _can_overlap(engine: Engine) -> bool:
    # An in-memory SQLite database has one connection for the whole process: nothing to overlap.
    return not (engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"))


class _InThread:
    """Runs `target(*args)` in a thread; `wait` joins it and raises what it raised."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # handed to the waiting thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="sync-groups", daemon=True)
        self._thread.start()

    def wait(self, *, quiet: bool = False) -> None:
        """Join the thread, even through a Ctrl-C (it still uses the caller's connection), and
        raise its error, or only log it when `quiet`."""
        interrupted: BaseException | None = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except BaseException as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted
        if self._error is not None:
            if not quiet:
                raise self._error
            log.error("writing group members failed", exc_info=self._error)


@dataclass
class SyncResult:
    source: str
    tenant: str
    dry_run: bool
    aborted: bool = False
    # The tenant is paused (bridge.engine.pause): the run read nothing and changed nothing.
    paused: bool = False
    reason: str | None = None
    # What the run applied (a dry run: what it would apply). An aborted run applies nothing: its
    # counts are zero, and what its plan would have done is in `planned`, never mixed with them.
    counts: dict[str, int] = field(default_factory=dict)
    planned: dict[str, int] | None = None
    errors: list[str] = field(default_factory=list)
    # Doubtful data taken in anyway, and rules that match nobody because no one read has their
    # attribute: the run went through, but an administrator should look.
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0
    plan: Plan | None = None
    # A safety check `--force` overrode: who, which check, and what the plan passed (None: none).
    forced: dict[str, Any] | None = None
    run_id: str = ""
    mode: str = "full"  # the mode that ran: a delta request may run full
    # Seconds per step (read, load, plan, apply), logged with the outcome: where a slow run went.
    timings: dict[str, float] = field(default_factory=dict)
    # The plan a safety check refused and this run kept for review (`bridge plans`), or None.
    held: str | None = None
    # The held plan this run applied (`bridge plans approve`), or None.
    approved: str | None = None

    @property
    def seat_refused(self) -> tuple[str, ...]:
        return self.plan.seat_refused if self.plan else ()

    def to_json(self) -> dict[str, Any]:
        keys = ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")
        return {
            "source": self.source,
            "tenant": self.tenant,
            "dryRun": self.dry_run,
            "aborted": self.aborted,
            "paused": self.paused,
            "reason": self.reason,
            "mode": self.mode,
            **{k: int(self.counts.get(k, 0)) for k in keys},
            "seatDelta": 0 if self.aborted or not self.plan else self.plan.seat_delta,
            # The same per module of the mapping's [modules] ({} without modules).
            "seatDeltaByModule": {} if self.aborted or not self.plan else self.plan.seat_delta_by_module,
            # Accounts the seat limit left without their billable roles (named in a dry run).
            "seatRefused": 0 if self.aborted else len(self.seat_refused),
            # The plan's counts whatever happened to it: for an aborted run, what it would have done.
            "planned": dict(self.planned) if self.planned is not None else None,
            "forced": dict(self.forced) if self.forced is not None else None,
            "held": self.held,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "durationSeconds": round(self.duration, 3),
        }


def run_sync(
    config: Config,
    engine: Engine,
    source_name: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    mode: str = "full",
    now: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    fetch: Callable[[SourceConfig, datetime], tuple[Snapshot, Any]] | None = None,
    actor: str | None = None,
    approve: Any = None,
) -> SyncResult:
    """Run one sync of one source. `fetch` replaces the source's own read (tests, benches).

    `approve` is a held plan (a row of `held_plans`) that `actor` approves: the run reads the
    source in full and, when what the plan was computed from is unchanged (its digest), applies
    that plan instead of its own; otherwise it applies nothing and holds its own plan.

    `actor` is who asked for the run (`cli:<user>`); a `force` that overrides a safety check is
    recorded under that name in the run's history and the audit log.

    `mode` is "full" (complete read; people missing from it are leavers) or "delta" (changes
    since the last run). A delta runs full instead when the source cannot read deltas (LDIF),
    has no bookmark yet (its first run), or cannot trust its bookmark (another domain controller,
    a changed scope); the mode that ran is recorded in `sync_runs`.
    """
    if mode not in ("full", "delta"):
        raise ValueError(f"unknown sync mode {mode!r}")
    started = time.monotonic()
    now = now or datetime.now(UTC)
    correlation_id = f"sync-{uuid.uuid4().hex[:16]}"
    token = correlation_var.set(correlation_id)
    try:
        with _fewer_collections():
            run = _SyncRun(
                config,
                engine,
                source_name,
                dry_run,
                force,
                mode,
                now,
                progress,
                fetch,
                correlation_id,
                started,
                actor or f"sync:{source_name}",
                approve,
            )
            run.open()
            return run.run_steps()
    finally:
        correlation_var.reset(token)


@dataclass(frozen=True)
class _Ending:
    """How a run ends before writing its plan: aborted (with the reason) or a dry run.

    Decided by the checks while a group write may still be open, carried out (recorded) after it
    is rolled back."""

    outcome: str
    reason: str | None = None
    hold: str | None = None  # an aborted run keeps its plan for review, held for this reason


class _SyncRun:
    """One sync run, one method per step: open (the run's record), read, load, the checks (empty
    read, deletion threshold), plan, write groups, apply, finish (record). A step that ends the
    run returns how; None means go on."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        source_name: str,
        dry_run: bool,
        force: bool,
        mode: str,
        now: datetime,
        progress: Callable[[str, int, int], None] | None,
        fetch: Callable[[SourceConfig, datetime], tuple[Snapshot, Any]] | None,
        correlation_id: str,
        started: float,
        actor: str,
        approve: Any = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.source_name = source_name
        self.dry_run = dry_run
        self.force = force
        self.mode = mode
        self.now = now
        self.progress = progress
        self.fetch = fetch
        self.correlation_id = correlation_id
        self.started = started
        self.actor = actor
        self.approve = approve
        if approve is not None:
            self.mode = "full"  # a held plan came from a complete read, and so does its check
        self.source_cfg = config.source(source_name)
        self.tenant_cfg = config.tenants[self.source_cfg.tenant]
        self.mapping = self.tenant_cfg.mapping()
        self.result = SyncResult(
            source=source_name, tenant=self.tenant_cfg.name, dry_run=dry_run, run_id=correlation_id
        )
        self.tenant: Any = None
        self.source: Source | None = None
        self.bookmark: Any = None
        self.run_row_id: int | None = None
        self.snapshot: Snapshot | None = None
        # Set once the read is in, before the plan (which adds an error of its own).
        self.partial_read = False
        self.accounts: Any = None
        self.usage: Any = None
        self._subjects: list[Subject] | None = None
        self.applied_count = 0  # accounts written so far, for `progress`
        self.apply_total = 0

    # -- the run's record ------------------------------------------------------------------

    def open(self) -> None:
        """The tenant, the source, the mode that will run, and the `sync_runs` row (not in a dry run)."""
        with transaction(self.engine, write=False) as conn:
            self.tenant = get_tenant(conn, self.tenant_cfg.name)
            stored_bookmark = load_bookmark(conn, self.tenant.id, self.source_name)
        self.source = make_source(self.source_cfg, self.mapping) if self.fetch is None else None
        if self.mode == "delta" and self.source is not None and getattr(self.source, "supports_delta", False):
            from bridge.engine.sources import Bookmark

            self.bookmark = Bookmark.from_state(stored_bookmark)
        if self.bookmark is None:
            self.mode = "full"  # no delta without a bookmark: the first run of a source is full
        if not self.dry_run:
            with transaction(self.engine) as conn:
                self.run_row_id = start_sync_run(
                    conn,
                    tenant_id=self.tenant.id,
                    source=self.source_name,
                    mode=self.mode,
                    correlation_id=self.correlation_id,
                    started_at=self.now,
                )

    def finish(self, outcome: str) -> SyncResult:
        """Record the run's end (its row, a forced check's audit event, metrics, the log)."""
        result, source_name, correlation_id = self.result, self.source_name, self.correlation_id
        result.duration = time.monotonic() - self.started
        result.mode = self.mode
        if result.plan is not None:
            result.planned = {**result.plan.counts(), "seatRefused": len(result.plan.seat_refused)}
        if outcome == "aborted":
            result.counts = {}  # nothing was written
        _observe(source_name, self.mode, outcome, result)
        if self.run_row_id is not None:
            with transaction(self.engine) as conn:
                finish_sync_run(
                    conn,
                    self.run_row_id,
                    mode=self.mode,
                    finished_at=datetime.now(UTC),
                    outcome=outcome,
                    reason=result.reason,
                    counts={**result.counts, "seatRefused": len(result.seat_refused)} if outcome != "aborted" else {},
                    planned=result.planned,
                    forced=result.forced,
                    errors=result.errors[:100],
                    warnings=result.warnings[:100],
                )
                if result.forced is not None:
                    record_tenant_event(
                        conn,
                        self.tenant.id,
                        actor=result.forced["actor"],
                        action="sync_forced",
                        after={"source": source_name, "run": self.run_row_id, **result.forced},
                        reason=_forced_reason(result.forced),
                        correlation_id=correlation_id,
                        now=self.now,
                    )
                if outcome in ("failed", "aborted") and result.held is None:
                    # The product hears that this source's changes did not arrive (a held plan
                    # says so with plan.held instead), in the same transaction as the run's record.
                    record_product_event(
                        conn,
                        self.tenant.id,
                        self.tenant_cfg.name,
                        SYNC_FAILED,
                        {
                            "source": source_name,
                            "run": self.run_row_id,
                            "mode": self.mode,
                            "outcome": outcome,
                            "reason": result.reason,
                        },
                        now=self.now,
                        account_id=None,
                        webhooks=bool(self.config.webhook.get("url")),
                    )
            if result.forced is not None:
                log.warning(
                    "sync %s: %s", source_name, _forced_reason(result.forced), extra={"correlation_id": correlation_id}
                )
            after_run(
                self.engine,
                self.config,
                self.tenant.id,
                self.tenant_cfg.name,
                source_name,
                outcome,
                result.reason,
                self.now,
                held=result.held is not None,
            )
        steps = " ".join(f"{k}={v:.1f}s" for k, v in result.timings.items())
        log.info(
            "sync %s: %s %s in %.1fs (%s)",
            source_name,
            outcome,
            result.counts if outcome != "aborted" else f"nothing written; would have {result.planned or {}}",
            result.duration,
            steps,
            extra={"correlation_id": correlation_id},
        )
        for warning in result.warnings[:100]:
            log.warning("sync %s: %s", source_name, warning, extra={"correlation_id": correlation_id})
        return result

    def abort(self, reason: str) -> SyncResult:
        self.result.aborted = True
        self.result.reason = reason
        return self.finish("aborted")

    def end(self, ending: _Ending) -> SyncResult:
        if ending.outcome == "aborted":
            assert ending.reason is not None
            if ending.hold is not None and not self.dry_run and self.result.plan is not None:
                self.hold(ending.hold, ending.reason)
            return self.abort(ending.reason)
        return self.finish(ending.outcome)

    # -- the steps -------------------------------------------------------------------------

    def run_steps(self) -> SyncResult:
        """read, plan and check, write groups, apply, record: each step may end the run."""
        try:
            if self.tenant.paused_at is not None and not self.dry_run:
                # Nothing is read: resuming runs this source in full (engine.pause), which is what
                # the reads skipped meanwhile would have added up to. A dry run still shows the plan.
                self.result.paused = True
                self.result.reason = f"the tenant is paused since {self.tenant.paused_at:%Y-%m-%d %H:%M} UTC"
                return self.finish("paused")
            ended = self.read()
            if ended is not None:
                return ended
            self.partial_read = bool(self.result.errors)
            if self.dry_run:
                ending = self.plan_and_check()
                assert ending is not None
                return self.end(ending)
            ending = self.write_groups()
            if ending is not None:
                return self.end(ending)
            return self.apply()
        except Exception as exc:
            # An unexpected failure (a database error, a bug): recorded as such, not left "running".
            self.result.reason = f"{type(exc).__name__}: {exc}"[:1000]
            try:
                self.finish("failed")
            except Exception:
                log.exception("sync %s: could not record the failed run", self.source_name)
            raise

    def read(self) -> SyncResult | None:
        """Read the source: a delta (planned and applied here, see `read_delta`) or a complete
        snapshot. Returns the run's result when it ended (aborted, or the delta ran)."""
        result, source = self.result, self.source
        try:
            if self.mode == "delta":
                ended = self.read_delta()
                if ended is not None:
                    return ended
            step = time.monotonic()
            if self.fetch is not None:
                snapshot, report = self.fetch(self.source_cfg, self.now)
            else:
                snapshot, report = source.fetch(self.now)  # type: ignore[union-attr]
        except SourceUnavailable as exc:
            return self.abort(f"source unavailable: {exc}")
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()
        result.errors.extend(getattr(report, "errors", []) or [])
        result.warnings.extend(getattr(report, "warnings", []) or [])
        # Only a complete read can show that nobody has an attribute; a delta reads a few people.
        result.warnings.extend(gap.describe() for gap in unseen_attributes(self.mapping, snapshot.users.values()))
        result.timings["read"] = time.monotonic() - step
        self.snapshot = snapshot
        if not snapshot.complete:
            return self.abort("the source returned an incomplete read")
        return None

    def read_delta(self) -> SyncResult | None:
        """Read, plan and apply a delta. None when the delta cannot run and the run goes full."""
        from bridge.engine.delta import DeltaTooLarge, known_references, plan_delta
        from bridge.engine.sources import DeltaUnavailable, KnownReferences

        result, source, engine, tenant = self.result, self.source, self.engine, self.tenant
        max_people = int(self.source_cfg.get("delta_max_people"))
        try:
            # More changed users than a delta plans: the source says so before reading them.
            snapshot, report = source.fetch_delta(  # type: ignore[union-attr]
                self.now,
                self.bookmark,
                lambda: KnownReferences(*known_references(engine, tenant.id, self.source_name)),
                limit=max_people,
            )
            result.errors.extend(getattr(report, "errors", []) or [])
            result.warnings.extend(getattr(report, "warnings", []) or [])
            delta = plan_delta(
                engine,
                tenant.id,
                self.source_name,
                snapshot,
                self.mapping,
                now=self.now,
                seat_limit=effective_seat_limit(self.tenant_cfg.seat_limit, tenant.seat_limit),
                suspended_counts_as_seat=self.tenant_cfg.suspended_counts_as_seat,
                recreate_renamed=self.tenant_cfg.recreate_renamed,
                max_people=max_people,
            )
        except (DeltaUnavailable, DeltaTooLarge) as exc:
            log.info("sync %s: running full instead of delta: %s", self.source_name, exc)
            result.errors.clear()
            result.warnings.clear()
            self.mode = "full"
            return None
        if source is not None:
            source.close()  # type: ignore[attr-defined]
        return self.apply_delta(delta)

    def load(self) -> None:
        step = time.monotonic()
        with transaction(self.engine, write=False) as conn:
            self.accounts = load_account_states(conn, self.tenant.id, self.source_name)
            self.usage = usage_outside(
                conn,
                self.tenant.id,
                self.mapping,
                exclude_source=self.source_name,
                suspended_counts_as_seat=self.tenant_cfg.suspended_counts_as_seat,
            )
        self.result.timings["load"] = time.monotonic() - step

    def check_empty_read(self) -> _Ending | None:
        assert self.snapshot is not None
        live = sum(1 for a in self.accounts.values() if a.status.value != "archived")
        if not self.snapshot.users and live:
            if not self.force:
                return _Ending(
                    "aborted",
                    f"the source returned no users while {live} accounts exist; use --force if that is right",
                    hold=EMPTY_READ,
                )
            self.result.forced = {"actor": self.actor, "check": "empty_read", "accounts": live}
        return None

    def plan(self) -> Plan:
        snapshot, result = self.snapshot, self.result
        assert snapshot is not None
        # Entries the source returned but that could not become identities (no anchor, no
        # userName) make the read partial: those people are in the directory, so their absence
        # from the snapshot must not archive them. The others are still planned; nobody is
        # archived until it is fixed.
        if self.partial_read:
            result.errors.append(f"{len(result.errors)} entries could not be read: nobody is archived in this run")
        step = time.monotonic()
        plan = build_plan(
            self.source_name,
            self.subjects(),
            self.accounts,
            self.mapping,
            now=self.now,
            seat_limit=effective_seat_limit(self.tenant_cfg.seat_limit, self.tenant.seat_limit),
            usage=self.usage,
            complete_scope=not self.partial_read,
            suspended_counts_as_seat=self.tenant_cfg.suspended_counts_as_seat,
            recreate_renamed=self.tenant_cfg.recreate_renamed,
        )
        result.plan = plan
        result.counts = plan.counts()
        result.timings["plan"] = time.monotonic() - step
        return plan

    def subjects(self) -> list[Subject]:
        """The people of the read, with their effective groups (computed once)."""
        if self._subjects is None:
            assert self.snapshot is not None
            groups = expand_groups(self.snapshot)
            self._subjects = [Subject(user=u, groups=groups.get(u.anchor, ())) for u in self.snapshot.users.values()]
        return self._subjects

    def inputs_digest(self) -> str:
        """What this run's plan is computed from (bridge.core.held.inputs_digest)."""
        from bridge.provision.replan import TenantView, planning_fingerprint

        view = TenantView(
            self.tenant.id,
            self.tenant.name,
            effective_seat_limit(self.tenant_cfg.seat_limit, self.tenant.seat_limit),
            self.tenant_cfg,
        )
        return inputs_digest(self.subjects(), self.accounts, self.usage, planning_fingerprint(view))

    def hold(self, reason: str, detail: str) -> None:
        """Keep the refused plan for review (`bridge plans`), superseding the source's older one."""
        assert self.result.plan is not None
        self.result.held = held.hold(
            self.engine,
            tenant_id=self.tenant.id,
            tenant_name=self.tenant.name,
            source=self.source_name,
            reason=reason,
            detail=detail,
            plan=self.result.plan,
            digest=self.inputs_digest(),
            actor=self.actor,
            correlation_id=self.correlation_id,
            now=self.now,
            days=self.tenant_cfg.held_plan_days,
            webhooks=bool(self.config.webhook.get("url")),
            config=self.config,
        )
        log.warning(
            "sync %s: plan %s held for review (%s): bridge plans show %s",
            self.source_name,
            self.result.held,
            reason,
            self.result.held,
            extra={"correlation_id": self.correlation_id},
        )

    def check_approval(self) -> _Ending | None:
        """An approval: the held plan when what it was computed from is unchanged (claimed, then
        applied as it was reviewed; the checks that held it are what the approval overrides), or
        an ending that holds this run's own plan instead."""
        row = self.approve
        if self.inputs_digest() == row.digest:
            if not held.claim_approval(
                self.engine,
                row,
                actor=self.actor,
                correlation_id=self.correlation_id,
                now=self.now,
                webhooks=bool(self.config.webhook.get("url")),
            ):
                return _Ending("aborted", f"plan {row.id} is no longer held: someone decided it first")
            with transaction(self.engine, write=False) as conn:
                rows, _ = plan_accounts(conn, row.id)
            plan = plan_from_json(row.plan, [r.payload for r in rows])
            self.result.plan = plan
            self.result.counts = plan.counts()
            self.result.approved = row.id
            return None
        self.plan()
        tripped = self.check_empty_read() or self.check_deletion_threshold(self.result.plan)  # type: ignore[arg-type]
        why = tripped.hold if tripped is not None else SOURCE_CHANGED
        return _Ending(
            "aborted",
            f"the source changed since plan {row.id} was held: nothing was applied; "
            "the new plan is held for review instead",
            hold=why,
        )

    def check_deletion_threshold(self, plan: Plan) -> _Ending | None:
        threshold = float(self.source_cfg.get("deletion_threshold"))
        minimum = int(self.source_cfg.get("deletion_threshold_min"))
        archives = plan.archives
        if archives > minimum and archives > threshold * plan.active_before:
            if not self.force:
                return _Ending(
                    "aborted",
                    f"deletion threshold: the run would archive {archives} of {plan.active_before} accounts "
                    f"(more than {threshold:.0%}); nothing was written. Check the source, then approve "
                    "the held plan (bridge plans) or use --force",
                    hold=DELETION_THRESHOLD,
                )
            self.result.forced = {
                "actor": self.actor,
                "check": "deletion_threshold",
                "threshold": threshold,
                "minimum": minimum,
                "archives": archives,
                "accounts": plan.active_before,
            }
        return None

    def plan_and_check(self) -> _Ending | None:
        """Load, plan and check. Returns how the run ends early (aborted, dry run), or None when
        the plan is to be written. Writes nothing itself."""
        self.load()
        if self.approve is not None:
            return self.check_approval()
        ending = self.check_empty_read()
        if ending is not None:
            if ending.hold is not None and not self.dry_run:
                self.plan()  # what the empty read would do is what a person reviews
            return ending
        ending = self.check_deletion_threshold(self.plan())
        if ending is not None:
            return ending
        return _Ending("dry-run") if self.dry_run else None

    def write_groups(self) -> _Ending | None:
        """Plan and check, and write the source's groups; how the run ends early, or None when the
        plan is to be applied. An ended run writes no group."""
        engine, snapshot, result = self.engine, self.snapshot, self.result
        assert snapshot is not None
        step = time.monotonic()
        with transaction(engine, write=False) as conn:
            changes = diff_groups(
                conn,
                self.tenant.id,
                self.source_name,
                snapshot.groups,
                snapshot.users,
                self.now,
                complete_scope=True,
                actor=f"sync:{self.source_name}",
                correlation_id=self.correlation_id,
            )
        diffing = time.monotonic() - step
        # An approval claims its plan in a transaction of its own while it checks: never beside
        # an open group write.
        if changes.member_rows < _OVERLAP_MIN_MEMBERS or not _can_overlap(engine) or self.approve is not None:
            # The usual nightly run: few groups changed. Plan first, without holding the write lock.
            ending = self.plan_and_check()
            if ending is not None:
                return ending
            step = time.monotonic()
            with transaction(engine) as conn, page_cache(conn, _GROUPS_CACHE_MIB):
                changes.write(conn)
            result.timings["groups"] = diffing + time.monotonic() - step
            return None
        # Many member rows (a first sync: 300,000 at 100k people): they are written while the
        # plan is computed, by the database without the GIL, in a thread
        # (GroupChanges.insert_members), in a transaction that commits only once the plan has
        # passed its checks. The write lock is held meanwhile, as the group step held it before.
        step = time.monotonic()
        with discardable_transaction(engine) as (conn, discard), page_cache(conn, _GROUPS_CACHE_MIB):
            changes.write_rows(conn)
            staging = diffing + time.monotonic() - step
            members = _InThread(changes.insert_members, conn)
            try:
                ending = self.plan_and_check()
            except BaseException:
                members.wait(quiet=True)  # the plan's own error is the one to report
                raise
            waited = time.monotonic()
            members.wait(quiet=ending is not None)  # an ended run rolls back anyway
            result.timings["groups"] = staging + time.monotonic() - waited
            if ending is not None:
                discard()  # an ended run writes nothing
            else:
                changes.remove_gone(conn)
        return ending

    def apply(self) -> SyncResult:
        """Apply the plan, save the bookmark after a run without errors, and record the run."""
        plan = self.result.plan
        assert plan is not None
        step = time.monotonic()
        applied = self.write_plan(plan)
        self.result.timings["apply"] = time.monotonic() - step
        self.result.errors.extend(applied.errors)
        if not applied.errors:
            _save_bookmark(self.engine, self.tenant.id, self.source_name, self.source, self.now)
        return self.finish("ok" if not (applied.errors or self.partial_read) else "partial")

    def write_plan(self, plan: Plan) -> Any:
        """Apply a plan (full or delta); a seat or limited role it freed goes to whoever waits
        for it in another source (this source's own people were planned together)."""
        ctx = ApplyContext.for_tenant(
            self.config,
            self.tenant.id,
            self.tenant.name,
            # An approved plan's changes are the approver's decision, and audited as theirs.
            actor=self.actor if self.approve is not None else f"sync:{self.source_name}",
            correlation_id=self.correlation_id,
            now=self.now,
        )
        self.applied_count, self.apply_total = 0, len(plan.accounts)
        applied = apply_plan(self.engine, plan, ctx, progress=self.applied_some)
        if applied.applied >= STATISTICS_AFTER_ACCOUNTS:
            refresh_statistics(self.engine)
        from bridge.provision.replan import TenantView, replan_waiting, room_freed

        view = TenantView(
            self.tenant.id,
            self.tenant.name,
            effective_seat_limit(self.tenant_cfg.seat_limit, self.tenant.seat_limit),
            self.tenant_cfg,
        )
        if room_freed(plan.accounts, view):
            replan_waiting(self.engine, self.tenant_cfg, ctx)
        return applied

    def applied_some(self, n: int) -> None:
        self.applied_count += n
        if self.progress:
            self.progress("apply", self.applied_count, self.apply_total)

    def apply_delta(self, delta: Any) -> SyncResult:
        """Apply a delta plan, then store the changed groups' memberships and the new bookmark.

        Memberships are written after the accounts: if the run stops in between, the next delta
        still sees the difference with the stored lists and re-plans the same people. A delta with
        errors keeps the old bookmark, so its changes are read again.
        """
        plan = self.result.plan = delta.plan
        self.result.counts = plan.counts()
        if self.dry_run:
            return self.finish("dry-run")
        applied = self.write_plan(plan)
        self.result.errors.extend(applied.errors)
        if applied.errors:
            return self.finish("partial")
        with transaction(self.engine) as conn:
            diff_groups(
                conn,
                self.tenant.id,
                self.source_name,
                delta.groups,
                {},
                self.now,
                complete_scope=False,
                actor=f"sync:{self.source_name}",
                correlation_id=self.correlation_id,
            ).write(conn)
        _save_bookmark(self.engine, self.tenant.id, self.source_name, self.source, self.now)
        return self.finish("ok")


def _save_bookmark(engine: Engine, tenant_id: int, source_name: str, source: Any, now: datetime) -> None:
    bookmark = getattr(source, "bookmark", None)
    if bookmark is None:
        return
    with transaction(engine) as conn:
        save_bookmark(conn, tenant_id, source_name, bookmark.as_state(), now)


def _observe(source: str, mode: str, outcome: str, result: SyncResult) -> None:
    if outcome == "dry-run":
        return
    from bridge.metrics import SYNC_CHANGES, SYNC_DURATION, SYNC_RUNS

    SYNC_RUNS.labels(source=source, mode=mode, outcome=outcome).inc()
    SYNC_DURATION.labels(source=source, mode=mode).observe(result.duration)
    for change, count in result.counts.items():
        if change != "unchanged" and count:
            SYNC_CHANGES.labels(source=source, change=change).inc(count)


def _forced_reason(forced: Mapping[str, Any]) -> str:
    if forced["check"] == "deletion_threshold":
        return (
            f"--force by {forced['actor']}: deletion threshold overridden, archiving {forced['archives']} of "
            f"{forced['accounts']} accounts (threshold {forced['threshold']:.0%}, minimum {forced['minimum']})"
        )
    return f"--force by {forced['actor']}: empty read accepted while {forced['accounts']} accounts exist"
