"""The one rule for the client address behind a reverse proxy (bridge/web/client.py)."""

from __future__ import annotations

import ipaddress

import pytest

from bridge.web.client import client_address

PROXIES = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("127.0.0.1", ["203.0.113.1, 198.51.100.7"], "198.51.100.7"),  # the client's own entry is ignored
        ("127.0.0.1", ["198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # a second proxy of ours is skipped
        ("127.0.0.1", ["203.0.113.1", "198.51.100.7"], "198.51.100.7"),  # two header lines: one list
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["10.9.9.9"], "10.9.9.9"),  # only proxies: the farthest
        ("127.0.0.1", ["198.51.100.7, garbage"], "127.0.0.1"),
        ("::ffff:127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("192.0.2.5", ["198.51.100.7"], "192.0.2.5"),  # not a proxy: header ignored
        ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
        (None, ["198.51.100.7"], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", ["198.51.100.7"], []) == "127.0.0.1"
