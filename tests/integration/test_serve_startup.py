"""`bridge serve` right after a sync: every worker can write (issue 12, item 1).

The master of granian or gunicorn forks its workers. Before the fix, the outbox worker and the
scheduler were threads of that master; a worker forked while one of them was inside an SQLite
transaction (the outbox retrying mail to an unreachable SMTP server commits every few
milliseconds) inherited that connection's lock bookkeeping and waited 30 s for a lock nobody held,
on every write, for its whole life. The background services now run in a spawned process and the
master holds no connection when it forks (docs/operations/deploy.md, "Processes of bridge serve").

How many start-ups: on the unfixed code, 4 of 11 start-ups of this scenario (the issue's
repro: 8 parallel POST /Users after `bridge sync` of the example) had a worker that could not
write, p ~ 0.36 per start-up. n start-ups all miss the race with (1 - p)^n: 10 start-ups miss it
with 0.64^10 ~ 1.2 %, so the test fails on the unfixed code with ~ 99 % probability, and costs
about 3 s per start-up when the fix holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from bridge.store.db import make_engine
from bridge.store.tables import OutboxMessage
from tests.fixtures.scim import ROOT, SCIM_JSON, USER, _free_port, bridge_cli

START_UPS = 10
PARALLEL = 8
BRIDGE = str(Path(sys.executable).with_name("bridge"))


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _wait(condition, what: str, cap: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + cap
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The example after `bridge sync`: 56 activation mails queued, SMTP unreachable. The
    database is kept as `pristine.db` so each start-up begins from the same fresh state."""
    root = tmp_path_factory.mktemp("serve-startup")
    shutil.copytree(ROOT / "mappings", root / "mappings")
    shutil.copytree(ROOT / "examples", root / "examples")
    text = (ROOT / "config.example.toml").read_text()
    text = text.replace("smtp_port = 1025", f"smtp_port = {_free_port()}")  # nobody listens there
    (root / "bridge.toml").write_text(text)
    bridge_cli(root / "bridge.toml", "sync")
    token = bridge_cli(root / "bridge.toml", "tokens", "create", "--tenant", "example").strip().splitlines()[-1]
    assert not (root / "bridge.db-wal").exists() or (root / "bridge.db-wal").stat().st_size == 0
    shutil.copy(root / "bridge.db", root / "pristine.db")
    engine = make_engine(f"sqlite:///{root / 'pristine.db'}")
    with engine.connect() as conn:
        queued = conn.execute(select(func.count()).where(OutboxMessage.status == "queued")).scalar_one()
    engine.dispose()
    assert queued >= 50, queued  # the example's activation mails
    return root, token


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_every_worker_writes_after_start_up_with_mail_queued_and_smtp_down(
    deployment: tuple[Path, str], server: str
) -> None:
    root, token = deployment
    for start_up in range(START_UPS):
        failures = _start_up_and_write(root, token, server, start_up)
        assert not failures, "\n".join(failures)


def _start_up_and_write(root: Path, token: str, server: str, start_up: int) -> list[str]:
    """One start-up from the pristine database; the writes that did not succeed."""
    failures: list[str] = []
    for suffix in ("", "-wal", "-shm"):
        (root / f"bridge.db{suffix}").unlink(missing_ok=True)
    shutil.copy(root / "pristine.db", root / "bridge.db")
    metrics = root / f"metrics-{server}-{start_up}"
    metrics.mkdir()
    port = _free_port()
    log = open(root / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [BRIDGE, "--config", str(root / "bridge.toml"), "serve", "--port", str(port), "--server", server],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # A known metrics directory: one file per process that counted a request, so the test
        # sees which workers it reached.
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert process.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                return requests.get(f"{url}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        _wait(up, "bridge serve to answer")
        master_cmdline = _cmdline(process.pid)
        # Forked workers share the master's command line; the spawned background process not.
        workers: set[int] = set()

        def all_workers_up() -> bool:
            workers.clear()
            workers.update(p for p in _children(process.pid) if _cmdline(p) == master_cmdline)
            return len(workers) == 2

        _wait(all_workers_up, "two workers")

        def post(n: int) -> tuple[int, str]:
            response = requests.post(
                f"{url}/scim/v2/Users",
                json={"schemas": [USER], "userName": f"s{start_up}-{n}@example.org"},
                # A new connection per request, so the workers share them out.
                headers={"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON, "Connection": "close"},
                timeout=120,
            )
            return response.status_code, response.text[:200]

        def reached() -> set[int]:
            return {int(f.stem.rsplit("_", 1)[1]) for f in metrics.glob("counter_*.db")} & workers

        sent = 0
        with ThreadPoolExecutor(PARALLEL) as pool:
            # Rounds of parallel writes until every worker has answered some (a cap, not a
            # timing: a worker that never gets a request would make the test blind).
            for _ in range(20):
                results = list(pool.map(post, range(sent, sent + PARALLEL)))
                sent += PARALLEL
                failures += [f"start-up {start_up}: {status} {body}" for status, body in results if status != 201]
                if reached() == workers:
                    break
        assert reached() == workers, f"start-up {start_up}: only workers {reached()} of {workers} answered"

        # The background process really ran the outbox during the writes (the condition of
        # the race): it tried and failed the queued mail.
        engine = make_engine(f"sqlite:///{root / 'bridge.db'}")
        try:

            def tried() -> bool:
                with engine.connect() as conn:
                    return bool(conn.execute(select(func.count()).where(OutboxMessage.attempts > 0)).scalar_one())

            _wait(tried, "the outbox to try the queued mail")
        finally:
            engine.dispose()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    return failures


def test_a_killed_background_process_is_started_again(deployment: tuple[Path, str]) -> None:
    root, _ = deployment
    for suffix in ("", "-wal", "-shm"):
        (root / f"bridge.db{suffix}").unlink(missing_ok=True)
    shutil.copy(root / "pristine.db", root / "bridge.db")
    port = _free_port()
    log = open(root / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [BRIDGE, "--config", str(root / "bridge.toml"), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def background() -> set[int]:
            # The spawned process (multiprocessing's spawn_main), not its resource tracker.
            assert process.poll() is None, (root / "serve.log").read_text()[-3000:]
            return {
                p
                for p in _children(process.pid)
                if b"spawn_main" in _cmdline(p) and b"resource_tracker" not in _cmdline(p)
            }

        _wait(lambda: len(background()) == 1, "the background process")
        (first,) = background()
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        _wait(lambda: len(background()) == 1 and first not in background(), "a new background process")
        _wait(lambda: "starting them again" in (root / "serve.log").read_text(), "the restart in the log")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    assert process.returncode == 0, (root / "serve.log").read_text()[-3000:]
