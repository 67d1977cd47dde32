"""The worker as a real process: inside `bridge serve`, and killed with SIGKILL mid-delivery."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from bench.outbox_bench import people_ldif
from bridge.notify.mail import message_id
from bridge.store.db import make_engine
from bridge.store.tables import OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.postgres import free_port
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge, link_in, mails_to, notify_config

outbox = OutboxMessage.__table__
ROOT = Path(__file__).resolve().parents[2]


def start(deployment: Deployment, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(deployment.config), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_until_running(worker: subprocess.Popen[bytes]) -> None:
    """Until the worker says it runs (its SIGTERM handler is in place), or it exits."""
    assert worker.stderr is not None
    said: list[bytes] = []
    while worker.poll() is None:
        line = worker.stderr.readline()
        said.append(line)
        if b"running; SIGTERM" in line:
            # Keep draining: a worker blocked on a full stderr pipe would stop making progress.
            threading.Thread(target=worker.stderr.read, daemon=True).start()
            return
    raise AssertionError(f"the worker exited with {worker.returncode}: {b''.join(said).decode()}")


def test_bridge_serve_delivers_the_mail_whose_link_activates_and_stops_cleanly(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    deployment.write_config(extra=notify_config(smtp=smtp_server, public_url=base))
    assert bridge(deployment, "sync").exit_code == 0
    serve = start(deployment, "serve", "--port", str(port))
    try:
        wait_until(lambda: mails_to(smtp_server, "alice.garnier@example.org"), 30, "the activation mail")
        url, _ = link_in(mails_to(smtp_server, "alice.garnier@example.org")[0])
        assert url.startswith(base)
        session = requests.Session()
        page = session.get(url, timeout=10)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
        password = "a long enough passphrase"
        done = session.post(url, data={"csrf": csrf, "password": password, "password_confirm": password}, timeout=10)
        assert done.status_code == 200
        assert '"status": "active"' in bridge(deployment, "users", "show", "agarnier", "--json").output
        assert session.get(url, timeout=10).status_code == 410
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=30)
    assert code == 0, serve.stderr.read().decode() if serve.stderr else ""
    assert len(mails_to(smtp_server, "alice.garnier@example.org")) == 1


def wait_for_progress(
    done: Callable[[], bool], progress: Callable[[], object], what: str, *, stalled: float = 120, cap: float = 1200
) -> None:
    """Wait until `done()`, failing only when `progress()` has not changed for `stalled` seconds
    (or after `cap`, a bound on a run that keeps moving forever): a busy machine slows a worker
    down, it does not stop it, so a fixed wall-clock budget is no test of correctness."""
    started = last_change = time.monotonic()
    seen = progress()
    while not done():
        now = time.monotonic()
        current = progress()
        if current != seen:
            seen, last_change = current, now
        if now - last_change > stalled:
            raise AssertionError(f"no progress for {stalled:.0f}s waiting for {what} (at {seen})")
        if now - started > cap:
            raise AssertionError(f"still waiting for {what} after {cap:.0f}s (at {seen})")
        time.sleep(0.05)


MAILS = 1000
KILLS = 12
CONNECTIONS = 4  # [email] connections, the default
SMTP_TIMEOUT = 15


@pytest.mark.slow
def test_sigkilled_worker_loses_no_mail_and_repeats_only_what_was_in_flight(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    seed = int(os.environ.get("BRIDGE_CRASH_SEED", random.randrange(1 << 30)))
    try:
        _crash_test(deployment, smtp_server, seed)
    except Exception as exc:
        # The kill moments come from the seed: a failure is reproduced with the same one.
        raise AssertionError(
            f"crash test failed with seed {seed} (rerun with BRIDGE_CRASH_SEED={seed}): {exc}"
        ) from exc


def _crash_test(deployment: Deployment, smtp_server: SmtpServer, seed: int) -> None:
    rng = random.Random(seed)
    deployment.ldif.write_text(people_ldif(MAILS))
    # A client that gives up on a slow (busy) server after the server took the mail sends it again,
    # a duplicate no kill caused: the timeout is generous. Not the default 60 s, though: a claim
    # lives twice the send bound, so every SIGKILLed worker's rows wait that long for the next one
    # (at 60 s that wait was half the test's four minutes).
    deployment.write_config(
        seat_limit=None,
        extra=notify_config(smtp=smtp_server, outbox="lease_seconds = 2\nbatch_size = 50\n").replace(
            "timeout = 5", f"timeout = {SMTP_TIMEOUT}"
        ),
    )
    assert bridge(deployment, "sync").exit_code == 0
    engine = make_engine(deployment.db_url)

    def statuses() -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())  # type: ignore[arg-type]

    def sent() -> int:
        return statuses().get("sent", 0)

    try:
        with engine.connect() as conn:
            keys = conn.execute(select(outbox.c.idempotency_key).where(outbox.c.topic == "activation")).scalars().all()
        assert len(keys) == MAILS
        kills = mid_delivery = 0
        started = time.monotonic()
        while kills < KILLS and sent() < MAILS:
            before = sent()
            worker = start(deployment, "outbox", "run")
            if kills % 3 == 2:
                # Any moment from start-up on: importing, claiming, minting links.
                time.sleep(rng.uniform(0.1, 1.5))
            else:
                # In the middle of delivering: once mails flow, a random moment later. A process
                # start on a busy machine takes what it takes: the cap only bounds a hang.
                def flowing(before: int = before, worker: subprocess.Popen[bytes] = worker) -> bool:
                    return sent() > before or worker.poll() is not None

                wait_for_progress(flowing, lambda: None, "delivery to start", stalled=600)
                time.sleep(rng.uniform(0, 0.4))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            mid_delivery += int(sent() > before)
        final = start(deployment, "outbox", "run")
        # The last killed worker may have sent everything: a SIGTERM before the worker installed
        # its handler would kill it the default way (-15), which is not what this checks.
        wait_until_running(final)

        def all_sent() -> bool:
            counts = statuses()
            stuck = {k: v for k, v in counts.items() if k not in ("queued", "sent")}
            assert not stuck, f"rows that will never be sent: {counts}"
            return counts.get("sent", 0) == MAILS

        # Failing means no mail marked sent for two minutes, not "slower than on my laptop".
        wait_for_progress(all_sent, sent, "every mail to be marked sent")
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=300) == 0
        elapsed = time.monotonic() - started
    finally:
        engine.dispose()

    received = Counter(m.message["Message-ID"] for m in smtp_server.messages)
    expected = {message_id(k, "Bridge <no-reply@bridge.example>") for k in keys}
    duplicates = sum(received.values()) - len(received)
    print(
        f"\ncrash test (seed {seed}): {MAILS} mails, {kills} SIGKILLs ({mid_delivery} while delivering), "
        f"{len(smtp_server.messages)} received, "
        f"{len(received)} distinct, {duplicates} duplicates, {elapsed:.1f}s"
    )
    assert set(received) == expected, f"{len(expected - set(received))} mails never arrived"
    # Each connection has one message in flight and marks it right after the server accepts it,
    # so a kill can repeat at most one message per connection.
    assert duplicates <= kills * CONNECTIONS, f"{duplicates} duplicates after {kills} kills"
