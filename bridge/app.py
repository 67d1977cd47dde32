"""Flask app factory: health endpoints here; SCIM, activation pages and metrics register blueprints."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any

from flask import Flask, Response, abort, g, jsonify, request
from sqlalchemy.exc import OperationalError

from bridge.config import metrics_token
from bridge.http import log_request, observe_request, request_id
from bridge.logs import access_log, correlation_id
from bridge.runtime import Runtime
from bridge.store.db import describe_database, file_problem, is_current, ping

log = logging.getLogger(__name__)

# Oversized bodies up to this size are read and discarded before the 413 (see below).
_DRAIN_LIMIT = 16 * 1024 * 1024


def _buffer_chunked_body(environ: dict[str, Any], limit: int) -> None:
    """A chunked body, read here up to the limit: werkzeug reads a body without Content-Length
    only when the server sets `wsgi.input_terminated` (granian and waitress do not), and then
    saw an empty body (a 400 for bad JSON, where an over-long body deserves its 413)."""
    import io

    stream = environ["wsgi.input"]
    data = bytearray()
    while len(data) <= limit:
        chunk = stream.read(min(65536, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        abort(413)
    environ["wsgi.input"] = io.BytesIO(bytes(data))
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    request.__dict__.pop("content_length", None)  # werkzeug caches it on first access


def create_app(runtime: Runtime) -> Flask:
    app = Flask("bridge", static_folder=None)  # no /static route: every page inlines what it needs
    app.config["MAX_CONTENT_LENGTH"] = int(runtime.config.server["max_body_bytes"])
    app.extensions["bridge"] = runtime
    scrape_token = metrics_token(runtime.config)
    logs_access = bool(runtime.config.server["access_log"])
    if logs_access:
        # Its own level: `access_log = true` shows requests whatever [logging] level says.
        access_log.setLevel(logging.INFO)

    @app.before_request
    def _start_request() -> None:
        g.started = time.perf_counter()
        # An id per request, echoed in X-Request-ID, carried by the audit events it causes
        # (ApplyContext.correlation_id) and by its log lines.
        g.request_id = request_id(request.headers.get("X-Request-ID", ""))
        g.correlation_token = correlation_id.set(g.request_id)

    @app.before_request
    def _refuse_oversized_body() -> None:
        length = request.content_length
        if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            _buffer_chunked_body(request.environ, app.config["MAX_CONTENT_LENGTH"])
            return
        if length is None or length <= app.config["MAX_CONTENT_LENGTH"]:
            return
        # gunicorn drains at most 64 KiB of an unread body and then drops the keep-alive
        # connection without saying so; an identity provider's next request on it fails. Reading
        # (and discarding) a moderately oversized body keeps the connection usable for the 413.
        if length <= _DRAIN_LIMIT:
            stream = request.environ["wsgi.input"]
            remaining = length
            while remaining > 0:
                chunk = stream.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        abort(413)

    @app.after_request
    def _finish_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        observe_request(route, request.method, response.status_code, g.get("started"))
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if logs_access:
            _log_request(response.status_code)
        return response

    @app.teardown_request
    def _reset_correlation(_exc: BaseException | None) -> None:
        token = g.pop("correlation_token", None)
        if token is not None:
            correlation_id.reset(token)

    @app.get("/metrics")
    def metrics() -> Any:
        from bridge.metrics import render

        if scrape_token is not None and not _bearer_matches(request.headers.get("Authorization"), scrape_token):
            return Response(
                "a bearer token is required for /metrics\n",
                status=401,
                content_type="text/plain; charset=utf-8",
                headers={"WWW-Authenticate": 'Bearer realm="bridge metrics"'},
            )
        body, content_type = render(runtime)
        return Response(body, content_type=content_type)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    reported: dict[str, str] = {}

    @app.get("/readyz")
    def readyz() -> Any:
        # A SQLite file deleted or replaced under the server: its connections still answer from
        # the old inode, so "SELECT 1" alone would call that ready. The path is for the log: the
        # endpoint is public.
        problem = file_problem(runtime.engine)
        if problem is not None:
            reason = f"the database file {problem} after bridge opened it; restart bridge"
            if reported.get("file") != problem:  # once, not on every probe
                reported["file"] = problem
                log.error("not ready: %s (%s)", reason, describe_database(runtime.engine.url))
            return jsonify(status="unavailable", database=reason), 503
        try:
            ping(runtime.engine)
            current = is_current(runtime.engine)
        except Exception as exc:  # any database failure means "not ready", never a 500 page
            return jsonify(status="unavailable", database=type(exc).__name__), 503
        if not current:
            return jsonify(status="unavailable", database="migrations pending: run bridge db upgrade"), 503
        return jsonify(status="ok")

    def _database_down(error: Exception) -> Any:
        # The pages and /api/v1 meet a database that is down (or a file deleted under bridge)
        # as the SCIM door does: 503 with Retry-After and one log line, never a 500 and a trace.
        # The SCIM blueprint's own handlers answer its routes in SCIM's error format first.
        log.error("request failed on the database: %s", " ".join(str(getattr(error, "orig", error)).split()))
        body = "the database is unavailable; retry later\n"
        if request.path.startswith("/api/"):
            response = jsonify(error="database_unavailable", detail=body.strip())
        else:
            response = Response(body, content_type="text/plain; charset=utf-8")
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response

    app.register_error_handler(OperationalError, _database_down)
    app.register_error_handler(runtime.engine.dialect.loaded_dbapi.OperationalError, _database_down)

    _register_optional(app, runtime)
    return app


# Probes and scrapes come every few seconds and have their own counters in /metrics: logged only
# when they fail, so the access log shows what clients did.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def _log_request(status: int) -> None:
    rule = request.url_rule
    if rule is not None and rule.rule in _QUIET_ROUTES and status < 400:
        return
    # A secret in the path (an activation link's token) is logged as the rule's placeholder.
    path = rule.rule if rule is not None and "token" in (request.view_args or {}) else request.path
    log_request(
        request.method,
        path,
        request.query_string.decode("latin-1"),
        status,
        g.get("started", time.perf_counter()),
        # Set once the SCIM door, or the product API, has authenticated the request.
        g.get("scim_caller") or g.get("api_caller"),
        g.get("request_id", ""),
    )


def _bearer_matches(header: str | None, expected: str) -> bool:
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    given = given.strip()
    # Digests of equal length, compared in constant time: neither the token nor its length leaks.
    return secrets.compare_digest(
        hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
        hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest(),
    )


def _register_optional(app: Flask, runtime: Runtime) -> None:
    """The doors: activation pages, the product API, SCIM. Imported here, not at the top, so that
    a process that only needs the app's plumbing (a test, the fast lane) does not load them all."""
    from bridge.scim.blueprint import register as register_scim
    from bridge.web.activation import register as register_activation
    from bridge.web.api import register as register_api
    from bridge.web.console import register as register_console

    register_activation(app, runtime)
    register_console(app, runtime)
    register_api(app, runtime)
    register_scim(app, runtime)
