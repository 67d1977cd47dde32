"""gunicorn for `bridge serve`: several worker processes, each with a few threads.

The app is built once in the parent (preload) so a broken config fails before any fork; each
worker then drops the database connections it inherited and opens its own.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from bridge.runtime import Runtime


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def serve_gunicorn(runtime: Runtime, host: str, port: int, workers: int, threads: int) -> None:
    from bridge.app import create_app

    app = create_app(runtime)

    def post_fork(_server: Any, _worker: Any) -> None:
        # Connections opened by the parent must not be shared with the child (SQLAlchemy docs,
        # "Using Connection Pools with Multiprocessing"): forget them without closing them.
        runtime.engine.dispose(close=False)

    def child_exit(_server: Any, worker: Any) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)

    options = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "preload_app": True,
        "post_fork": post_fork,
        "child_exit": child_exit,
        "keepalive": 75,  # identity providers reuse connections
        # The longest request line gunicorn allows: long filters get a SCIM 400, not an HTML 414.
        "limit_request_line": 8190,
        "timeout": 120,
        # In-flight SCIM requests take milliseconds; a worker stuck longer (a lock wait) must not
        # hold a stop or a restart for half a minute.
        "graceful_timeout": 10,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "bridge",
    }
    # Everything built so far (config, mappings, SQLAlchemy's metadata and compiled statements)
    # lives as long as the process: kept out of the collector's scans in the workers, which
    # otherwise walk it on every full collection (the Python docs' advice for fork servers).
    gc.collect()
    gc.freeze()
    _Server(app, options).run()
