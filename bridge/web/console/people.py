"""The console's Admins page (who may sign in) and the identity-provider guides of a tenant's
Connect page. Inviting and removing go through `bridge.engine.admins`, as `bridge admins` does.

Operators see and invite everyone; a tenant administrator sees their own tenant's
administrators and invites colleagues to that tenant only (the customer's IT team manages its
own people without the operator). Nobody removes themself here: that would end the session
that asks, and leave a tenant without an administrator by a slip of the mouse.
"""

from __future__ import annotations

from flask import Response, abort, request

from bridge.engine.admins import invite_admin, remove_admin_as
from bridge.errors import BridgeError, InvalidValue, NotFound
from bridge.store.admins import list_admins
from bridge.store.db import transaction
from bridge.store.tokens import list_tokens
from bridge.web.console import (
    Tenant,
    actor,
    admin,
    blueprint,
    language,
    now,
    page,
    runtime,
    signed_in,
    tenant_scope,
    words,
)
from bridge.web.console.requestlog import connection_status


def _visible_admins() -> list[object]:
    me = admin()
    with transaction(runtime().engine, write=False) as conn:
        everyone = list_admins(conn)
    return [a for a in everyone if me.is_operator or a.tenant_id == me.tenant_id]


def _admins_page(
    *, status: int = 200, link: str | None = None, notice: str | None = None, error: str | None = None
) -> Response:
    me = admin()
    tenants = sorted(runtime().config.tenants) if me.is_operator else [me.tenant_name]
    return page(
        "admins.html",
        status=status,
        section="admins",
        title=words()["admins_title"],
        admins=_visible_admins(),
        tenants=tenants,
        link=link,
        notice=notice,
        error=error,
        moment=now(),
    )


@blueprint.get("/admins")
@signed_in
def admins() -> Response:
    return _admins_page()


@blueprint.post("/admins")
@signed_in
def invite() -> Response:
    me = admin()
    email = request.form.get("email", "").strip()
    chosen = request.form.get("tenant", "")
    if me.is_operator:
        tenant = chosen or None  # empty: an operator
        if tenant is not None and tenant not in runtime().config.tenants:
            abort(404)
    else:
        tenant = me.tenant_name  # a tenant administrator invites to their own tenant only
    send = bool(request.form.get("send"))
    try:
        made = invite_admin(runtime(), email, tenant, actor=actor(), send=send)
    except InvalidValue:
        return _admins_page(status=422, error=words()["invite_bad_email"])
    except BridgeError as exc:
        return _admins_page(status=502, error=str(exc))
    if made.sent:
        return _admins_page(notice=words()["invite_sent"].format(email=made.email))
    # The link is shown in this response only, like a new token.
    return _admins_page(link=made.link, notice=words()["invite_made"].format(email=made.email))


@blueprint.post("/admins/remove")
@signed_in
def remove() -> Response:
    me = admin()
    email = request.form.get("email", "")
    if email.casefold() == me.email.casefold():
        return _admins_page(status=422, error=words()["remove_self"])
    try:
        remove_admin_as(runtime(), email, actor=actor(), tenant_id=me.tenant_id)
    except NotFound:
        abort(404)
    return _admins_page(notice=words()["admin_removed"].format(email=email))


@blueprint.get("/t/<name>/connect")
@signed_in
def connect(name: str) -> Response:
    tenant = tenant_scope(name)
    with transaction(runtime().engine, write=False) as conn:
        live = [t for t in list_tokens(conn, tenant.id) if not t["revoked"]]
    return _connect_page(tenant, live)


def _connect_page(tenant: Tenant, live: list[dict[str, object]], check: object = None) -> Response:
    base = str(runtime().config.server["public_url"]).rstrip("/") + "/scim/v2"
    sources = [s.name for s in runtime().config.sources.values() if s.tenant == tenant.name]
    with transaction(runtime().engine, write=False) as conn:
        connection = connection_status(conn, tenant)
    return page(
        "connect.html",
        tenant=tenant,
        section="connect",
        title=words()["connect_title"],
        scim_base=base,
        live_tokens=live,
        connection=connection,
        sources=sources if admin().is_operator else [],
        check=check,
        guide=f"guides_{language()}.html",
    )


@blueprint.post("/t/<name>/sources/<source>/test")
@signed_in
def test_source(name: str, source: str) -> Response:
    """Operators only: the read uses the source's server-side credentials."""
    from bridge.engine.check import check_source

    tenant = tenant_scope(name)
    configured = runtime().config.sources.get(source)
    if not admin().is_operator or configured is None or configured.tenant != tenant.name:
        abort(404)
    result = check_source(runtime(), source)
    with transaction(runtime().engine, write=False) as conn:
        live = [t for t in list_tokens(conn, tenant.id) if not t["revoked"]]
    return _connect_page(tenant, live, check=result)
