"""The client's address, for every rate limit and log line that needs one: the TCP peer, or
behind a trusted reverse proxy (`[server] trusted_proxies`) the right-most X-Forwarded-For entry
that is not itself a trusted proxy.

Right-most because each proxy appends the address it saw: everything left of the last untrusted
entry was written by the client and may be anything. A peer that is not trusted has its header
ignored, so nobody can pick a fresh bucket by sending one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from flask import current_app, request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; the config says a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address, proxies: Sequence[Network]) -> bool:
    return any(ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: list[str], proxies: Sequence[Network]) -> str:
    peer_ip = _parse(peer or "")
    if peer_ip is None:
        return peer or "unknown"
    if not proxies or not _trusted(peer_ip, proxies):
        return str(peer_ip)
    hops = [part for header in forwarded_for for part in header.split(",") if part.strip()]
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            # A trusted proxy passed on something that is not an address (it forwards the
            # client's header without appending): the proxy is the best we know.
            return str(peer_ip)
        if not _trusted(ip, proxies):
            return str(ip)
    # Every hop is a proxy of ours (a health check from the proxy host itself): the farthest one.
    first = _parse(hops[0]) if hops else None
    return str(first or peer_ip)


def current_client() -> str:
    proxies = current_app.extensions["bridge"].config.server.get("trusted_proxies") or []
    return client_address(request.remote_addr, request.headers.getlist("X-Forwarded-For"), proxies)
