"""What every HTTP answer of bridge has in common, in one place for the Flask app, the SCIM fast
lane (which answers without Flask) and the web pages: the request id, the headers every answer
carries, the request metrics and the access-log line.

No framework here: the fast lane calls these with values from the WSGI environ, the app with
values from Flask's request.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

from bridge.logs import log_access

# Every answer may carry a tenant's data or a credential (a SCIM resource, an activation page):
# no shared cache may keep it. The pages add their own stricter set (bridge/web/activation.py).
NO_STORE = ("Cache-Control", "no-store")


class Caller(Protocol):
    """Who asked, as far as the access log needs it (the SCIM door's authenticated caller)."""

    tenant_name: str
    actor: str


def request_id(incoming: str) -> str:
    """The client's X-Request-ID when it is usable as a log field, else a new one. The same id is
    echoed in X-Request-ID, carried by the audit events the request causes and by its log lines."""
    return incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else f"req-{secrets.token_hex(8)}"


class RequestMetrics:
    """The request counter and latency histogram of one (route, method, status), labels from
    fixed sets only (bridge/metrics.py): the rule template, never the path a client sent."""

    def __init__(self, route: str, method: str, status: int) -> None:
        from bridge.metrics import HTTP_LATENCY, HTTP_REQUESTS, method_label, status_label

        method = method_label(method)
        self.requests = HTTP_REQUESTS.labels(route=route, method=method, status=status_label(status))
        self.latency = HTTP_LATENCY.labels(route=route, method=method)

    def observe(self, started: float | None) -> None:
        self.requests.inc()
        if started is not None:
            self.latency.observe(time.perf_counter() - started)


def observe_request(route: str, method: str, status: int, started: float | None) -> None:
    RequestMetrics(route, method, status).observe(started)


def log_request(
    method: str, path: str, query: str, status: int, started: float, caller: Caller | None, rid: str
) -> None:
    """The access-log line of one answer (`[server] access_log`): who asked is the caller's
    tenant and token label, never the token."""
    log_access(
        method,
        path,
        query,
        status,
        started,
        caller.tenant_name if caller is not None else None,
        caller.actor.removeprefix("scim:") if caller is not None else None,
        rid,
    )


def header_list(rid: str, *extra: tuple[str, str]) -> list[tuple[str, Any]]:
    """The headers of an answer written without Flask (the fast lane), as Flask's would be."""
    return [*extra, ("X-Request-ID", rid), NO_STORE]
