"""Rate limits over HTTP against `bridge serve`: the client address behind a reverse proxy
(`[server] trusted_proxies`, issue 13 item 3).

The new-link form is the probe: its per-client limit (10 an hour) is checked before anything
else, so a request with no CSRF token answers 403 while the client has budget and 429 after.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.scim import ScimServer, _free_port, bridge_cli

NEW_LINK_PER_CLIENT = 10


def _server(root: Path, db_url: str, server_keys: str, *serve_args: str) -> ScimServer:
    server = ScimServer(root=root, db_url=db_url, config=root / "bridge.toml", port=_free_port())
    server.write_config()
    text = server.config.read_text().replace("[server]\n", f"[server]\n{server_keys}", 1)
    server.config.write_text(text)
    bridge_cli(server.config, "db", "upgrade")
    server.start(*serve_args)
    return server


@pytest.fixture
def serve_with(tmp_path: Path, db_url: str) -> Iterator[Callable[[str], ScimServer]]:
    """Starts `bridge serve` (one worker, so a per-process limit is exact) with extra
    `[server]` keys."""
    started: list[ScimServer] = []

    def start(server_keys: str) -> ScimServer:
        root = tmp_path / f"server{len(started)}"
        root.mkdir()
        server = _server(root, db_url, server_keys, "--workers", "1")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def new_link(server: ScimServer, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    response = requests.post(
        f"{server.url}/activate/new-link", data={"email": "nobody@example.org"}, headers=headers, timeout=30
    )
    return response.status_code


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
    serve_with: Callable[[str], ScimServer],
) -> None:
    server = serve_with('trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]\n')
    # As nginx's $proxy_add_x_forwarded_for writes it: what the client sent, then its address.
    first = [new_link(server, "198.51.100.7") for _ in range(NEW_LINK_PER_CLIENT + 1)]
    assert first == [403] * NEW_LINK_PER_CLIENT + [429], first
    # Another visitor behind the same proxy still has its whole budget.
    assert new_link(server, "198.51.100.8") == 403
    # A second trusted proxy in the chain is skipped: the client is the address before it.
    assert new_link(server, "198.51.100.7, 10.1.2.3") == 429
    # The exhausted client cannot buy a fresh bucket by writing its own header in front: the
    # right-most untrusted entry (written by the proxy) is what counts.
    assert new_link(server, "203.0.113.99, 198.51.100.7") == 429


def test_an_untrusted_peer_cannot_choose_its_bucket_with_x_forwarded_for(
    serve_with: Callable[[str], ScimServer],
) -> None:
    # The test client (127.0.0.1) is not the trusted proxy: its header is ignored.
    server = serve_with('trusted_proxies = ["10.0.0.0/8"]\n')
    codes = [new_link(server, f"198.51.100.{i}") for i in range(NEW_LINK_PER_CLIENT + 1)]
    assert codes == [403] * NEW_LINK_PER_CLIENT + [429], codes
    assert new_link(server, None) == 429
    assert new_link(server, "192.0.2.1") == 429


@pytest.mark.parametrize(
    ("value", "complaint"),
    [('["127.0.0.1/32", "proxy.example.org"]', "server.trusted_proxies[2]"), ('"127.0.0.1"', "trusted_proxies")],
)
def test_a_bad_trusted_proxies_entry_is_a_config_error(tmp_path: Path, value: str, complaint: str) -> None:
    config = tmp_path / "bridge.toml"
    db = tmp_path / "bridge.db"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\n\n[server]\ntrusted_proxies = {value}\n')
    exe = Path(sys.executable).with_name("bridge")
    proc = subprocess.run(
        [str(exe), "--config", str(config), "db", "upgrade"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(config) in proc.stderr and complaint in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def two_servers_on_one_postgresql(tmp_path: Path, pg_url: str) -> Iterator[tuple[ScimServer, ScimServer]]:
    """Two `bridge serve` processes (each with its default 2 workers) on one database, as two
    hosts behind a load balancer would be."""
    started: list[ScimServer] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(_server(tmp_path / name, pg_url, ""))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def test_a_limit_holds_across_processes_sharing_postgresql(
    two_servers_on_one_postgresql: tuple[ScimServer, ScimServer],
) -> None:
    first, second = two_servers_on_one_postgresql
    # In turn: with a limit per process each would allow its own 10 (per worker, even).
    codes = [new_link(first if i % 2 else second, None) for i in range(NEW_LINK_PER_CLIENT)]
    assert codes == [403] * NEW_LINK_PER_CLIENT, codes
    assert new_link(first, None) == 429
    assert new_link(second, None) == 429


def test_concurrent_hits_on_two_processes_never_pass_the_limit(
    two_servers_on_one_postgresql: tuple[ScimServer, ScimServer],
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    first, second = two_servers_on_one_postgresql
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda i: new_link(first if i % 2 else second, "ignored"), range(40)))
    assert set(codes) == {403, 429}, codes
    # Exactly the limit: hits on one key are counted one after the other whichever process takes them.
    assert codes.count(403) == NEW_LINK_PER_CLIENT, codes
