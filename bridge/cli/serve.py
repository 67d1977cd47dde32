"""`bridge serve`: the SCIM API, activation pages and health endpoints over HTTP."""

from __future__ import annotations

import errno
import os
import sys

import click

from bridge.cli.base import State, pass_state
from bridge.errors import BridgeError


@click.command()
@click.option("--host", default=None, help="Default: [server] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: [server] port (8080).")
@click.option("--no-scheduler", is_flag=True, help="Serve HTTP only; run jobs elsewhere.")
@click.option(
    "--server",
    "server_name",
    type=click.Choice(["granian", "gunicorn", "waitress"]),
    default="granian",
    show_default=True,
    help="HTTP server. waitress serves from this process (no workers).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Worker processes (granian, gunicorn); 0 is the same as --server waitress.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads per worker. Default: [server] threads (8) with waitress, 4 with granian or gunicorn.",
)
@pass_state
def serve(
    state: State,
    host: str | None,
    port: int | None,
    no_scheduler: bool,
    server_name: str,
    workers: int,
    threads: int | None,
) -> None:
    """Serve the SCIM API, activation pages and health endpoints."""
    from bridge.logs import setup_logging
    from bridge.services import start_background, start_background_process

    if workers == 0:
        server_name = "waitress"
    metrics_dir = None
    if server_name != "waitress" and workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several worker processes: metrics are summed over them through files in this directory
        # (bridge.metrics). Must be set before prometheus_client is first imported.
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="bridge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        runtime = state.checked_runtime()
        from bridge.config import metrics_token

        metrics_token(runtime.config)  # a variable that is not set stops the start, not a scrape
    except BridgeError:
        if metrics_dir is not None:
            os.rmdir(metrics_dir)
        raise
    setup_logging(runtime.config.logging["format"], runtime.config.logging["level"])
    host = host or runtime.config.server["host"]
    port = port if port is not None else runtime.config.server["port"]
    described = server_name
    if server_name != "waitress":
        described += f", {workers} workers x {threads or 4} threads"

    def announce() -> None:
        # Only once the socket is bound: a start that fails to bind never claimed to serve.
        click.echo(
            f"bridge serving on http://{host}:{port} with {described} "
            f"(SCIM base {runtime.config.server['public_url']}/scim/v2)",
            err=True,
        )

    from bridge.wsgi import PortInUse, check_port_free

    try:
        check_port_free(host, port)
    except PortInUse as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if server_name != "waitress":
        # Background services (outbox worker, scheduler) run once, in a spawned process of their
        # own; the workers only answer HTTP, and the master that forks them holds no database
        # connection (bridge/services.py). See docs/benchmarks.md for why granian is the default.
        from bridge.wsgi import serve_granian, serve_gunicorn

        stop_background = start_background_process(state.path, scheduler=not no_scheduler)
        try:
            if server_name == "granian":
                serve_granian(runtime, state.path, host, port, workers, threads or 4, announce)
            else:
                serve_gunicorn(runtime, host, port, workers, threads or 4, announce)
        finally:
            stop_background()
            if metrics_dir is not None:
                import shutil

                shutil.rmtree(metrics_dir, ignore_errors=True)
        return

    from waitress import create_server

    from bridge.app import create_app

    app = create_app(runtime)
    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=threads or int(runtime.config.server["threads"]),
            ident="bridge",
        )
    except OSError as exc:  # lost a race for the port since the check
        click.echo(f"{host}:{port} is in use" if exc.errno == errno.EADDRINUSE else f"cannot serve: {exc}", err=True)
        sys.exit(1)
    announce()
    stop_background = start_background(runtime, scheduler=not no_scheduler)
    try:
        server.run()
    except KeyboardInterrupt:  # SIGTERM (bridge.notify.worker) or Ctrl-C: a clean stop
        pass
    finally:
        server.close()
        stop_background()
