"""The SCIM HTTP adapter mounted at /scim/v2: the URL rules (one table in `register`), the
searches, and the WSGI fast lane in front of them. The handlers are in `users`, `groups` and
`handlers` (their shared plumbing).
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy import Connection
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from bridge.errors import BridgeError, Conflict, InvalidValue
from bridge.http import NO_STORE
from bridge.runtime import Runtime
from bridge.scim import discovery
from bridge.scim.auth import Caller, require_write
from bridge.scim.errors import ScimError, invalid_syntax, invalid_value, uniqueness
from bridge.scim.groups import GroupHandlers
from bridge.scim.handlers import (
    error_response,
    respond,
)
from bridge.scim.lookup import fast_user_lookup
from bridge.scim.query import Query
from bridge.scim.requestlog import Captured, RequestLog
from bridge.scim.resources import (
    list_response,
)
from bridge.scim.schema import GROUP_TYPE, SCHEMAS, SEARCH_REQUEST, USER_TYPE, ResourceType
from bridge.scim.users import UserHandlers
from bridge.web.client import current_client

log = logging.getLogger(__name__)


class ScimApi(UserHandlers, GroupHandlers):
    """Every SCIM handler, for the routes."""

    def search(self, rt: ResourceType, params: dict[str, Any]) -> dict[str, Any]:
        query = Query.parse(rt, params, self.caller.tenant_id)
        kind = "user" if rt is USER_TYPE else "group"
        if kind == "user":
            found = fast_user_lookup(self.cursor(), self.runtime.engine.dialect, self.caller, query, self.base_url)
            if found is not None:
                return found

        def work(conn: Connection, caller: Caller) -> dict[str, Any]:
            rows, total = query.run(conn, caller.tenant_id, kind)
            render = self.render_users if kind == "user" else self.render_groups
            return list_response(render(conn, rows, query.projection), total, query.start)

        return self.read(work)

    def search_all(self, params: dict[str, Any]) -> dict[str, Any]:
        """POST /.search at the root: Users then Groups (RFC 7644 3.4.3)."""
        queries: list[tuple[ResourceType, Query]] = []
        errors: list[ScimError] = []
        for rt in (USER_TYPE, GROUP_TYPE):
            try:
                queries.append((rt, Query.parse(rt, params, self.caller.tenant_id)))
            except ScimError as exc:
                if exc.scim_type != "invalidFilter":
                    raise
                errors.append(exc)
        if not queries:
            raise errors[0]

        def work(conn: Connection, caller: Caller) -> dict[str, Any]:
            resources: list[dict[str, Any]] = []
            total = 0
            start, count = queries[0][1].start, queries[0][1].count
            skip = start - 1
            for rt, query in queries:
                kind = "user" if rt is USER_TYPE else "group"
                n = query.total(conn, caller.tenant_id, kind)
                total += n
                room = count - len(resources)
                if room > 0 and skip < n:
                    rows, _ = query.run(conn, caller.tenant_id, kind, offset=skip, limit=room)
                    render = self.render_users if kind == "user" else self.render_groups
                    resources.extend(render(conn, rows, query.projection))
                skip = max(skip - n, 0)
            return list_response(resources, total, start)

        return self.read(work)


# ---- routes ------------------------------------------------------------------------------------


def register(app: Flask, runtime: Runtime) -> None:
    from bridge.scim.fastlane import FastLane

    api = ScimApi(runtime)
    request_log = RequestLog(runtime.engine)
    app.wsgi_app = FastLane(  # type: ignore[method-assign]
        app.wsgi_app,
        runtime.engine,
        api.base_url,
        access_log=bool(runtime.config.server["access_log"]),
        request_log=request_log,
        proxies=runtime.config.server.get("trusted_proxies") or (),
    )
    app.extensions["bridge.scim_request_log"] = request_log
    bp = Blueprint("scim", __name__, url_prefix="/scim/v2")
    types = {"Users": USER_TYPE, "Groups": GROUP_TYPE}

    search_endpoints = {"scim.search", "scim.search_root"}
    discovery_endpoints = {"scim.spc", "scim.resource_types", "scim.resource_type", "scim.schemas", "scim.schema"}

    @bp.before_request
    def _authenticate() -> None:
        # Authentication before anything is parsed, so an anonymous client learns nothing
        # from validation errors; read-only tokens fail on writes before their body is read.
        if request.endpoint in discovery_endpoints:
            return
        caller = api.caller
        caller.note_use(api.runtime.engine)
        # Keyed on the endpoint, not the path: `PUT /Users/.search` is a write on a resource.
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.endpoint not in search_endpoints:
            require_write(caller)

    @bp.errorhandler(ScimError)
    def _scim_error(error: ScimError) -> Response:
        return error_response(error)

    @bp.errorhandler(RequestEntityTooLarge)
    def _too_large(_: Exception) -> Response:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        # The unread body is still on the socket: close it so the client does not reuse it.
        return error_response(
            ScimError(413, f"the request body is larger than {limit} bytes", headers={"Connection": "close"})
        )

    @bp.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        return error_response(ScimError(error.code or 500, error.description or error.name))

    @bp.errorhandler(DataError)
    def _data(error: DataError) -> Response:
        # A value the columns cannot hold slipped past validation: the client's data, not a crash.
        log.warning("SCIM value refused by the database: %s", error.orig)
        return error_response(invalid_value("a value is too long or malformed for bridge to store"))

    @bp.errorhandler(OperationalError)
    def _database(error: OperationalError) -> Response:
        log.error("SCIM request failed on the database: %s", error.orig)
        return error_response(ScimError(503, "the database is unavailable; retry later", headers={"Retry-After": "5"}))

    # raw_connection() (authentication, the GET lookups) raises the driver's own error when a
    # connection cannot be opened (PostgreSQL down): the same 503, not an "unexpected" 500.
    @bp.errorhandler(runtime.engine.dialect.loaded_dbapi.OperationalError)
    def _driver_database(error: Exception) -> Response:
        log.error("SCIM request failed on the database: %s", " ".join(str(error).split()))
        return error_response(ScimError(503, "the database is unavailable; retry later", headers={"Retry-After": "5"}))

    @bp.errorhandler(Conflict)
    def _conflict(error: Conflict) -> Response:
        return error_response(uniqueness(str(error)))

    @bp.errorhandler(InvalidValue)
    def _invalid(error: InvalidValue) -> Response:
        return error_response(invalid_value(str(error)))

    @bp.errorhandler(BridgeError)
    def _bridge(error: BridgeError) -> Response:
        # The message may name a file or a config key: it goes to the log, and the client gets
        # the request id to quote (contract: no server path or config text in an error body).
        log.error("SCIM request failed: %s", error)
        return error_response(ScimError(500, "the request could not be carried out; the server log has the detail"))

    @bp.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unexpected error in a SCIM request")
        return error_response(ScimError(500, "internal error; the request was not applied"))

    @app.errorhandler(NotFound)
    def _unrouted(error: NotFound) -> Response | NotFound:
        # A path no URL rule can match (a newline in `/Schemas/<urn>`: werkzeug's path converter
        # stops at it, the catch-all below too) never reaches the blueprint's handlers: under
        # /scim/v2 it is still SCIM's 404; anywhere else, Flask's own page.
        if request.path.startswith("/scim/v2/") and request.url_rule is None:
            return error_response(ScimError(404, f"no SCIM endpoint at {request.path}"))
        return error

    @bp.teardown_request
    def _close_cursor(_error: BaseException | None) -> None:
        api.close_cursor()

    @bp.after_request
    def _no_store(response: Response) -> Response:
        response.headers.setdefault(*NO_STORE)
        return response

    @bp.after_request
    def _record(response: Response) -> Response:
        # The tenant's request log (bridge.scim.requestlog): queued, written by another thread;
        # whatever goes wrong here is logged and the answer goes out as built.
        try:
            _record_request(api, request_log, response, discovery=request.endpoint in discovery_endpoints)
        except Exception:
            log.exception("the SCIM request log could not record a request")
        return response

    # -- discovery (no authentication: it describes the server, not a tenant) ---------------
    def discovery_only_get() -> None:
        if request.method != "GET":
            raise ScimError(405, f"{request.method} is not allowed on {request.path}")

    all_methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    def product_view() -> bool:
        """Whether the caller is the product (a read-only token): it sees the Account extension."""
        try:
            return api.caller.read_only if request.headers.get("Authorization") else False
        except ScimError:
            return False

    @bp.route("/ServiceProviderConfig", methods=all_methods)
    def spc() -> Response:
        discovery_only_get()
        return respond(discovery.service_provider_config(api.base_url))

    @bp.route("/ResourceTypes", methods=all_methods)
    def resource_types() -> Response:
        discovery_only_get()
        return respond(discovery.listing(discovery.resource_types(api.base_url, product_view())))

    @bp.route("/ResourceTypes/<name>", methods=all_methods)
    def resource_type(name: str) -> Response:
        discovery_only_get()
        found = next((r for r in discovery.resource_types(api.base_url, product_view()) if r["id"] == name), None)
        if found is None:
            raise ScimError(404, f"no resource type {name}")
        return respond(found)

    @bp.route("/Schemas", methods=all_methods)
    def schemas() -> Response:
        discovery_only_get()
        return respond(discovery.listing(discovery.schemas(api.base_url)))

    @bp.route("/Schemas/<path:urn>", methods=all_methods)
    def schema(urn: str) -> Response:
        discovery_only_get()
        found = SCHEMAS.get(urn)
        if found is None:
            raise ScimError(404, f"no schema {urn}")
        return respond(found.to_json(api.base_url))

    # -- resources ----------------------------------------------------------------------------
    @bp.route("/<any(Users, Groups):endpoint>", methods=["GET", "POST"])
    def collection(endpoint: str) -> Response:
        rt = types[endpoint]
        if request.method == "POST":
            return api.create_user() if rt is USER_TYPE else api.create_group()
        return respond(api.search(rt, request.args))

    @bp.route("/<any(Users, Groups):endpoint>/.search", methods=["POST"])
    def search(endpoint: str) -> Response:
        return respond(api.search(types[endpoint], search_params(api.body())))

    @bp.route("/.search", methods=["POST"])
    def search_root() -> Response:
        return respond(api.search_all(search_params(api.body())))

    @bp.route("/<any(Users, Groups):endpoint>/<resource_id>", methods=["GET", "PUT", "PATCH", "DELETE"])
    def resource(endpoint: str, resource_id: str) -> Response:
        user = endpoint == "Users"
        method = request.method
        if method == "GET":
            rt = USER_TYPE if user else GROUP_TYPE
            projection = api.projection(rt)
            body, tag = api.read(lambda conn, _: (api.user if user else api.group)(conn, resource_id, projection))
            if tag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
                return Response(status=304, headers={"ETag": tag})
            return respond(body, 200, {"ETag": tag})
        if method == "PUT":
            return api.replace_user(resource_id) if user else api.replace_group(resource_id)
        if method == "PATCH":
            return api.patch_user(resource_id) if user else api.patch_group(resource_id)
        return api.delete_user(resource_id) if user else api.delete_group(resource_id)

    @bp.route("/", defaults={"rest": ""}, methods=all_methods)
    @bp.route("/<path:rest>", methods=all_methods)
    def unknown(rest: str) -> Response:
        allowed = next((methods for rule, methods in _METHODS_OF if rule.fullmatch(rest)), None)
        if allowed is not None:
            # A method the resource does not take (DELETE on /Users): RFC 9110 15.5.6, not a 404.
            raise ScimError(405, f"{request.method} is not allowed on {request.path}", headers={"Allow": allowed})
        raise ScimError(404, f"no SCIM endpoint at {request.path}")

    app.register_blueprint(bp)


def _record_request(api: ScimApi, request_log: RequestLog, response: Response, *, discovery: bool) -> None:
    caller: Caller | None = g.get("scim_caller")
    if caller is None and discovery and request.headers.get("Authorization"):
        try:  # discovery needs no token; one that comes with a valid token is its tenant's
            caller = api.caller
        except ScimError:
            caller = None
    if caller is None:
        return  # no tenant to show it to: a bad token's 401, an anonymous discovery request
    status = response.status_code
    if status == 413:
        sent = b""  # the body over the limit was discarded unread
    else:
        try:
            sent = request.get_data(cache=True)
        except Exception:
            sent = b""
    started = g.get("started")
    request_log.record(
        Captured(
            tenant_id=caller.tenant_id,
            token_id=caller.token_id,
            finished_at=datetime.now(UTC),
            duration=time.perf_counter() - started if started is not None else 0.0,
            method=request.method,
            path=request.path,
            query=request.query_string.decode("latin-1"),
            status=status,
            user_agent=request.headers.get("User-Agent"),
            client=current_client(),
            request_id=g.get("request_id", ""),
            request_body=sent,
            response_body=b"" if response.is_streamed else response.get_data(),
        )
    )


# The resource paths the rules above serve, and their methods, for the 405 of any other method.
_METHODS_OF = (
    (re.compile(r"(?:Users|Groups)"), "GET, POST"),
    (re.compile(r"(?:(?:Users|Groups)/)?\.search"), "POST"),
    (re.compile(r"(?:Users|Groups)/[^/]+"), "GET, PUT, PATCH, DELETE"),
)


def search_params(body: Any) -> dict[str, Any]:
    """A SearchRequest body (RFC 7644 3.4.3) as the query parameters of a GET."""
    if not isinstance(body, dict):
        raise invalid_syntax("the request body must be a JSON object")
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or SEARCH_REQUEST not in schemas:
        raise invalid_syntax(f'"schemas" must be ["{SEARCH_REQUEST}"]')
    out: dict[str, Any] = {}
    for key in ("attributes", "excludedAttributes", "filter", "sortBy", "sortOrder", "startIndex", "count"):
        value = next((v for k, v in body.items() if k.casefold() == key.casefold()), None)
        if value is not None:
            out[key] = value
    return out
