"""The /Users handlers: parse the request, one store write and a re-plan of the person
through the core, render. The Account extension (the product's state) is read-only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Response, g
from sqlalchemy import Connection

from bridge.provision.apply import ApplyContext
from bridge.provision.replan import TenantView, room_freed, scim_delete
from bridge.scim.auth import Caller
from bridge.scim.errors import ScimError, not_found
from bridge.scim.handlers import (
    Handlers,
    respond,
    row_etag,
)
from bridge.scim.patch import apply_patch, check_immutable, prepare_patch
from bridge.scim.resources import (
    Projection,
    render_user,
    require,
    source_user,
)
from bridge.scim.schema import ACCOUNT, USER_TYPE
from bridge.store import scim as storage
from bridge.store.ids import new_id


class UserHandlers(Handlers):
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
        roles = storage.roles_of(conn, [r.account_id for r in rows if r.account_id]) if rows and wanted else None
        return [
            render_user(
                r,
                self.base_url,
                groups.get(r.anchor),
                roles.get(r.account_id, []) if roles is not None else None,
                projection,
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

    def create_user(self) -> Response:
        _, doc = self.resource_body(USER_TYPE)
        projection = self.projection(USER_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            storage.ensure_unique_name(conn, caller.tenant_id, "user", doc["userName"], None)
            anchor = new_id()
            storage.write_user(conn, caller.tenant_id, anchor, doc, ctx.now, create=True, identity_of=source_user)
            self.replan(conn, view, ctx, [anchor])
            return self.user(conn, anchor, projection, new=True)

        resource, tag = self.write(work)
        return respond(resource, 201, {"Location": USER_TYPE.location(self.base_url, resource["id"]), "ETag": tag})

    def replace_user(self, anchor: str) -> Response:
        body, doc = self.resource_body(USER_TYPE)
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
            # Paused: the identity is marked deleted below and resuming archives the account.
            # Past the SCIM guard's window, the archive is held for a person (engine.guard).
            plan = None if view.paused else scim_delete(conn, view, anchor, ctx, guard=self.guard(view, ctx))
            if plan is not None and room_freed([plan], view):
                g.scim_room_freed = True  # what it held may be what someone waits for
            storage.mark_deleted(conn, caller.tenant_id, anchor, ctx.now)

        self.write(work)
        return Response(status=204)
