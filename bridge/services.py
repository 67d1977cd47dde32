"""Background services of `bridge serve` (outbox worker, scheduler), started beside the web server."""

from __future__ import annotations

from collections.abc import Callable

from bridge.runtime import Runtime

Stop = Callable[[], None]

# Each entry is "module:function"; the function takes (runtime, scheduler: bool) and returns a
# callable that stops what it started (or None when it started nothing).
SERVICES: list[str] = ["bridge.scheduler:start_scheduler_service", "bridge.notify.worker:start_service"]


def start_background(runtime: Runtime, *, scheduler: bool) -> Stop:
    import importlib

    stops: list[Stop] = []
    for entry in SERVICES:
        module_name, _, function = entry.partition(":")
        stop = getattr(importlib.import_module(module_name), function)(runtime, scheduler)
        if stop is not None:
            stops.append(stop)

    def stop_all() -> None:
        for stop in reversed(stops):
            stop()

    return stop_all
