"""Scheduler, leases, expiry and metrics on real processes and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from bridge.store.db import make_engine, upgrade
from bridge.store.lease import try_lease
from bridge.store.tables import Account, AuditEvent, JobRun
from tests.conftest import Deployment

BRIDGE = [sys.executable, "-m", "bridge"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(d: Deployment, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [*BRIDGE, "--config", str(d.config), "serve", "--port", str(port), *extra],
        cwd=d.root,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except requests.ConnectionError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _schedule(d: Deployment, text: str) -> None:
    (d.root / "schedules").mkdir(exist_ok=True)
    (d.root / "schedules" / "test.toml").write_text(text)


def _runs(d: Deployment, job: str) -> list[JobRun]:
    engine = make_engine(d.db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(JobRun).where(JobRun.job == job).order_by(JobRun.scheduled_for)).all())
    finally:
        engine.dispose()


@pytest.fixture
def pg_deployment(tmp_path: Path, pg_url: str) -> Deployment:
    return Deployment(tmp_path, pg_url)


def test_two_processes_run_each_tick_exactly_once(pg_deployment: Deployment, tmp_path: Path) -> None:
    d = pg_deployment
    _schedule(d, '[jobs.tick]\ntarget = "expire_external"\nevery = "1s"\nmisfire_grace = 30\n')
    subprocess.run([*BRIDGE, "--config", str(d.config), "db", "upgrade"], check=True, capture_output=True)
    a, _ = _serve(d, tmp_path / "a.log")
    b, _ = _serve(d, tmp_path / "b.log")
    try:
        time.sleep(20)
    finally:
        _stop(a)
        _stop(b)
    runs = _runs(d, "tick")
    ticks = [r.scheduled_for for r in runs]
    assert len(ticks) >= 15, f"only {len(ticks)} ticks ran in 20 s"
    assert len(set(ticks)) == len(ticks)
    # No tick between the first and the last was lost: one row per second.
    assert (ticks[-1] - ticks[0]) == timedelta(seconds=len(ticks) - 1)
    assert all(r.outcome == "ok" for r in runs)
    holders = {r.holder for r in runs}
    logs = [(tmp_path / name).read_text() for name in ("a.log", "b.log")]
    tried = [dict(re.findall(r"job tick: tick (\S+) (ok|skipped)", log)) for log in logs]
    # While both processes are up, both try every tick: exactly one runs it, the other says it
    # skipped. (Before the slower one starts or after the first one stops, only one tries.)
    # Between the later start and the earlier stop (ISO strings of one format sort by time):
    up, down = max(min(tried[0]), min(tried[1])), min(max(tried[0]), max(tried[1]))
    window = sorted(t for t in set(tried[0]) | set(tried[1]) if up <= t <= down)
    both = sorted(set(tried[0]) & set(tried[1]))
    assert len(holders) >= 1 and both == window and len(both) >= 10, logs[0][-1000:] + logs[1][-1000:]
    for tick in both:
        assert sorted((tried[0][tick], tried[1][tick])) == ["ok", "skipped"], tick


def test_killing_the_lease_holder_hands_the_job_over(pg_deployment: Deployment, tmp_path: Path) -> None:
    d = pg_deployment
    # Each run holds the lease for its jitter delay (4-5 s), long enough to kill the holder mid-run.
    _schedule(
        d, '[jobs.slow]\ntarget = "expire_external"\nevery = "1s"\njitter = 5\nmisfire_grace = 30\nlease_seconds = 10\n'
    )
    subprocess.run([*BRIDGE, "--config", str(d.config), "db", "upgrade"], check=True, capture_output=True)
    procs = {}
    for name in ("a", "b"):
        proc, _ = _serve(d, tmp_path / f"{name}.log")
        procs[proc.pid] = proc
    try:
        deadline = time.monotonic() + 30
        while True:
            running = [r for r in _runs(d, "slow") if r.outcome == "running"]
            if running:
                break
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.2)
        # The jobs run in each serve's background process (bridge/services.py): the holder is
        # that process, a child of its `bridge serve`.
        holder_pid = int(running[0].holder.split(":")[1])
        victim_pid = _parent(holder_pid)
        os.kill(holder_pid, signal.SIGKILL)
        killed_at = datetime.now(UTC)
        survivor = next(p for pid, p in procs.items() if pid != victim_pid)
        deadline = time.monotonic() + 15
        while True:
            later = [r for r in _runs(d, "slow") if r.started_at > killed_at]
            if later:
                break
            assert survivor.poll() is None
            assert time.monotonic() < deadline, "the job was not handed over within the lease time"
            time.sleep(0.2)
        assert _parent(int(later[0].holder.split(":")[1])) == survivor.pid
        assert (later[0].started_at - killed_at) < timedelta(seconds=10)
    finally:
        for proc in procs.values():
            _stop(proc)
    abandoned = [r for r in _runs(d, "slow") if r.outcome == "abandoned"]
    assert len(abandoned) == 1 and abandoned[0].holder == running[0].holder


def test_sqlite_lease_row_expires_when_its_holder_is_killed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    engine = make_engine(url)
    upgrade(engine)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from bridge.store.db import make_engine\n"
            "from bridge.store.lease import try_lease\n"
            f"lease = try_lease(make_engine({url!r}), 'job:x', ttl=2.0, holder='host:1:a')\n"
            "print('held' if lease else 'busy', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(2.5)  # longer than the ttl: only the holder's renewals keep it
        assert try_lease(engine, "job:x", ttl=2.0, holder="host:2:b") is None
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        while (second := try_lease(engine, "job:x", ttl=2.0, holder="host:2:b")) is None:
            assert time.monotonic() - killed < 3.0, "lease did not expire within its ttl"
            time.sleep(0.1)
        second.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        engine.dispose()


def test_expired_external_account_is_archived_by_the_job_with_an_audit_event(deployment: Deployment) -> None:
    subprocess.run([*BRIDGE, "--config", str(deployment.config), "sync"], check=True, capture_output=True)
    engine = make_engine(deployment.db_url)
    with engine.begin() as conn:
        external = conn.execute(select(Account.id, Account.user_name).where(Account.user_type == "external")).first()
        conn.execute(
            update(Account).where(Account.id == external.id).values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    _schedule(deployment, '[jobs.expire]\ntarget = "expire_external"\nevery = "1h"\n')
    deployment.write_config(extra='\n[schedules]\ndir = "schedules"\n')
    result = subprocess.run(
        [*BRIDGE, "--config", str(deployment.config), "jobs", "run", "expire"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    with engine.connect() as conn:
        status = conn.execute(select(Account.status).where(Account.id == external.id)).scalar_one()
        events = conn.execute(
            select(AuditEvent.action, AuditEvent.actor, AuditEvent.reason).where(AuditEvent.account_id == external.id)
        ).all()
    engine.dispose()
    assert status == "archived"
    archive = [e for e in events if e.action == "archive"]
    assert archive and archive[0].actor == "job:expire_external" and "expired" in archive[0].reason
    # The next sync still sees the contractor in the directory but leaves the account archived.
    out = subprocess.run(
        [*BRIDGE, "--config", str(deployment.config), "sync", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["reactivated"] == 0
    listed = json.loads(
        subprocess.run(
            [*BRIDGE, "--config", str(deployment.config), "jobs", "list", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert listed[0]["name"] == "expire" and listed[0]["lastOutcome"] == "ok"


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_move_with_requests_and_syncs(deployment: Deployment, tmp_path: Path) -> None:
    subprocess.run([*BRIDGE, "--config", str(deployment.config), "sync"], check=True, capture_output=True)
    proc, port = _serve(deployment, tmp_path / "serve.log", "--no-scheduler")
    try:
        base = f"http://127.0.0.1:{port}"
        before = requests.get(f"{base}/metrics", timeout=10).text
        for _ in range(3):
            requests.get(f"{base}/healthz", timeout=5)
        requests.get(f"{base}/no-such-page", timeout=5)
        after = requests.get(f"{base}/metrics", timeout=10).text
        assert (
            _metric(after, "bridge_http_requests_total", route="/healthz", status="200")
            == _metric(before, "bridge_http_requests_total", route="/healthz", status="200") + 3
        )
        assert _metric(after, "bridge_http_requests_total", route="unmatched", status="404") >= 1
        assert _metric(after, "bridge_http_request_duration_seconds_count", route="/healthz") >= 3
        pending = _metric(after, "bridge_accounts", tenant="example", status="pending")
        assert pending > 0
        assert _metric(after, "bridge_seat_limit", tenant="example") == 50
        assert 0 < _metric(after, "bridge_seats_used", tenant="example") <= 50
        assert _metric(after, "bridge_outbox_messages", channel="email", status="queued") == pending
        # Queued since the sync and nothing sends them (--no-scheduler): the age an alert watches.
        assert _metric(after, "bridge_outbox_oldest_queued_age_seconds", channel="email") > 0
    finally:
        _stop(proc)


def test_sync_metrics_count_runs_and_changes(deployment: Deployment) -> None:
    from prometheus_client import REGISTRY

    from bridge.engine.sync import run_sync
    from bridge.runtime import open_runtime

    runtime = open_runtime(deployment.config)
    before = (
        REGISTRY.get_sample_value("bridge_sync_runs_total", {"source": "dir", "mode": "full", "outcome": "ok"}) or 0
    )
    created = REGISTRY.get_sample_value("bridge_sync_changes_total", {"source": "dir", "change": "created"}) or 0
    run_sync(runtime.config, runtime.engine, "dir")
    assert (
        REGISTRY.get_sample_value("bridge_sync_runs_total", {"source": "dir", "mode": "full", "outcome": "ok"})
        == before + 1
    )
    assert (
        REGISTRY.get_sample_value("bridge_sync_changes_total", {"source": "dir", "change": "created"}) == created + 60
    )
    runtime.engine.dispose()
