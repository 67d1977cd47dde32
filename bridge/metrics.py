"""Prometheus metrics. Counters and histograms are updated where things happen; account, seat
and outbox figures are read from the database at scrape time, so every process reports the
same truth whichever one Prometheus happens to scrape.

With several gunicorn workers, set PROMETHEUS_MULTIPROC_DIR (an empty directory) before
start-up and the per-process counters are aggregated (prometheus_client's multiprocess mode).

No label takes a value a client chose: every distinct label value is a series kept for the life
of the process (and a file in the multiprocess directory), so a client inventing methods or paths
could otherwise grow every scrape without limit (issue 13, item 2). Routes are Flask's rule
templates ("unmatched" when none matched), methods one of METHODS or "other", statuses the codes
bridge itself answers with.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.core.plan import effective_seat_limit
from bridge.runtime import Runtime

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "bridge_http_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "bridge_http_request_duration_seconds",
    "HTTP request latency by route and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_READS = Counter(
    "bridge_metrics_store_reads_total",
    "Database reads for the scrape-time gauges (at most one per process every STORE_CACHE_SECONDS)",
)
SYNC_RUNS = Counter("bridge_sync_runs_total", "Sync runs by source, mode and outcome", ["source", "mode", "outcome"])
SYNC_DURATION = Histogram(
    "bridge_sync_duration_seconds",
    "Sync run duration by source",
    ["source", "mode"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
SYNC_CHANGES = Counter("bridge_sync_changes_total", "Account changes applied by syncs", ["source", "change"])
JOB_RUNS = Counter("bridge_job_runs_total", "Scheduled job runs by job and outcome", ["job", "outcome"])

# The methods bridge or a client of it has a use for; anything else a client sends is "other".
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# A scrape storm (several Prometheus replicas, a dashboard refreshing, someone looping on the
# endpoint) reads the database once per process in this window; the figures are seconds old at most.
STORE_CACHE_SECONDS = 5.0


def method_label(method: str) -> str:
    method = method.upper()
    return method if method in METHODS else "other"


def status_label(status: int) -> str:
    # bridge chooses its status codes; the check keeps a future pass-through from widening the set.
    return str(status) if 100 <= status <= 599 else "other"


class _StoreCache:
    """The last read of the database gauges in this process, and when it was taken."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: object = None
        self.taken = 0.0
        self.families: list[GaugeMetricFamily] = []


_store_cache = _StoreCache()


class StoreCollector(Collector):
    """Gauges read from the database at scrape time, at most once every STORE_CACHE_SECONDS per
    process: concurrent scrapes wait for the one read under way instead of each starting one."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cache = _store_cache
        with cache.lock:
            now = time.monotonic()
            if cache.key is not self.runtime or now - cache.taken >= STORE_CACHE_SECONDS:
                # Taken before the read: reads start at least the window apart, whatever they cost.
                cache.key, cache.taken = self.runtime, now
                cache.families = list(self._read())
            families = cache.families
        yield from families

    def _read(self) -> Iterator[GaugeMetricFamily]:
        from bridge.store.accounts import account_counts
        from bridge.store.outbox import oldest_queued, undelivered_counts
        from bridge.store.tenants import stored_seat_limits, tenant_names

        STORE_READS.inc()

        accounts = GaugeMetricFamily("bridge_accounts", "Accounts by tenant and status", labels=["tenant", "status"])
        seats = GaugeMetricFamily("bridge_seats_used", "Paid seats in use by tenant", labels=["tenant"])
        limits = GaugeMetricFamily("bridge_seat_limit", "Seat limit by tenant (absent: no limit)", labels=["tenant"])
        module_seats = GaugeMetricFamily(
            "bridge_module_seats_used",
            "Paid seats in use by tenant and module ([modules.*])",
            labels=["tenant", "module"],
        )
        module_limits = GaugeMetricFamily(
            "bridge_module_seat_limit",
            "Seat limit by tenant and module (absent: no limit)",
            labels=["tenant", "module"],
        )
        outbox = GaugeMetricFamily(
            "bridge_outbox_messages", "Outbox rows by channel and status", labels=["channel", "status"]
        )
        oldest = GaugeMetricFamily(
            "bridge_outbox_oldest_queued_age_seconds",
            "Age of the oldest queued outbox row by channel (absent: nothing queued); a growing value "
            "means mail or webhooks are not going out",
            labels=["channel"],
        )
        try:
            with self.runtime.engine.connect() as conn:
                names = tenant_names(conn)
                stored_limits = stored_seat_limits(conn)
                for tenant_id, status, count in account_counts(conn):
                    accounts.add_metric([names.get(tenant_id, str(tenant_id)), status], count)
                for name in names.values():
                    cfg = self.runtime.config.tenant(name)
                    limit = effective_seat_limit(cfg.seat_limit if cfg else None, stored_limits.get(name))
                    if limit is not None:
                        limits.add_metric([name], limit)
                    used, by_module, mapping = self._seats(conn, name, cfg)
                    seats.add_metric([name], used)
                    for module_id, n in by_module.items():
                        module_seats.add_metric([name, module_id], n)
                        module = mapping.modules[module_id] if mapping is not None else None
                        if module is not None and module.seat_limit is not None:
                            module_limits.add_metric([name, module_id], module.seat_limit)
                for channel, status, count in undelivered_counts(conn):
                    outbox.add_metric([channel, status], count)
                now = datetime.now(UTC)
                for channel, created in oldest_queued(conn):
                    if created.tzinfo is None:  # SQLite hands back naive UTC
                        created = created.replace(tzinfo=UTC)
                    oldest.add_metric([channel], max(0.0, (now - created).total_seconds()))
        except Exception:  # a scrape must not fail because the database is briefly away
            log.exception("metrics: database figures unavailable")
        yield from (accounts, seats, limits, module_seats, module_limits, outbox, oldest)

    @staticmethod
    def _seats(conn: Any, tenant: str, cfg: Any) -> tuple[int, dict[str, int], Any]:
        """(seats, seats per module, the mapping) of a tenant: one read of the seat groups."""
        from bridge.store.accounts import seat_counts
        from bridge.store.tenants import get_tenant

        if cfg is None:
            return 0, {}, None
        try:
            mapping = cfg.mapping()
        except Exception:
            return 0, {}, None
        seats, by_module = seat_counts(
            conn, get_tenant(conn, tenant).id, mapping, suspended_counts_as_seat=cfg.suspended_counts_as_seat
        )
        return seats, by_module, mapping


def render(runtime: Runtime) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        for collector in (HTTP_REQUESTS, HTTP_LATENCY, SYNC_RUNS, SYNC_DURATION, SYNC_CHANGES, JOB_RUNS, STORE_READS):
            registry.register(collector)
        del REGISTRY
    registry.register(StoreCollector(runtime))
    return generate_latest(registry), CONTENT_TYPE_LATEST
