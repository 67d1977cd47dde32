"""`/metrics` over HTTP on `bridge serve` (granian, its default two workers): bounded labels
whatever a client sends, the scrape token, and database gauges cached per process (issue 13,
item 2)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.scim import ScimServer, _free_port, bridge_cli, new_server

TOKEN_ENV = "BRIDGE_TEST_METRICS_TOKEN"
WORKERS = 2  # `bridge serve`'s default


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def metrics_server(request: pytest.FixtureRequest) -> Iterator[tuple[ScimServer, str]]:
    with new_server(request, request.param, "bridge-metrics-") as server:
        text = server.config.read_text()
        server.config.write_text(text.replace("[server]\n", f'[server]\nmetrics_token_env = "{TOKEN_ENV}"\n', 1))
        bridge_cli(server.config, "db", "upgrade")
        token = secrets.token_urlsafe(24)
        server.start(env={TOKEN_ENV: token})
        yield server, token


def _scrape(server: ScimServer, token: str) -> str:
    response = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def _series(body: str) -> set[str]:
    """The series of a scrape: each sample line's name and labels, without its value."""
    return {line.rsplit(" ", 1)[0] for line in body.splitlines() if line and not line.startswith("#")}


def _value(body: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)}(?:\{{\}})? (\S+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_invented_methods_do_not_grow_metrics(metrics_server: tuple[ScimServer, str]) -> None:
    server, token = metrics_server
    http = requests.Session()
    targets = ("/healthz", "/scim/v2/Users", "/no-such-page")

    def invent(n: int) -> list[str]:
        methods = [f"BRIDGEX{secrets.token_hex(4).upper()}" for _ in range(n)]
        for i, method in enumerate(methods):
            http.request(method, server.url + targets[i % len(targets)], timeout=30)
            http.request(method.lower(), server.url + targets[i % len(targets)], timeout=30)
        return methods

    # A first round (and scrapes) put every series the invented methods can reach in place.
    _scrape(server, token)
    sent = invent(30)
    _scrape(server, token)
    before = _scrape(server, token)
    sent += invent(270)
    after = _scrape(server, token)

    assert not [m for m in sent if m in after or m.lower() in after]
    assert 'method="other"' in after
    # 540 more distinct methods, not one series more, and the body only as long as its figures.
    assert _series(after) == _series(before)
    assert len(after) < len(before) + 2048, (len(before), len(after))
    assert all(
        m in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}
        for m in re.findall(r'method="([^"]*)"', after)
    )
    # Routes are rule templates: the raw path of an unmatched request never becomes a label.
    assert "/no-such-page" not in after


def test_metrics_require_the_configured_token(metrics_server: tuple[ScimServer, str]) -> None:
    server, token = metrics_server
    url = f"{server.url}/metrics"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": token},  # no scheme
        {"Authorization": f"Basic {token}"},
    ):
        response = requests.get(url, headers=headers, timeout=30)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "bridge_accounts" not in response.text and "t1" not in response.text
    assert "bridge_http_requests_total" in _scrape(server, token)


def test_database_gauges_are_read_once_per_cache_window(metrics_server: tuple[ScimServer, str]) -> None:
    from bridge.metrics import STORE_CACHE_SECONDS

    server, token = metrics_server
    reads = "bridge_metrics_store_reads_total"
    first = _value(_scrape(server, token), reads)
    started = time.monotonic()
    scrapes = 60
    for _ in range(scrapes):
        body = _scrape(server, token)
    elapsed = time.monotonic() - started
    assert "bridge_seat_limit" in body
    # Each worker reads at most once per window; the bound follows from the time the scrapes
    # took, however long that was, so a slow machine only loosens it.
    bound = WORKERS * (int(elapsed // STORE_CACHE_SECONDS) + 1)
    assert _value(body, reads) - first <= bound, (scrapes, elapsed, _value(body, reads) - first)
    # And the figures do move on once the window has passed.
    deadline = time.monotonic() + 120
    last = _value(body, reads)
    while _value(body := _scrape(server, token), reads) == last:
        assert time.monotonic() < deadline, "the database gauges were never read again"
        time.sleep(0.5)


def test_a_metrics_token_variable_that_is_not_set_stops_the_start(tmp_path: Path) -> None:
    server = ScimServer(
        root=tmp_path, db_url=f"sqlite:///{tmp_path / 'bridge.db'}", config=tmp_path / "bridge.toml", port=_free_port()
    )
    server.write_config()
    text = server.config.read_text()
    server.config.write_text(text.replace("[server]\n", f'[server]\nmetrics_token_env = "{TOKEN_ENV}"\n', 1))
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("bridge")),
            "--config",
            str(server.config),
            "serve",
            "--port",
            str(server.port),
            "--no-scheduler",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "server.metrics_token_env" in result.stderr and TOKEN_ENV in result.stderr
    assert "Traceback" not in result.stderr
