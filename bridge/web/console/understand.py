"""Understand and preview (issue 16): the mapping impact preview with the seat-refusal report,
and the access report at a date. The preview runs `bridge.engine.preview` (the same as `bridge
replan --dry-run --mapping FILE`) and applies nothing; the reports read through `bridge.store`.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

from flask import Response, request

from bridge.core.plan import is_seat_denial
from bridge.errors import ConfigError
from bridge.provision.replan import tenant_view
from bridge.store.accounts import refused_accounts
from bridge.store.audit import role_holders_on
from bridge.store.db import transaction
from bridge.web.console import Tenant, blueprint, now, page, runtime, signed_in, tenant_scope, words
from bridge.web.console.screens import _cell

# A mapping is a few kilobytes; a paste far beyond that is a mistake, not a mapping.
MAX_MAPPING = 256 * 1024


def _refusals(tenant: Tenant) -> dict[str, Any]:
    """The stored refusals of the tenant's live accounts, and those the seat limit made."""
    cfg = runtime().config.tenant_settings(tenant.name)
    with transaction(runtime().engine, write=False) as conn:
        rows, total = refused_accounts(conn, tenant.id, limit=500)
        limit = tenant_view(conn, cfg).seat_limit
    seat = [r for r in rows if any(is_seat_denial(why) for why in r.denied.values())]
    return {"refused": rows, "refused_total": total, "seat_refused": seat, "seat_limit": limit}


def _current_mapping(tenant: Tenant) -> str:
    path = runtime().config.tenant_settings(tenant.name).mappings_path
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""  # start-up loaded it; if it is gone since, the administrator pastes one


@blueprint.route("/t/<name>/preview", methods=["GET", "POST"])
@signed_in
def preview(name: str) -> Response:
    from bridge.engine.preview import preview_mapping

    tenant = tenant_scope(name)
    text = _current_mapping(tenant)
    result = None
    error = None
    status = 200
    if request.method == "POST":
        text = request.form.get("mapping", "")
        if len(text) > MAX_MAPPING:
            error, status = words()["preview_too_long"], 413
        else:
            try:
                result = preview_mapping(runtime(), tenant.name, text.replace("\r\n", "\n"))
            except ConfigError as exc:  # the same one line as at start-up, naming the key
                error, status = str(exc), 422
    return page(
        "preview.html",
        status=status,
        tenant=tenant,
        section="preview",
        title=words()["preview_title"],
        mapping_text=text,
        result=result,
        error=error,
        **_refusals(tenant),
    )


@blueprint.get("/t/<name>/access")
@signed_in
def access(name: str) -> Response:
    tenant = tenant_scope(name)
    roles = sorted(runtime().config.tenant_settings(tenant.name).mapping().roles)
    role = request.args.get("role", "").strip()[:100]
    raw_day = request.args.get("at", "").strip()
    error = None
    try:
        day = date.fromisoformat(raw_day) if raw_day else now().astimezone(UTC).date()
    except ValueError:
        day, error = None, words()["access_bad_date"]
    holders = None
    if role and day is not None:
        with transaction(runtime().engine, write=False) as conn:
            holders = role_holders_on(conn, tenant.id, role, day)
        if request.args.get("format") == "csv":
            return _access_csv(tenant, role, day, holders)
    return page(
        "access.html",
        status=400 if error else 200,
        tenant=tenant,
        section="access",
        title=words()["access_title"],
        roles=roles,
        role=role,
        day=day.isoformat() if day else raw_day,
        holders=holders,
        error=error,
    )


def _access_csv(tenant: Tenant, role: str, day: date, holders: list[Any]) -> Response:
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(["role", "date", "account_id", "user_name", "email", "status", "rule", "granted_at"])
    for h in holders:
        out.writerow(
            [
                _cell(role),
                day.isoformat(),
                h.account_id,
                _cell(h.user_name or ""),
                _cell(h.email or ""),
                h.status or "",
                _cell(h.rule or ""),
                h.granted_at.isoformat() if isinstance(h.granted_at, datetime) else "",
            ]
        )
    response = Response(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    safe_role = "".join(c if c.isalnum() or c in "-_" else "_" for c in role)
    response.headers["Content-Disposition"] = f'attachment; filename="access-{tenant.name}-{safe_role}-{day}.csv"'
    return response
