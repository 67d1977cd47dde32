"""The /Groups handlers: parse the request, the store's group and membership writes, a
re-plan of everyone whose effective groups changed, render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Response, request
from sqlalchemy import Connection

from bridge.provision.apply import ApplyContext
from bridge.provision.replan import TenantView, membership_matters
from bridge.scim.auth import Caller
from bridge.scim.errors import invalid_value, not_found
from bridge.scim.handlers import (
    Handlers,
    members_in,
    respond,
    row_etag,
)
from bridge.scim.patch import MemberOp, apply_patch, prepare_patch
from bridge.scim.patch_path import matches
from bridge.scim.resources import (
    Projection,
    etag,
    render_group,
    require,
)
from bridge.scim.schema import GROUP_TYPE
from bridge.store import scim as storage
from bridge.store.ids import new_id


class GroupHandlers(Handlers):
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

    def moved(
        self, conn: Connection, view: TenantView, ctx: ApplyContext, anchor: str, changed: Sequence[str] | set[str]
    ) -> list[str]:
        """The users to re-plan after the members `changed` joined or left the group: everyone
        below them, unless no mapping rule can see this group (then each gets a new version only)."""
        users = storage.users_under(conn, self.caller.tenant_id, changed) if changed else []
        if users and not view.paused and not membership_matters(conn, view, storage.SOURCE, anchor):
            storage.touch_users(conn, self.caller.tenant_id, users, ctx.now)
            return []
        return users

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
        body, doc = self.resource_body(GROUP_TYPE)
        ids = members_in(body)
        projection = self.projection(GROUP_TYPE)

        def work(conn: Connection, caller: Caller, ctx: ApplyContext, view: TenantView) -> Any:
            storage.ensure_unique_name(conn, caller.tenant_id, "group", doc["displayName"], None)
            anchor = new_id()
            storage.write_group(conn, caller.tenant_id, anchor, doc, ctx.now, create=True)
            if ids:
                self.check_members(conn, caller, ids, anchor)
                added = storage.add_members(conn, caller.tenant_id, anchor, ids)
                self.replan(conn, view, ctx, self.moved(conn, view, ctx, anchor, added))
            return self.group(conn, anchor, projection)

        resource, tag = self.write(work)
        return respond(resource, 201, {"Location": GROUP_TYPE.location(self.base_url, resource["id"]), "ETag": tag})

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
        affected = set(self.moved(conn, view, ctx, row.anchor, changed))
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
        body, doc = self.resource_body(GROUP_TYPE)
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
