"""`bridge serve` on each HTTP server it offers (granian by default, gunicorn, waitress): the same
SCIM answers, and no request variable taken from the service's own environment."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.scim import SCIM_JSON, USER, ScimServer, _free_port, bridge_cli, new_token

SERVERS = {
    "granian": (),
    "gunicorn": ("--server", "gunicorn"),
    "waitress": ("--workers", "0"),
}


@pytest.fixture(params=list(SERVERS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[ScimServer, str]]:
    root = Path(tempfile.mkdtemp(prefix="bridge-serve-"))
    server = ScimServer(
        root=root, db_url=f"sqlite:///{root / 'bridge.db'}", config=root / "bridge.toml", port=_free_port()
    )
    server.write_config()
    bridge_cli(server.config, "db", "upgrade")
    _, token = new_token(server, "t1")
    # Variables a service manager could well set (a proxy) or an attacker on the host could try:
    # granian copies the process environment into every request's environ.
    server.start(
        *SERVERS[request.param],
        env={
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "HTTP_X_REQUEST_ID": "from-the-environment",
            "HTTP_PROXY": "http://127.0.0.1:9",
        },
    )
    try:
        yield server, token
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_each_server_answers_scim_and_ignores_request_variables_from_its_environment(
    served: tuple[ScimServer, str],
) -> None:
    server, token = served
    lookup = f'{server.base}/Users?filter=userName eq "ada@example.com"'

    # No Authorization header: the token in the service's environment must not count.
    for url in (lookup, f"{server.base}/Users"):
        response = requests.get(url, timeout=30)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON})
    created = http.post(
        f"{server.base}/Users",
        json={"schemas": [USER], "userName": "ada@example.com", "name": {"givenName": "Ada", "familyName": "L"}},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    for _ in range(3):  # the lane's thread connection is reused across requests
        found = http.get(lookup, timeout=30)
        assert found.status_code == 200, found.text
        assert [r["id"] for r in found.json()["Resources"]] == [created.json()["id"]]
        assert found.headers["X-Request-ID"] != "from-the-environment"
    assert http.get(lookup, headers={"X-Request-ID": "abc-123"}, timeout=30).headers["X-Request-ID"] == "abc-123"
    assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200


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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_workers_exit_when_the_serving_parent_is_killed(server: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="bridge-serve-"))
    served = ScimServer(
        root=root, db_url=f"sqlite:///{root / 'bridge.db'}", config=root / "bridge.toml", port=_free_port()
    )
    served.write_config()
    bridge_cli(served.config, "db", "upgrade")
    served.start("--server", server)
    assert served.process is not None
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 20
        while len(workers) < 2:  # --workers 2 (the default); the second may still be starting
            assert time.monotonic() < deadline, f"workers: {workers}"
            time.sleep(0.1)
            workers = _children(served.process.pid)
        served.process.kill()  # SIGKILL: no chance to stop its workers
        served.process.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, f"workers outlived their parent: {[w for w in workers if _alive(w)]}"
            time.sleep(0.2)
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        served.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_spawned_granian_worker_builds_its_app_from_the_config(tmp_path: Path) -> None:
    """Where granian spawns its workers (Python 3.14's default start method), nothing is
    preloaded: the loader opens the config itself. Run in a fresh interpreter, as a spawned
    worker would be."""
    import subprocess
    import sys

    server = ScimServer(
        root=tmp_path, db_url=f"sqlite:///{tmp_path / 'bridge.db'}", config=tmp_path / "bridge.toml", port=0
    )
    server.write_config()
    bridge_cli(server.config, "db", "upgrade")
    probe = (
        "import os, sys\n"
        "from bridge.wsgi import granian_worker_app\n"
        "app = granian_worker_app(sys.argv[1], os.getppid())\n"
        "client = app.test_client()\n"
        "print(app.name, client.get('/healthz').status_code, 'HTTP_PROXY' in os.environ)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(server.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HTTP_PROXY": "http://127.0.0.1:9"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["bridge", "200", "False"]
