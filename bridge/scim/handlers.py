"""The SCIM door's plumbing, shared by the User and Group handlers: who calls (the token),
one read or one write transaction per request, the write's retry on a concurrent unique clash,
If-Match, and the rendering of a response or an error.

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

from flask import Response, g, request
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from bridge.config import TenantConfig
from bridge.engine.guard import ScimGuard
from bridge.errors import ConfigError
from bridge.provision.apply import ApplyContext
from bridge.provision.replan import TenantView, replan, replan_waiting, room_freed, tenant_view
from bridge.runtime import Runtime
from bridge.scim import inbound, quirks
from bridge.scim.auth import Caller, authenticate, require_write
from bridge.scim.errors import ScimError, invalid_value, not_found, uniqueness
from bridge.scim.query import projection_of
from bridge.scim.resources import Projection, canonical, check_schemas, etag, require, scim_json
from bridge.scim.schema import ResourceType
from bridge.store import scim as storage
from bridge.store.db import transaction
from bridge.store.fast import raw_cursor

log = logging.getLogger(__name__)
T = TypeVar("T")
SCIM_JSON = "application/scim+json"
REPLAN_CHUNK = 500


class Handlers:
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
                    ctx = ApplyContext.for_tenant(
                        self.runtime.config,
                        caller.tenant_id,
                        caller.tenant_name,
                        actor=caller.actor,
                        correlation_id=correlation[:64],
                        now=datetime.now(UTC),
                    )
                    done = work(conn, caller, ctx, tenant_view(conn, config))
            except DBAPIError as exc:
                if not (unique_violation(exc) or deadlock(exc)):
                    raise
                # A concurrent writer got there first (same userName, same membership), or
                # PostgreSQL broke a lock cycle (the SCIM guard locks the tenant's window in
                # the middle of a write that may hold a person another write needs): the retry
                # sees its commit and answers from it; a second clash is a real conflict.
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

    def resource_body(self, rt: ResourceType) -> tuple[Any, dict[str, Any]]:
        """The request's resource (POST, PUT): its body, and its canonical form checked against
        the schemas of `rt`, with the attributes it requires present."""
        body = self.body()
        check_schemas(body, rt)
        doc = canonical(body, rt)
        require(doc, rt)
        return body, doc

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

    def replan(self, conn: Connection, view: TenantView, ctx: ApplyContext, anchors: Sequence[str]) -> None:
        if view.paused:
            return  # the identities are stored; resuming the tenant plans them (engine.pause)
        guard = self.guard(view, ctx)
        for start in range(0, len(anchors), REPLAN_CHUNK):
            chunk = list(anchors[start : start + REPLAN_CHUNK])
            plan = replan(conn, view, storage.SOURCE, chunk, ctx, guard=guard)
            if room_freed(plan.accounts, view):
                g.scim_room_freed = True

    def guard(self, view: TenantView, ctx: ApplyContext) -> ScimGuard:
        """The SCIM guard of this write: a deprovisioning past the tenant's window is held, not
        applied; the write still succeeds and stores the identity as sent (engine.guard)."""
        return ScimGuard(self.runtime.config, view, ctx)

    def projection(self, rt: ResourceType) -> Projection:
        return projection_of(rt, request.args)


# ---- helpers -----------------------------------------------------------------------------------


def unique_violation(exc: DBAPIError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or str(orig).startswith("UNIQUE constraint failed")


def deadlock(exc: DBAPIError) -> bool:
    """PostgreSQL's deadlock detector aborted this transaction (the other one goes on)."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"


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
