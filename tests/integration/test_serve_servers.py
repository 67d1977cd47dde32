"""`bridge serve` on each HTTP server it offers (granian by default, gunicorn, waitress): the same
SCIM answers, and no request variable taken from the service's own environment."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
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


def _second_serve(config: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("bridge")
    command = [str(exe), "--config", str(config), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--no-scheduler", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=60)  # a cap: it must give up at once, not serve
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"a second bridge serve on a busy port kept running:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("server", list(SERVERS))
def test_a_busy_port_is_refused_in_one_line_by_each_server(tmp_path: Path, server: str) -> None:
    served = ScimServer(
        root=tmp_path, db_url=f"sqlite:///{tmp_path / 'bridge.db'}", config=tmp_path / "bridge.toml", port=_free_port()
    )
    served.write_config()
    bridge_cli(served.config, "db", "upgrade")
    # The port is held by a listener with SO_REUSEPORT, as granian binds its own: a server that
    # also sets it would bind beside it and get half of its connections.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", served.port))
        holder.listen()
        result = _second_serve(served.config, served.port, *SERVERS[server])
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"127.0.0.1:{served.port} is in use"]
    assert "serving" not in result.stdout + result.stderr


def test_a_second_bridge_serve_beside_the_first_refuses_and_the_first_says_serving_once(tmp_path: Path) -> None:
    served = ScimServer(
        root=tmp_path, db_url=f"sqlite:///{tmp_path / 'bridge.db'}", config=tmp_path / "bridge.toml", port=_free_port()
    )
    served.write_config()
    bridge_cli(served.config, "db", "upgrade")
    served.start()  # granian, the default
    try:
        # "serving" is printed once the socket is bound, so by the time it answers it is there.
        log = (tmp_path / "serve.log").read_text()
        assert log.count("bridge serving on http://127.0.0.1:") == 1, log
        result = _second_serve(served.config, served.port)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [f"127.0.0.1:{served.port} is in use"]
        assert requests.get(f"{served.url}/healthz", timeout=30).status_code == 200
    finally:
        served.stop()
