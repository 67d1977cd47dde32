"""The SCIM HTTP adapter: parse the request, run one transaction, render. Mounted at /scim/v2.

Every write is one transaction: the identity rows change, then the affected people are re-planned
through the core (`replan`), whose account changes, audit events and outbox rows commit with it.
Any error rolls the whole request back, so a failed request leaves nothing behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, g, request
from sqlalchemy import Connection
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bridge.config import TenantConfig
from bridge.errors import BridgeError, ConfigError, Conflict, InvalidValue
from bridge.http import NO_STORE
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import TenantView, replan, replan_waiting, room_freed, scim_delete, tenant_view
from bridge.runtime import Runtime
from bridge.scim import discovery, inbound, quirks
from bridge.scim.auth import Caller, authenticate, require_write
from bridge.scim.errors import ScimError, invalid_syntax, invalid_value, not_found, uniqueness
from bridge.scim.lookup import fast_user_lookup
from bridge.scim.patch import MemberOp, apply_patch, check_immutable, matches, prepare_patch
from bridge.scim.query import Query, projection_of
from bridge.scim.resources import (
    Projection,
    canonical,
    check_schemas,
    etag,
    list_response,
    render_group,
    render_user,
    require,
    scim_json,
    source_user,
)
from bridge.scim.schema import ACCOUNT, GROUP_TYPE, SCHEMAS, SEARCH_REQUEST, USER_TYPE, ResourceType
from bridge.store import scim as storage
from bridge.store.db import transaction
from bridge.store.fast import raw_cursor
from bridge.store.ids import new_id

log = logging.getLogger(__name__)
T = TypeVar("T")
SCIM_JSON = "application/scim+json"
REPLAN_CHUNK = 500


class ScimApi:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.base_url = runtime.config.server["public_url"].rstrip("/") + "/scim/v2"

    # ---- plumbing ------------------------------------------------------------------------
    @property
    def caller(self) -> Caller:
        caller: Caller | None = g.get("scim_caller")
        if caller is None:
            header = request.headers.get("Authorization")
            if request.method == "GET":
                caller = authenticate(self.cursor(), self.runtime.engine.dialect, header)
            else:
                # Writes open their own transaction: the lookup's connection goes back at once.
                with raw_cursor(self.runtime.engine) as cursor:
                    caller = authenticate(cursor, self.runtime.engine.dialect, header)
            g.scim_caller = caller
        return caller

    def cursor(self) -> Any:
        """A GET's DB-API cursor (bridge/store/fast.py), shared by authentication and the
        lookup: one pool checkout per request, returned by `close_cursor` at teardown."""
        cursor = g.get("scim_cursor")
        if cursor is None:
            connection = g.scim_connection = self.runtime.engine.raw_connection()
            cursor = g.scim_cursor = connection.cursor()
        return cursor

    @staticmethod
    def close_cursor() -> None:
        cursor, connection = g.pop("scim_cursor", None), g.pop("scim_connection", None)
        try:
            if cursor is not None:
                cursor.close()
        finally:
            if connection is not None:
                connection.close()  # back to the pool, which rolls it back

    def tenant_config(self, name: str) -> TenantConfig:
        # A tenant without a mapping (added with `bridge tenants add`, or declared without
        # `mappings`) still accepts SCIM writes: identities are stored and accounts exist as
        # no_access (no rule grants anything) until a mapping is configured.
        config = self.runtime.config.tenant_settings(name)
        try:
            config.mapping()
        except ConfigError as exc:
            # Checked at start (bridge.config.check_mappings); this is a worker that loaded the
            # file after it was broken. The detail (a server path, the file's text) is for the
            # log, never for the client.
            log.error("SCIM request for tenant %s: its mapping cannot be used: %s", name, exc)
            raise ScimError(500, "this tenant's mapping cannot be used; the server log has the detail") from None
        return config

    def read(self, work: Callable[[Connection, Caller], T]) -> T:
        caller = self.caller
        with transaction(self.runtime.engine, write=False) as conn:
            return work(conn, caller)

    def write(self, work: Callable[[Connection, Caller, ApplyContext, TenantView], T]) -> T:
        caller = self.caller
        require_write(caller)
        config = self.tenant_config(caller.tenant_name)
        # The request's id (bridge.http.request_id: the client's X-Request-ID when usable), so
        # the audit events, the log lines and the response header all carry the same one.
        correlation = g.get("request_id") or f"req-{uuid.uuid4().hex[:16]}"
        for attempt in (1, 2):
            g.scim_room_freed = False
            try:
                with transaction(self.runtime.engine) as conn:
                    ctx = ApplyContext(
                        tenant_id=caller.tenant_id,
                        tenant_name=caller.tenant_name,
                        actor=caller.actor,
                        correlation_id=correlation[:64],
                        now=datetime.now(UTC),
                        webhooks=bool(self.runtime.config.webhook.get("url")),
                        default_language=config.default_language,
                    )
                    done = work(conn, caller, ctx, tenant_view(conn, config))
            except IntegrityError as exc:
                if not unique_violation(exc):
                    raise
                # A concurrent writer got there first (same userName, same membership): the
                # retry sees its commit and answers from it; a second clash is a real conflict.
                log.info("SCIM write conflict (attempt %d): %s", attempt, exc.orig)
                if attempt == 2:
                    raise uniqueness("conflicting concurrent change; retry") from None
                continue
            if g.scim_room_freed:
                # The write gave up a seat or a limited role (a DELETE, active:false, a group
                # left): whoever waits for it gets it now, in a transaction of its own, of any
                # source. Never fails the request, which is committed.
                replan_waiting(self.runtime.engine, config, ctx)
            return done
        raise AssertionError("unreachable")

    def body(self) -> Any:
        return inbound.body(request.get_data(cache=True))  # raises 413 past MAX_CONTENT_LENGTH

    def locked(self, conn: Connection, caller: Caller, kind: str, anchor: str) -> Any:
        """The resource a write changes, locked for the transaction; 404 if it is not this
        tenant's, 412 if `If-Match` names another version."""
        row = storage.get(conn, caller.tenant_id, kind, anchor, lock=True)
        if row is None:
            raise not_found("User" if kind == "user" else "Group", anchor)
        self.if_match(row_etag(row))
        return row

    def if_match(self, current: str) -> None:
        wanted = request.headers.get("If-Match")
        if wanted is None:
            return
        tags = {t.strip() for t in wanted.split(",")}
        if "*" not in tags and current not in tags and current.removeprefix("W/") not in tags:
            raise ScimError(412, "the resource changed since the version in If-Match")

    # ---- users ---------------------------------------------------------------------------
    def render_users(
        self, conn: Connection, rows: Sequence[Any], projection: Projection, *, new: bool = False
    ) -> list[dict[str, Any]]:
        caller = self.caller
        anchors = [r.anchor for r in rows]
        groups = (
            storage.groups_of(conn, caller.tenant_id, anchors, self.base_url)
            if (rows and not new and projection.wants("groups"))
            else {}
        )
        # Product state (the Account extension) is the product's view: read-only tokens get it by
        # default; an identity provider's token gets what it provisioned, plus the extension
        # only when it asks for it with `attributes` (it never writes it).
        wanted = projection.wants(ACCOUNT) if caller.read_only else projection.names(ACCOUNT)
        roles = storage.roles_of(conn, [r.id for r in rows]) if rows and wanted else None
        return [
            render_user(
                r, self.base_url, groups.get(r.anchor), roles.get(r.id, []) if roles is not None else None, projection
            )
            for r in rows
        ]

    def user(
        self, conn: Connection, anchor: str, projection: Projection, *, new: bool = False
    ) -> tuple[dict[str, Any], str]:
        row = storage.get(conn, self.caller.tenant_id, "user", anchor)
        if row is None:
            raise not_found("User", anchor)
        return self.render_users(conn, [row], projection, new=new)[0], row_etag(row)

    def replan(self, conn: Connection, view: TenantView, ctx: ApplyContext, anchors: Sequence[str]) -> None:
        for start in range(0, len(anchors), REPLAN_CHUNK):
            plan = replan(conn, view, storage.SOURCE, list(anchors[start : start + REPLAN_CHUNK]), ctx)
            if room_freed(plan.accounts, view):
                g.scim_room_freed = True

    def create_user(self) -> Response:
        body = self.body()
        check_schemas(body, USER_TYPE)
        doc = canonical(body, USER_TYPE)
        require(doc, USER_TYPE)
        projection = self.projection(USER_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            storage.ensure_unique_name(conn, caller.tenant_id, "user", doc["userName"], None)
            anchor = new_id()
            storage.write_user(conn, caller.tenant_id, anchor, doc, ctx.now, create=True, identity_of=source_user)
            self.replan(conn, view, ctx, [anchor])
            return self.user(conn, anchor, projection, new=True)

        resource, tag = self.write(work)
        return respond(resource, 201, {"Location": resource["meta"]["location"], "ETag": tag})

    def replace_user(self, anchor: str) -> Response:
        body = self.body()
        check_schemas(body, USER_TYPE)
        doc = canonical(body, USER_TYPE)
        require(doc, USER_TYPE)
        if isinstance(body.get("id"), str) and body["id"] != anchor:
            raise ScimError(400, '"id" is read-only and differs from the URL', "mutability")
        projection = self.projection(USER_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            row = self.locked(conn, caller, "user", anchor)
            check_immutable(USER_TYPE, row.resource or {}, doc)
            self.save_user(conn, caller, ctx, view, row, doc)
            return self.user(conn, anchor, projection)

        resource, tag = self.write(work)
        return respond(resource, 200, {"ETag": tag})

    def save_user(
        self, conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView, row: Any, doc: dict[str, Any]
    ) -> None:
        if doc == (row.resource or {}):
            return  # nothing changed: no new version, no re-plan
        storage.ensure_unique_name(conn, caller.tenant_id, "user", doc["userName"], row.anchor)
        storage.write_user(conn, caller.tenant_id, row.anchor, doc, ctx.now, create=False, identity_of=source_user)
        self.replan(conn, view, ctx, [row.anchor])

    def patch_user(self, anchor: str) -> Response:
        body = prepare_patch(USER_TYPE, self.body())  # parsed before the write lock is taken
        projection = self.projection(USER_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            row = self.locked(conn, caller, "user", anchor)
            result = apply_patch(USER_TYPE, row.resource or {}, body)
            require(result.doc, USER_TYPE)
            self.save_user(conn, caller, ctx, view, row, result.doc)
            return self.user(conn, anchor, projection)

        resource, tag = self.write(work)
        return respond(resource, 200, {"ETag": tag})

    def delete_user(self, anchor: str) -> Response:
        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> None:
            self.locked(conn, caller, "user", anchor)
            plan = scim_delete(conn, view, anchor, ctx)
            if plan is not None and room_freed([plan], view):
                g.scim_room_freed = True  # what it held may be what someone waits for
            storage.mark_deleted(conn, caller.tenant_id, anchor, ctx.now)

        self.write(work)
        return Response(status=204)

    # ---- groups --------------------------------------------------------------------------
    def render_groups(self, conn: Connection, rows: Sequence[Any], projection: Projection) -> list[dict[str, Any]]:
        want_members = projection.wants("members")
        return [
            render_group(
                r,
                self.base_url,
                storage.members_of(conn, self.caller.tenant_id, r.anchor, self.base_url) if want_members else None,
                projection,
            )
            for r in rows
        ]

    def group(self, conn: Connection, anchor: str, projection: Projection) -> tuple[dict[str, Any], str]:
        row = storage.get(conn, self.caller.tenant_id, "group", anchor)
        if row is None:
            raise not_found("Group", anchor)
        return self.render_groups(conn, [row], projection)[0], row_etag(row)

    def name_rules_apply(self, view: TenantView) -> bool:
        mapping = view.config.mapping()
        return bool(mapping.external_groups) or any(r.kind in ("group_name", "group_pattern") for r in mapping.rules)

    def check_members(self, conn: Connection, caller: Caller, ids: Sequence[str], group_anchor: str) -> None:
        found = storage.kinds(conn, caller.tenant_id, ids)
        missing = [i for i in ids if i not in found]
        if missing:
            # Another tenant's ids are unknown here, exactly like ids that never existed.
            raise invalid_value(f"no User or Group with id {missing[0]} in this tenant")
        if group_anchor in ids:
            raise invalid_value("a group cannot be a member of itself")

    def apply_members(self, conn: Connection, caller: Caller, anchor: str, ops: Sequence[MemberOp]) -> set[str]:
        """Carry out member operations row by row; returns the ids whose membership changed."""
        changed: set[str] = set()
        listed: list[dict[str, Any]] | None = None  # the members, while only filtered removals run
        for op in ops:
            if op.kind != "remove_filter":
                listed = None
            if op.kind == "add":
                self.check_members(conn, caller, op.ids, anchor)
                changed |= set(storage.add_members(conn, caller.tenant_id, anchor, op.ids))
            elif op.kind == "remove":
                changed |= set(storage.remove_members(conn, caller.tenant_id, anchor, op.ids))
            elif op.kind == "remove_all":
                changed |= set(storage.remove_members(conn, caller.tenant_id, anchor, None))
            elif op.kind == "replace":
                self.check_members(conn, caller, op.ids, anchor)
                current = storage.member_anchors(conn, caller.tenant_id, anchor)
                wanted = set(op.ids)
                changed |= set(storage.remove_members(conn, caller.tenant_id, anchor, sorted(current - wanted)))
                changed |= set(
                    storage.add_members(conn, caller.tenant_id, anchor, [i for i in op.ids if i not in current])
                )
            elif op.kind == "remove_filter":
                from bridge.scim.schema import GROUP_SCHEMA

                members_attr = GROUP_SCHEMA.attr("members")
                assert members_attr is not None and op.filter is not None
                # Read once for a run of filtered removals (Entra sends hundreds in one PATCH),
                # and kept current by dropping what each one removes.
                if listed is None:
                    listed = storage.members_of(conn, caller.tenant_id, anchor, self.base_url)
                hits = [m["value"] for m in listed if matches(op.filter, m, members_attr)]
                if hits:
                    gone = set(hits)
                    listed = [m for m in listed if m["value"] not in gone]
                    changed |= set(storage.remove_members(conn, caller.tenant_id, anchor, hits))
                continue
        return changed

    def create_group(self) -> Response:
        body = self.body()
        check_schemas(body, GROUP_TYPE)
        doc = canonical(body, GROUP_TYPE)
        require(doc, GROUP_TYPE)
        ids = members_in(body)
        projection = self.projection(GROUP_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            storage.ensure_unique_name(conn, caller.tenant_id, "group", doc["displayName"], None)
            anchor = new_id()
            storage.write_group(conn, caller.tenant_id, anchor, doc, ctx.now, create=True)
            if ids:
                self.check_members(conn, caller, ids, anchor)
                added = storage.add_members(conn, caller.tenant_id, anchor, ids)
                self.replan(conn, view, ctx, storage.users_under(conn, caller.tenant_id, added))
            return self.group(conn, anchor, projection)

        resource, tag = self.write(work)
        return respond(resource, 201, {"Location": resource["meta"]["location"], "ETag": tag})

    def save_group(
        self,
        conn: Connection,
        caller: Caller,
        ctx: ApplyContext,
        view: TenantView,
        row: Any,
        doc: dict[str, Any],
        ops: Sequence[MemberOp],
    ) -> bool:
        """Returns whether the group got a new version."""
        renamed = doc["displayName"] != row.name
        if renamed:
            storage.ensure_unique_name(conn, caller.tenant_id, "group", doc["displayName"], row.anchor)
        changed = self.apply_members(conn, caller, row.anchor, ops)
        wrote = doc != (row.resource or {}) or bool(changed)
        if doc != (row.resource or {}):
            storage.write_group(conn, caller.tenant_id, row.anchor, doc, ctx.now, create=False)
        elif changed:
            storage.touch(conn, caller.tenant_id, row.anchor, ctx.now)
        affected = set(storage.users_under(conn, caller.tenant_id, changed)) if changed else set()
        if renamed and self.name_rules_apply(view):
            affected |= set(storage.users_under(conn, caller.tenant_id, [row.anchor]))
        self.replan(conn, view, ctx, sorted(affected))
        return wrote

    def patch_group(self, anchor: str) -> Response:
        body = prepare_patch(GROUP_TYPE, self.body())  # parsed before the write lock is taken
        projection = self.projection(GROUP_TYPE)
        explicit = bool(request.args.get("attributes") or request.args.get("excludedAttributes"))

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            row = self.locked(conn, caller, "group", anchor)
            result = apply_patch(GROUP_TYPE, row.resource or {}, body)
            require(result.doc, GROUP_TYPE)
            wrote = self.save_group(conn, caller, ctx, view, row, result.doc, result.members)
            if explicit:
                return self.group(conn, anchor, projection)
            # The row is locked by this transaction: its new version is known without a re-read.
            return None, etag(row.version + 1 if wrote else row.version)

        resource, tag = self.write(work)
        if resource is None:
            # Entra: group PATCH "should return 204" rather than every member (use-scim
            # "/Groups"); RFC 7644 3.5.2 allows it. Asking for attributes gets the body.
            return Response(status=204, headers={"ETag": tag})
        return respond(resource, 200, {"ETag": tag})

    def replace_group(self, anchor: str) -> Response:
        body = self.body()
        check_schemas(body, GROUP_TYPE)
        doc = canonical(body, GROUP_TYPE)
        require(doc, GROUP_TYPE)
        ids = members_in(body)
        projection = self.projection(GROUP_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            row = self.locked(conn, caller, "group", anchor)
            self.save_group(conn, caller, ctx, view, row, doc, [MemberOp("replace", tuple(ids))])
            return self.group(conn, anchor, projection)

        resource, tag = self.write(work)
        return respond(resource, 200, {"ETag": tag})

    def delete_group(self, anchor: str) -> Response:
        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> None:
            self.locked(conn, caller, "group", anchor)
            affected = storage.users_under(conn, caller.tenant_id, [anchor])
            storage.delete_group(conn, caller.tenant_id, anchor, caller.actor, ctx.correlation_id, ctx.now)
            self.replan(conn, view, ctx, affected)

        self.write(work)
        return Response(status=204)

    # ---- queries -------------------------------------------------------------------------
    def projection(self, rt: ResourceType) -> Projection:
        return projection_of(rt, request.args)

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


# ---- helpers -----------------------------------------------------------------------------------


def unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or str(orig).startswith("UNIQUE constraint failed")


def row_etag(row: Any) -> str:
    # A User's version includes its account's (status and roles change outside SCIM too).
    return etag(row.version, getattr(row, "account_version", None))


def members_in(body: dict[str, Any]) -> list[str]:
    value = next((v for k, v in body.items() if k.casefold() == "members"), None)
    if value is None:
        return []
    ids = quirks.member_values(value)
    if ids is None:
        raise invalid_value('"members" must be a list of objects with a "value"')
    return list(dict.fromkeys(ids))


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(scim_json(body), status=status, headers=headers, content_type=SCIM_JSON)


def error_response(error: ScimError) -> Response:
    body = error.to_json()
    request_id = g.get("request_id")
    if request_id:
        # In `detail`, not a member of its own: strict clients refuse members the Error schema
        # does not define (scim2-tester does). An administrator quotes it to find the log lines.
        body["detail"] = f"{body['detail']} (request id {request_id})"
    return respond(body, error.status, error.headers)


# ---- routes ------------------------------------------------------------------------------------


def register(app: Flask, runtime: Runtime) -> None:
    from bridge.scim.fastlane import FastLane

    api = ScimApi(runtime)
    app.wsgi_app = FastLane(  # type: ignore[method-assign]
        app.wsgi_app, runtime.engine, api.base_url, access_log=bool(runtime.config.server["access_log"])
    )
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

    @bp.teardown_request
    def _close_cursor(_error: BaseException | None) -> None:
        api.close_cursor()

    @bp.after_request
    def _no_store(response: Response) -> Response:
        response.headers.setdefault(*NO_STORE)
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
        raise ScimError(404, f"no SCIM endpoint at {request.path}")

    app.register_blueprint(bp)


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
