"""A WSGI fast lane for the request identity providers send most: `GET /scim/v2/Users?filter=
userName eq "…"` (Entra ID and Okta look a user up before every create and on every sync cycle).

The lane answers that one request shape without Flask's request context, routing and hooks,
which cost more than the lookup itself (docs/benchmarks.md). It runs the same code as the
blueprint for everything that decides the answer (token check, `Query.parse`,
`fast_user_lookup`, rendering) and gives the same body and headers. Anything else, and anything
unusual about this request (another parameter, a body, a token that does not authenticate, a
filter that is not a plain `eq`, a database error), goes to the Flask app untouched, which
produces the answer or the error: the lane never answers with an error itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine

from bridge.app import request_id
from bridge.scim import quirks
from bridge.scim.auth import authenticate
from bridge.scim.errors import ScimError
from bridge.scim.schema import USER_TYPE
from bridge.store.fast import raw_cursor

log = logging.getLogger(__name__)

PATH = "/scim/v2/Users"
ROUTE = "/scim/v2/<any(Users, Groups):endpoint>"  # the blueprint's rule: the same metrics series
PARAMETERS = frozenset({"filter", "attributes", "excludedAttributes", "count", "startIndex"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FastLane:
    def __init__(self, app: WsgiApp, engine: Engine, base_url: str) -> None:
        self.app = app
        self.engine = engine
        self.base_url = base_url

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") == PATH
            and environ.get("REQUEST_METHOD") == "GET"
            and environ.get("QUERY_STRING")
            and environ.get("CONTENT_LENGTH") in (None, "", "0")  # clients often send 0 on a GET
            and "HTTP_TRANSFER_ENCODING" not in environ
            and quirks.bearer_token(environ.get("HTTP_AUTHORIZATION"))
        ):
            started = time.perf_counter()
            try:
                body = self.answer(environ)
            except ScimError:
                body = None  # bad token or filter: the app answers with the SCIM error
            except Exception:  # the app meets the same problem and answers it properly
                log.debug("SCIM fast lane passed a request to the app", exc_info=True)
                body = None
            if body is not None:
                rid = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "application/scim+json"),
                        ("Content-Length", str(len(body))),
                        ("X-Request-ID", rid),
                        ("Cache-Control", "no-store"),
                    ],
                )
                _observe(started)
                return [body]
        return self.app(environ, start_response)

    def answer(self, environ: dict[str, Any]) -> bytes | None:
        from bridge.scim.blueprint import Query, fast_user_lookup, scim_json

        pairs = parse_qsl(environ["QUERY_STRING"], keep_blank_values=True, strict_parsing=True)
        params = dict(pairs)
        if len(params) != len(pairs) or not params.keys() <= PARAMETERS or "filter" not in params:
            return None
        with raw_cursor(self.engine) as cursor:
            caller = authenticate(cursor, self.engine.dialect, environ.get("HTTP_AUTHORIZATION"))
            query = Query.parse(USER_TYPE, params, caller.tenant_id)
            found = fast_user_lookup(cursor, self.engine.dialect, caller, query, self.base_url)
        return None if found is None else scim_json(found).encode()


def _observe(started: float) -> None:
    from bridge.metrics import HTTP_LATENCY, HTTP_REQUESTS

    HTTP_REQUESTS.labels(route=ROUTE, method="GET", status="200").inc()
    HTTP_LATENCY.labels(route=ROUTE, method="GET").observe(time.perf_counter() - started)
