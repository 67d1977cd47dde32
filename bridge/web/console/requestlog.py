"""The console's view of what a tenant's identity provider did (issue 16): the SCIM request log,
newest first with filters, one request with its (redacted) bodies and the account changes it
caused, and each token's connection status for the Connect page. Reads only, through
`bridge.store.requestlog`; the rows are stored redacted, so nothing here hides anything.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Response, abort, request

from bridge.store.db import transaction
from bridge.store.requestlog import (
    STATUS_CLASSES,
    change_counts,
    changes_of,
    get_request,
    list_requests,
    token_activity,
)
from bridge.store.tokens import list_tokens
from bridge.web.console import Tenant, blueprint, now, page, runtime, signed_in, tenant_scope, words

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PAGE = 50


def connection_status(conn: Any, tenant: Tenant) -> list[dict[str, Any]]:
    """Each live token of the tenant with what its client did: the last request (time, user
    agent, address) and the requests and errors of the last 24 hours."""
    live = [t for t in list_tokens(conn, tenant.id) if not t["revoked"]]
    activity = token_activity(conn, tenant.id, [str(t["id"]) for t in live], now() - timedelta(hours=24))
    return [{"token": t, "activity": activity[str(t["id"])]} for t in live]


@blueprint.get("/t/<name>/requests")
@signed_in
def requests_page(name: str) -> Response:
    tenant = tenant_scope(name)
    status_class = request.args.get("status", "")
    method = request.args.get("method", "").upper()
    status_class = status_class if status_class in STATUS_CLASSES else ""
    method = method if method in METHODS else ""
    before = request.args.get("before", type=int)
    with transaction(runtime().engine, write=False) as conn:
        tokens = list_tokens(conn, tenant.id)
        labels = {str(t["id"]): t["label"] or str(t["id"])[:8] for t in tokens}
        token = request.args.get("token", "")
        token = token if token in labels else ""  # another tenant's token is no filter here
        rows, next_before = list_requests(
            conn,
            tenant.id,
            status_class=status_class or None,
            method=method or None,
            token_id=token or None,
            before_id=before,
            limit=PAGE,
        )
        counts = change_counts(conn, tenant.id, rows)
    query = {k: v for k, v in (("status", status_class), ("method", method), ("token", token)) if v}
    return page(
        "requests.html",
        tenant=tenant,
        section="requests",
        title=words()["requests_title"],
        rows=rows,
        counts=counts,
        labels=labels,
        next_before=next_before,
        first=before is not None,
        query=query,
        classes=STATUS_CLASSES,
        methods=METHODS,
        keep_days=runtime().config.tenant_settings(tenant.name).request_log_days,
    )


@blueprint.get("/t/<name>/requests/<int:request_row_id>")
@signed_in
def request_page(name: str, request_row_id: int) -> Response:
    tenant = tenant_scope(name)
    with transaction(runtime().engine, write=False) as conn:
        row = get_request(conn, tenant.id, request_row_id)
        if row is None:
            abort(404)
        changes = changes_of(conn, tenant.id, row)
        labels = {str(t["id"]): t["label"] or str(t["id"])[:8] for t in list_tokens(conn, tenant.id)}
    return page(
        "request.html",
        tenant=tenant,
        section="requests",
        title=f"{row.method} {row.path.split('?', 1)[0]}",
        row=row,
        label=labels.get(row.token_id or "", (row.token_id or "")[:8]),
        request_body=_pretty(row.request_body),
        response_body=_pretty(row.response_body),
        changes=changes,
    )


def _pretty(text: str | None) -> str | None:
    """A stored body indented for reading; a body cut at 64 KiB is no longer JSON: as stored."""
    if not text:
        return text
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
