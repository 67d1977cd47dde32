"""The database as an operator can break it: a file deleted or replaced under a running server, a
read command pointed at no database, a corrupt file, an unreachable PostgreSQL (issue 12)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from bridge.cli import main
from tests.conftest import Deployment
from tests.fixtures.scim import USER, ScimClient, ScimServer, bridge_cli, new_token

SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def sqlite_deployment(root: Path) -> Deployment:
    return Deployment(root, f"sqlite:///{root / 'bridge.db'}")


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


READ_COMMANDS = [
    ["users", "list"],
    ["users", "list", "--json"],
    ["users", "show", "acarpentier"],
    ["users", "archive", "acarpentier"],
    ["explain", "acarpentier"],
    ["audit"],
    ["tenants", "list"],
    ["tokens", "list", "--tenant", "example"],
    ["tokens", "revoke", "1"],
    ["sync", "--history"],
    ["jobs", "list"],
    ["outbox", "list"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_a_command_that_reads_creates_no_database_and_says_where_it_looked(tmp_path: Path, args: list[str]) -> None:
    d = sqlite_deployment(tmp_path)
    result = cli(d.config, *args)
    assert result.exit_code == 2, result.output
    assert one_line(result) == (
        f"bridge: database not found at {tmp_path / 'bridge.db'}; run `bridge db upgrade` or `bridge sync` first"
    )
    assert result.stdout == ""  # no "0 accounts"
    assert not any(p.name.startswith("bridge.db") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "args", [["db", "upgrade"], ["sync"], ["sync", "--dry-run"], ["tenants", "add", "other"]], ids=" ".join
)
def test_the_set_up_commands_still_create_the_database(tmp_path: Path, args: list[str]) -> None:
    d = sqlite_deployment(tmp_path)
    assert cli(d.config, *args).exit_code == 0
    listed = cli(d.config, "tenants", "list")
    assert listed.exit_code == 0 and "example" in listed.stdout


@pytest.mark.parametrize(
    "args", [["users", "list"], ["db", "upgrade"], ["sync"], ["tokens", "create", "--tenant", "example"]], ids=" ".join
)
def test_a_corrupt_database_file_is_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    d = sqlite_deployment(tmp_path)
    (tmp_path / "bridge.db").write_bytes(b"not a database, but a note somebody saved here\n" * 200)
    result = cli(d.config, *args)
    assert result.exit_code == 1, result.output
    assert one_line(result) == f"bridge: database {tmp_path / 'bridge.db'}: file is not a database"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("args", [["users", "list"], ["db", "upgrade"], ["sync", "--history"]], ids=" ".join)
def test_an_unreachable_postgresql_is_one_line_without_its_password(tmp_path: Path, args: list[str]) -> None:
    port = _closed_port()
    d = Deployment(tmp_path, f"postgresql+psycopg://bridge:Sw0rdfish-77@127.0.0.1:{port}/bridge?password=alsosecret")
    result = cli(d.config, *args)
    assert result.exit_code == 1, result.output
    line = one_line(result)
    assert line.startswith(f"bridge: database postgresql+psycopg://bridge:***@127.0.0.1:{port}/bridge: "), line
    assert "Connection refused" in line
    assert "Sw0rdfish" not in result.output and "alsosecret" not in result.output


# ---- a file deleted or replaced under `bridge serve` ------------------------------------------


@pytest.fixture
def sqlite_server() -> Iterator[ScimServer]:
    root = Path(tempfile.mkdtemp(prefix="bridge-dbfile-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ScimServer(root=root, db_url=f"sqlite:///{root / 'bridge.db'}", config=root / "bridge.toml", port=port)
    server.write_config()
    bridge_cli(server.config, "db", "upgrade")
    server.start()  # the default server: granian, two workers
    try:
        yield server
    finally:
        server.stop()
        if os.environ.get("BRIDGE_KEEP_TMP", "") in ("", "0"):
            shutil.rmtree(root, ignore_errors=True)


def _user(name: str) -> dict[str, object]:
    return {"schemas": [USER], "userName": name, "emails": [{"value": f"{name}@example.org", "primary": True}]}


def _replacement(server: ScimServer) -> Path:
    """Another bridge database, migrated, with the same tenants: a restore from an older copy."""
    other = server.root / "other"
    other.mkdir()
    config = other / "bridge.toml"
    config.write_text(server.config.read_text().replace(str(server.root / "bridge.db"), str(other / "bridge.db")))
    shutil.copy(server.root / "mapping.toml", other / "mapping.toml")
    bridge_cli(config, "db", "upgrade")
    return other / "bridge.db"


@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_serve_stops_readiness_and_writes(
    sqlite_server: ScimServer, damage: str
) -> None:
    server = sqlite_server
    scim = ScimClient(server, *new_token(server))
    scim.ok("POST", "/Users", _user("before"), status=201)
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    path = server.root / "bridge.db"
    if server.engine is not None:
        server.engine.dispose()  # the test's own connections: only the server's are left
        server.engine = None
    if damage == "deleted":
        path.unlink()
    else:
        os.replace(_replacement(server), path)
        replaced = path.read_bytes()

    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "database": f"the database file was {'deleted' if damage == 'deleted' else 'replaced by another file'} "
        "after bridge opened it; restart bridge",
    }
    # Enough requests that both workers, and several threads of each, meet the damage.
    for n in range(12):
        response = scim.call("POST", "/Users", _user(f"after{n}"))
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["schemas"] == [SCIM_ERROR] and body["status"] == "503" and "scimType" not in body
        assert response.headers["Retry-After"] == "5"
        lookup = scim.call("GET", '/Users?filter=userName eq "before"')  # the fast lane's request
        assert lookup.status_code == 503, lookup.text
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 503
    # The activation pages and the product API answer the same 503, not a 500 page.
    page = requests.get(f"{server.url}/activate/{'x' * 43}", timeout=10)
    assert page.status_code == 503 and page.headers["Retry-After"] == "5", page.text
    api = requests.post(
        f"{server.url}/api/v1/verify-password", json={}, headers={"Authorization": f"Bearer {scim.token}"}, timeout=10
    )
    assert api.status_code == 503 and api.json()["error"] == "database_unavailable", api.text

    if damage == "deleted":
        # No new, empty file beside the old -wal: the next start must not read a corrupt one.
        assert not path.exists()
    else:
        # Nothing touched the file that took the old one's place. (Reading it through SQLite here
        # would replay the old database's -wal file, still beside it, into it: exactly the
        # corruption a server that went on would have caused.)
        assert path.read_bytes() == replaced
    log = (server.root / "serve.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert f"the database file {path} " in log  # the operator's log names the file

    result = cli(server.config, "users", "list")
    if damage == "deleted":
        assert result.exit_code == 2 and "database not found at" in result.stderr


# ---- file modes (issue 13, item 7) ----------------------------------------------------------


def test_the_database_its_wal_and_shm_are_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("bridge"))
    upgraded = tmp_path / "upgraded"
    upgraded.mkdir()
    d = sqlite_deployment(upgraded)
    subprocess.run([exe, "--config", str(d.config), "db", "upgrade"], check=True, capture_output=True, umask=0o022)
    assert stat.S_IMODE((upgraded / "bridge.db").stat().st_mode) == 0o600

    # `bridge serve` creating the database: its connections stay open, so -wal and -shm exist.
    served = tmp_path / "served"
    served.mkdir()
    server = ScimServer(root=served, db_url=f"sqlite:///{served / 'bridge.db'}", config=served / "bridge.toml", port=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        server.port = int(s.getsockname()[1])
    server.write_config()
    log = open(served / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [exe, "--config", str(server.config), "serve", "--port", str(server.port), "--workers", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        umask=0o022,
    )
    try:
        deadline = time.monotonic() + 60
        files = [served / name for name in ("bridge.db", "bridge.db-wal", "bridge.db-shm")]
        while not all(f.exists() for f in files):
            assert process.poll() is None, (served / "serve.log").read_text()
            assert time.monotonic() < deadline, "bridge serve made no -wal and -shm files"
            time.sleep(0.1)
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
