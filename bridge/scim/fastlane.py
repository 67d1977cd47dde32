"""A WSGI fast lane for the request identity providers send most: `GET /scim/v2/Users?filter=
userName eq "…"` (Entra ID and Okta look a user up before every create and on every sync cycle).

The lane answers that one request shape without Flask's request context, routing and hooks,
which cost more than the lookup itself (docs/benchmarks.md). It runs the same code as the
blueprint for everything that decides the answer (`Query.parse`, the token check by
`auth.caller_of`, the lookup's rows, rendering) and gives the same body and headers; it checks
the token in the lookup's own statement (a second one reads the user's groups), on a connection
the server thread keeps. Anything else, and anything unusual about this
request (another parameter, a body, a token that does not authenticate, a filter that is not a
plain `eq`, a database error), goes to the Flask app untouched, which produces the answer or the
error: the lane never answers with an error itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from sqlalchemy import Engine

from bridge.http import RequestMetrics, header_list, log_request, request_id
from bridge.scim import quirks
from bridge.scim.auth import Caller
from bridge.scim.errors import ScimError
from bridge.scim.lookup import fast_token_user_lookup
from bridge.scim.query import Query
from bridge.scim.requestlog import Captured, RequestLog
from bridge.scim.resources import scim_json
from bridge.scim.schema import USER_TYPE
from bridge.store.db import database_file
from bridge.web.client import Network, client_address

log = logging.getLogger(__name__)

PATH = "/scim/v2/Users"
ROUTE = "/scim/v2/<any(Users, Groups):endpoint>"  # the blueprint's rule: the same metrics series
PARAMETERS = frozenset({"filter", "attributes", "excludedAttributes", "count", "startIndex"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ThreadConnection(threading.local):
    connection: Any = None
    cursor: Any = None


class FastLane:
    def __init__(
        self,
        app: WsgiApp,
        engine: Engine,
        base_url: str,
        access_log: bool = False,
        request_log: RequestLog | None = None,
        proxies: Sequence[Network] = (),
    ) -> None:
        self.app = app
        self.engine = engine
        self.base_url = base_url
        self.access_log = access_log  # [server] access_log: the lane logs what it answers itself
        self.request_log = request_log  # the tenant's SCIM request log (bridge.scim.requestlog)
        self.proxies = proxies
        # One DB-API connection per server thread, detached from the pool: a pool checkout and
        # return (with PostgreSQL's pre-ping) cost more than the lookup, and a detached
        # connection does not take a pool slot from the requests that need one. Rolled back
        # after every request; dropped, and the request passed to the app, on any error.
        self._local = _ThreadConnection()
        self._metrics: RequestMetrics | None = None
        # The kept connection never passes the pool's check that the SQLite file is still the
        # one opened (bridge.store.db.DatabaseFile): the lane checks it itself.
        self._file = database_file(engine)

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
                caller, body = self.answer(environ)
            except ScimError:
                body = None  # bad token or filter: the app answers with the SCIM error
            except Exception:  # the app meets the same problem and answers it properly
                log.debug("SCIM fast lane passed a request to the app", exc_info=True)
                self._drop_connection()
                body = None
            if body is not None:
                rid = request_id(environ.get("HTTP_X_REQUEST_ID", ""))
                start_response(
                    "200 OK",
                    header_list(rid, ("Content-Type", "application/scim+json"), ("Content-Length", str(len(body)))),
                )
                self._observe(started)
                if self.access_log:
                    log_request("GET", PATH, environ["QUERY_STRING"], 200, started, caller, rid)
                if self.request_log is not None and caller is not None:
                    self._record(environ, caller, rid, started, body)
                return [body]
        return self.app(environ, start_response)

    def answer(self, environ: dict[str, Any]) -> tuple[Caller | None, bytes | None]:
        """(the caller, the body), or a None body when the app is to answer."""
        params = _parameters(environ["QUERY_STRING"])
        if params is None or not params.keys() <= PARAMETERS:
            return None, None
        query = Query.parse_lookup(USER_TYPE, params)
        if query is None:
            return None, None
        if self._file is not None and self._file.problem() is not None:
            self._drop_connection()  # a deleted or replaced file: the app answers 503
            return None, None
        cursor = self._cursor()
        try:
            header = environ.get("HTTP_AUTHORIZATION")
            caller, found = fast_token_user_lookup(
                cursor, self.engine.dialect, header, query, self.base_url, self.engine
            )
        finally:
            self._local.connection.rollback()  # PostgreSQL opened a transaction; SQLite has none
        return caller, None if found is None else scim_json(found)

    def _cursor(self) -> Any:
        local = self._local
        if local.cursor is None:
            pooled = self.engine.raw_connection()  # runs the engine's connect hooks (PRAGMAs)
            pooled.detach()
            local.connection = pooled.dbapi_connection
            local.cursor = local.connection.cursor()
        return local.cursor

    def _drop_connection(self) -> None:
        local = self._local
        connection, local.connection, local.cursor = local.connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already broken: nothing left to release
                log.debug("SCIM fast lane could not close its connection", exc_info=True)

    def _record(self, environ: dict[str, Any], caller: Caller, rid: str, started: float, body: bytes) -> None:
        assert self.request_log is not None
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        self.request_log.record(
            Captured(
                tenant_id=caller.tenant_id,
                token_id=caller.token_id,
                finished_at=datetime.now(UTC),
                duration=time.perf_counter() - started,
                method="GET",
                path=PATH,
                query=environ["QUERY_STRING"],
                status=200,
                user_agent=environ.get("HTTP_USER_AGENT"),
                client=client_address(environ.get("REMOTE_ADDR"), [forwarded] if forwarded else [], self.proxies),
                request_id=rid,
                request_body=b"",
                response_body=body,
            )
        )

    def _observe(self, started: float) -> None:
        if self._metrics is None:
            # The label children, looked up once (in the serving process, after any fork).
            self._metrics = RequestMetrics(ROUTE, "GET", 200)
        self._metrics.observe(started)


def _parameters(query_string: str) -> dict[str, str] | None:
    """The query string as a dict; None when a name repeats. One `filter=` parameter, which is
    what identity providers send, is decoded the way `parse_qsl` would without its general loop."""
    if "&" not in query_string and query_string.startswith("filter="):
        return {"filter": unquote(query_string[7:].replace("+", " "))}
    pairs = parse_qsl(query_string, keep_blank_values=True, strict_parsing=True)
    params = dict(pairs)
    return params if len(params) == len(pairs) else None
