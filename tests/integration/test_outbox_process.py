"""The worker as a real process: inside `bridge serve`, and killed with SIGKILL mid-delivery."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
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


MAILS = 1000
KILLS = 12
CONNECTIONS = 4  # [email] connections, the default


@pytest.mark.slow
def test_sigkilled_worker_loses_no_mail_and_repeats_only_what_was_in_flight(
    deployment: Deployment, smtp_server: SmtpServer
) -> None:
    seed = int(os.environ.get("BRIDGE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    deployment.ldif.write_text(people_ldif(MAILS))
    deployment.write_config(
        seat_limit=None,
        extra=notify_config(smtp=smtp_server, outbox="lease_seconds = 2\nbatch_size = 50\n").replace(
            "timeout = 5", "timeout = 1"
        )
        + "\n[webhook]\ntimeout = 1\n",
    )
    assert bridge(deployment, "sync").exit_code == 0
    engine = make_engine(deployment.db_url)

    def sent() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(outbox).where(outbox.c.status == "sent")).scalar_one()
            )

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
                # In the middle of delivering: once mails flow, a random moment later.
                def flowing(before: int = before, worker: subprocess.Popen[bytes] = worker) -> bool:
                    return sent() > before or worker.poll() is not None

                wait_until(flowing, 60, "delivery to start")
                time.sleep(rng.uniform(0, 0.4))
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
            mid_delivery += int(sent() > before)
        final = start(deployment, "outbox", "run")
        wait_until(lambda: sent() == MAILS, 180, "every mail to be marked sent")
        final.send_signal(signal.SIGTERM)
        assert final.wait(timeout=30) == 0
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
    assert set(received) == expected  # every mail arrived
    # Each connection has one message in flight and marks it right after the server accepts it,
    # so a kill can repeat at most one message per connection.
    assert duplicates <= kills * CONNECTIONS
