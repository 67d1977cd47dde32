"""The production servers behind `bridge serve`: granian (the default) or gunicorn, each with
several worker processes of a few threads; `--workers 0` serves from one waitress process.

The app is built once in the parent so a broken config fails before any worker starts; a worker
forked from the parent drops the database connections it inherited and opens its own. Why granian
is the default: docs/benchmarks.md ("Why the server is granian").
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from bridge.runtime import Runtime, open_runtime

# CGI request variables (RFC 3875, section 4.1) that a WSGI server derives from the request.
_REQUEST_VARIABLES = frozenset(
    {
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_IDENT",
        "REMOTE_USER",
        "REQUEST_METHOD",
        "SCRIPT_NAME",
    }
)

# In-flight SCIM requests take milliseconds; a worker stuck longer on shutdown is killed.
_KILL_AFTER_SECONDS = 10

# Set in the parent before the workers start; a forked worker finds it here (a spawned one does
# not, and builds its own from the config file).
_preloaded: tuple[Runtime, Any] | None = None


def _freeze_preloaded() -> None:
    # Everything built so far (config, mappings, SQLAlchemy's metadata and compiled statements)
    # lives as long as the process: kept out of the collector's scans in the workers, which
    # otherwise walk it on every full collection (the Python docs' advice for fork servers).
    gc.collect()
    gc.freeze()


def _close_connections_before_fork(runtime: Runtime) -> None:
    # The master forks every worker (and every replacement) from this state: with no SQLite
    # connection open in it, there is no lock bookkeeping a worker could inherit. The background
    # services run in a spawned process of their own (bridge/services.py), so nothing in the
    # master opens one again.
    runtime.engine.dispose()


def _forget_inherited_connections(runtime: Runtime) -> None:
    # Connections opened by the parent must not be shared with the child (SQLAlchemy docs,
    # "Using Connection Pools with Multiprocessing"): forget them without closing them.
    runtime.engine.dispose(close=False)


class PortInUse(Exception):
    """Another process listens on the address `bridge serve` was asked to serve on."""


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse when something already listens on host:port.

    granian binds with SO_REUSEPORT, so a second `bridge serve` (perhaps on another database)
    would bind beside the first and the kernel would share the connections out between them;
    gunicorn retries for five seconds, waitress fails after saying it serves. A bind without
    SO_REUSEPORT fails against any listener, whatever its options. SO_REUSEADDR as the servers
    set it: connections of a server stopped a moment ago (TIME_WAIT) do not count."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return  # the server itself reports an address it cannot use
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"{host}:{port} is in use") from None
            raise


def granian_worker_app(config: str, parent: int, _target: str = "") -> Any:
    """The WSGI app of one granian worker (called in the worker, before it serves)."""
    # granian starts every request's environ from a copy of the process environment, so a
    # variable such as HTTP_PROXY or HTTP_AUTHORIZATION set for the service would read as a
    # header the client never sent (the "httpoxy" class of bug). The workers only answer HTTP;
    # the jobs that need the environment (sync, mail, webhooks) run in the parent.
    for name in [n for n in os.environ if n.startswith("HTTP_") or n in _REQUEST_VARIABLES]:
        del os.environ[name]
    # A granian worker outlives a parent killed with SIGKILL (the OOM killer, `kill -9`) and would
    # go on answering on the shared socket with the old config; gunicorn's workers watch their
    # parent, and so do these.
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if _preloaded is not None:
        runtime, app = _preloaded
        _forget_inherited_connections(runtime)
        return app
    # Spawned (Python 3.14 makes granian spawn): build the app here; the parent has migrated.
    from bridge.app import create_app
    from bridge.logs import setup_logging

    runtime = open_runtime(Path(config), migrate=False, create=False)
    setup_logging(runtime.config.logging["format"], runtime.config.logging["level"])
    return create_app(runtime)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown
    time.sleep(_KILL_AFTER_SECONDS)  # the parent would have killed a worker that does not stop
    os._exit(1)


def serve_granian(
    runtime: Runtime,
    config: Path,
    host: str,
    port: int,
    workers: int,
    threads: int,
    announce: Any = None,
) -> None:
    from functools import partial

    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from bridge.app import create_app

    global _preloaded
    _preloaded = (runtime, create_app(runtime))
    server = Server(
        "bridge",  # granian's name for the target; the loader below ignores it
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(keep_alive=True),  # identity providers reuse connections
        log_level=LogLevels.warning,
        log_access=False,
        workers_kill_timeout=_KILL_AFTER_SECONDS,
        respawn_failed_workers=True,
    )
    if announce is not None:
        server.on_startup(announce)  # called once the listening socket is bound
    _close_connections_before_fork(runtime)
    _freeze_preloaded()
    server.serve(target_loader=partial(granian_worker_app, str(config), os.getpid()))


def serve_gunicorn(runtime: Runtime, host: str, port: int, workers: int, threads: int, announce: Any = None) -> None:
    from gunicorn.app.base import BaseApplication

    from bridge.app import create_app

    app = create_app(runtime)

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    def post_fork(_server: Any, _worker: Any) -> None:
        _forget_inherited_connections(runtime)

    def child_exit(_server: Any, worker: Any) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)

    def when_ready(_server: Any) -> None:  # the master has bound its sockets
        if announce is not None:
            announce()

    options = {
        "bind": f"{host}:{port}",
        "when_ready": when_ready,
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
    _close_connections_before_fork(runtime)
    _freeze_preloaded()
    _Server().run()
