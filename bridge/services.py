"""Background services of `bridge serve` (outbox worker, scheduler), started beside the web server.

With waitress (one process, no fork) they are threads of the serving process (`start_background`).
With granian or gunicorn they run in a process of their own (`start_background_process`), spawned
from a fresh interpreter: the server's master process forks its workers (at start-up, and again
whenever a worker is replaced), and a child forked while another thread of the parent is inside an
SQLite transaction inherits that thread's lock bookkeeping and can never write (issue 12, see
docs/operations/deploy.md, "Processes of bridge serve"). The master therefore holds no database
connection and runs no thread that uses one when it forks.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.runtime import Runtime

Stop = Callable[[], None]

# A background process that does not stop within this after SIGTERM is killed (one mail or webhook
# delivery in flight is bounded well below it).
_STOP_TIMEOUT_SECONDS = 60
# A background process that died is started again after this pause (no tight loop when it cannot
# start at all, say a database that went away).
_RESTART_PAUSE_SECONDS = 2.0


def start_background(runtime: Runtime, *, scheduler: bool) -> Stop:
    # Each starts what it runs and returns how to stop it (None when it started nothing).
    from bridge.notify.worker import start_service as start_outbox_worker
    from bridge.scheduler import start_scheduler_service

    stops = [
        stop for stop in (start_scheduler_service(runtime, scheduler), start_outbox_worker(runtime, scheduler)) if stop
    ]

    def stop_all() -> None:
        for stop in reversed(stops):
            stop()

    return stop_all


def start_background_process(config: Path, *, scheduler: bool) -> Stop:
    """The background services in a spawned process (nothing inherited); returns how to stop it.

    A process that dies (the OOM killer, `kill -9`) is started again after a pause, logged: the
    server would otherwise go on answering while no mail, webhook or job runs. The watching thread
    of the master only waits on the process; it never touches the database."""
    if not scheduler:
        return lambda: None  # --no-scheduler: jobs, mail and webhooks run elsewhere
    import logging
    import multiprocessing

    log = logging.getLogger(__name__)
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    lock = threading.Lock()
    current: list[Any] = []

    def launch() -> Any:
        process = context.Process(
            target=_background_main, args=(str(config), os.getpid()), name="bridge-background", daemon=False
        )
        process.start()
        return process

    def watch() -> None:
        while True:
            process = current[0]
            process.join()
            if stopping.wait(_RESTART_PAUSE_SECONDS):
                return
            _forget_metrics(process.pid)
            log.error(
                "the background services (outbox, scheduler) exited with code %s; starting them again",
                process.exitcode,
            )
            with lock:
                if stopping.is_set():
                    return
                current[0] = launch()

    with lock:
        current.append(launch())
    watcher = threading.Thread(target=watch, name="bridge-background-watch", daemon=True)
    watcher.start()

    def stop() -> None:
        with lock:
            stopping.set()
            process = current[0]
        if process.is_alive():
            process.terminate()  # SIGTERM: the services stop cleanly
            process.join(_STOP_TIMEOUT_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
        _forget_metrics(process.pid)

    return stop


def _forget_metrics(pid: int | None) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _background_main(config: str, parent: int) -> None:
    """The background process: the services until SIGTERM/SIGINT or until the parent is gone."""
    from bridge.logs import setup_logging
    from bridge.runtime import open_runtime

    done = threading.Event()

    def finish(_signum: int, _frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    runtime = open_runtime(Path(config), migrate=False, create=False)  # the parent has migrated
    setup_logging(runtime.config.logging["format"], runtime.config.logging["level"])
    stop = start_background(runtime, scheduler=True)
    try:
        # A parent killed with SIGKILL cannot stop us: leave with it (the workers do the same).
        while not done.wait(1.0) and os.getppid() == parent:
            pass
    finally:
        stop()
        runtime.engine.dispose()
