"""The console's screens: what an administrator reads. Every read goes through `bridge.store` (or
`bridge.engine.explain`, the same account explanation as `bridge explain`); the buttons post to
`actions.py`. Lists page by keyset (a cursor in the query string), never by offset, so the
100,000th account costs what the first does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Response, abort, redirect, request, stream_with_context

from bridge.core.lifecycle import Status
from bridge.errors import Ambiguous, NotFound
from bridge.store.accounts import find_account, search_accounts, seat_counts, status_counts
from bridge.store.activation import activation_links
from bridge.store.alerts import open_alerts
from bridge.store.audit import audit_page, audit_rows, list_audit, seat_history
from bridge.store.db import transaction
from bridge.store.outbox import account_mail, mail_health, problem_rows
from bridge.store.runs import get_run, last_runs, run_changes, runs_page
from bridge.store.tenants import list_tenants, tenant_summaries
from bridge.store.tokens import list_tokens
from bridge.web.console import PREFIX, Tenant, admin, blueprint, now, page, runtime, signed_in, tenant_scope, words
from bridge.web.console.charts import ChartWords, bar_chart, line_chart

STATUSES = [s.value for s in Status]
PAGE_SIZE = 50


def _tenant_page(template: str, tenant: Tenant, section: str, title: str, **values: Any) -> Response:
    return page(template, tenant=tenant, section=section, title=title, **values)


def _chart_words() -> ChartWords:
    t = words()
    return ChartWords(**{field: t[f"chart_{field}"] for field in ChartWords.__dataclass_fields__})


def _config(tenant: Tenant) -> Any:
    return runtime().config.tenant_settings(tenant.name)


# ---- every tenant (operators) -----------------------------------------------------------------


@blueprint.get("/")
@signed_in
def home() -> Response:
    me = admin()
    if not me.is_operator:
        return redirect(f"{PREFIX}/t/{me.tenant_name}/", code=303)
    configured = runtime().config.tenants
    with transaction(runtime().engine, write=False) as conn:
        known = [t for t in list_tenants(conn) if t.name in configured]
        summaries = {s.id: s for s in tenant_summaries(conn)}
    return page(
        "tenants.html",
        section="tenants",
        title=words()["tenants_title"],
        tenants=[(t, summaries.get(t.id)) for t in known],
        statuses=STATUSES,
    )


# ---- one tenant -------------------------------------------------------------------------------


@blueprint.get("/t/<name>/")
@signed_in
def overview(name: str) -> Response:
    tenant = tenant_scope(name)
    settings = _config(tenant)
    moment = now()
    with transaction(runtime().engine, write=False) as conn:
        counts = status_counts(conn, tenant.id)
        history = seat_history(
            conn,
            tenant.id,
            mapping=settings.mapping(),
            now=moment,
            days=90,
            suspended_counts_as_seat=settings.suspended_counts_as_seat,
        )
        mapping = settings.mapping()
        _, module_used = (
            seat_counts(conn, tenant.id, mapping, suspended_counts_as_seat=settings.suspended_counts_as_seat)
            if mapping.modules
            else (0, {})
        )
        runs = last_runs(conn, tenant.id)
        health = mail_health(conn, tenant.id, moment)
        alerts = open_alerts(conn, tenant.id)
    used = history[-1][1] if history else 0
    t = words()
    chart = line_chart(
        [(day, float(n)) for day, n in history],
        title=t["seats_chart"],
        y_label=t["seats_used"],
        limit=float(settings.seat_limit) if settings.seat_limit is not None else None,
        words=_chart_words(),
    )
    return _tenant_page(
        "overview.html",
        tenant,
        "overview",
        f"{tenant.name}: {t['overview_title']}",
        counts=counts,
        statuses=STATUSES,
        seats_used=used,
        seat_limit=settings.seat_limit,
        modules=[
            {"id": m.id, "title": m.title, "used": module_used.get(m.id, 0), "limit": m.seat_limit}
            for m in mapping.modules.values()
        ],
        chart=chart,
        runs=runs,
        health=health,
        held=_held_plans(tenant),
        alerts=alerts,
        notice=_notice(),
    )


def _held_plans(tenant: Tenant) -> list[dict[str, Any]]:
    """The tenant's plans waiting for a decision (issue 17), newest first."""
    from bridge.engine.plans import plans

    return plans(runtime().engine, tenant_id=tenant.id, status="held")


@blueprint.get("/t/<name>/accounts")
@signed_in
def accounts(name: str) -> Response:
    tenant = tenant_scope(name)
    settings = _config(tenant)
    args = request.args
    filters = {
        "text": args.get("q", "").strip()[:200] or None,
        "status": args.get("status") if args.get("status") in STATUSES else None,
        "role": args.get("role") if args.get("role") in settings.mapping().roles else None,
        "source": args.get("source") or None,
        "user_type": args.get("type") if args.get("type") in ("internal", "external") else None,
    }
    with transaction(runtime().engine, write=False) as conn:
        found = search_accounts(conn, tenant.id, **filters, after=args.get("after") or None, limit=PAGE_SIZE)
    sources = ["scim", *(s.name for s in runtime().config.sources.values() if s.tenant == tenant.name)]
    query = {
        k: v
        for k, v in (
            ("q", filters["text"]),
            ("status", filters["status"]),
            ("role", filters["role"]),
            ("source", filters["source"]),
            ("type", filters["user_type"]),
        )
        if v
    }
    return _tenant_page(
        "accounts.html",
        tenant,
        "accounts",
        words()["accounts_title"],
        rows=found.rows,
        next_after=found.next_after,
        query=query,
        paged=bool(args.get("after")),
        statuses=STATUSES,
        roles=sorted(settings.mapping().roles),
        sources=sources,
    )


@blueprint.get("/t/<name>/accounts/<account_id>")
@signed_in
def account(name: str, account_id: str) -> Response:
    from bridge.engine.explain import explain_account
    from bridge.errors import BridgeError

    tenant = tenant_scope(name)
    with transaction(runtime().engine, write=False) as conn:
        try:
            row = find_account(conn, tenant.id, account_id)
        except (NotFound, Ambiguous):
            abort(404)
        history = list_audit(conn, tenant.id, account_id=row.id)
        links = activation_links(conn, tenant.id, row.id)
        mail = account_mail(conn, row.id)
    try:
        explained: dict[str, Any] | None = explain_account(runtime(), tenant.name, row.id)
        explain_error = None
    except BridgeError as exc:  # the source's record is gone: the page still shows the account
        explained, explain_error = None, str(exc)
    return _tenant_page(
        "account.html",
        tenant,
        "accounts",
        row.user_name,
        account=row,
        explained=explained,
        explain_error=explain_error,
        history=history,
        links=links,
        mail=mail,
        moment=now(),
        notice=_notice(),
        error=request.args.get("refused"),
    )


def _notice() -> str | None:
    done = request.args.get("done")
    return words().get(f"done_{done}") if done else None


@blueprint.get("/t/<name>/runs")
@signed_in
def runs(name: str) -> Response:
    tenant = tenant_scope(name)
    before = request.args.get("before", type=int)
    with transaction(runtime().engine, write=False) as conn:
        found, next_before = runs_page(conn, tenant.id, before_id=before, limit=PAGE_SIZE)
    t = words()
    recent = list(reversed(found[:30]))
    durations = bar_chart([(f"#{r.id}", _seconds(r) or 0.0) for r in recent], title=t["runs_chart_duration"])
    changes = bar_chart([(f"#{r.id}", float(_changed(r))) for r in recent], title=t["runs_chart_changes"])
    return _tenant_page(
        "runs.html",
        tenant,
        "runs",
        t["runs_title"],
        runs=found,
        next_before=next_before,
        durations=durations,
        changes=changes,
        seconds=_seconds,
        changed=_changed,
    )


def _seconds(run: Any) -> float | None:
    if run.finished_at is None:
        return None
    return round((run.finished_at - run.started_at).total_seconds(), 2)


def _changed(run: Any) -> int:
    return sum(int(v) for v in (run.counts or {}).values() if isinstance(v, int))


@blueprint.get("/t/<name>/runs/<int:run_id>")
@signed_in
def run(name: str, run_id: int) -> Response:
    tenant = tenant_scope(name)
    with transaction(runtime().engine, write=False) as conn:
        found = get_run(conn, tenant.id, run_id)
        if found is None:
            abort(404)
        changes, _ = run_changes(conn, tenant.id, found, limit=1000)
    return _tenant_page(
        "run.html", tenant, "runs", f"{words()['run_title']} #{found.id}", run=found, changes=changes, seconds=_seconds
    )


@blueprint.get("/t/<name>/outbox")
@signed_in
def outbox(name: str) -> Response:
    tenant = tenant_scope(name)
    channel = request.args.get("channel") if request.args.get("channel") in ("email", "webhook") else None
    before = request.args.get("before", type=int)
    moment = now()
    with transaction(runtime().engine, write=False) as conn:
        health = mail_health(conn, tenant.id, moment)
        rows, next_before = problem_rows(conn, tenant.id, channel=channel, before_id=before, limit=PAGE_SIZE)
    return _tenant_page(
        "outbox.html",
        tenant,
        "outbox",
        words()["outbox_title"],
        health=health,
        rows=rows,
        next_before=next_before,
        channel=channel,
        notice=words()["retried"] if request.args.get("done") == "retry" else None,
        error=request.args.get("refused"),
    )


def _audit_filters() -> dict[str, Any]:
    args = request.args
    return {
        "actor": args.get("actor", "").strip()[:255] or None,
        "account_id": args.get("account", "").strip()[:36] or None,
        "action": args.get("action", "").strip()[:50] or None,
        "since": _day(args.get("since")),
        "until": _day(args.get("until"), end=True),
    }


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    """A date from the form; an unreadable one is ignored (the filter shows what it used)."""
    try:
        day = date.fromisoformat(value or "")
    except ValueError:
        return None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end else start


@blueprint.get("/t/<name>/audit")
@signed_in
def audit(name: str) -> Response:
    tenant = tenant_scope(name)
    filters = _audit_filters()
    if request.args.get("format") == "csv":
        return _audit_csv(tenant, filters)
    before = request.args.get("before", type=int)
    with transaction(runtime().engine, write=False) as conn:
        rows, next_before = audit_page(conn, tenant.id, **filters, before_id=before, limit=100)
    query = {k: v for k, v in request.args.items() if k in ("actor", "account", "action", "since", "until") and v}
    return _tenant_page(
        "audit.html", tenant, "audit", words()["audit_title"], rows=rows, next_before=next_before, query=query
    )


def _audit_csv(tenant: Tenant, filters: dict[str, Any]) -> Response:
    engine = runtime().engine

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        out = csv.writer(buffer)
        out.writerow(["id", "occurred_at", "actor", "action", "account_id", "from", "to", "reason", "correlation_id"])
        with transaction(engine, write=False) as conn:
            for row in audit_rows(conn, tenant.id, **filters):
                out.writerow(
                    [
                        row.id,
                        row.occurred_at.isoformat(),
                        _cell(row.actor),
                        row.action,
                        row.account_id or "",
                        (row.before or {}).get("status", ""),
                        (row.after or {}).get("status", ""),
                        _cell(row.reason or ""),
                        row.correlation_id or "",
                    ]
                )
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    filename = f"audit-{tenant.name}-{now():%Y%m%d-%H%M%S}.csv"
    response = Response(stream_with_context(lines()), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _cell(value: str) -> str:
    """A spreadsheet runs a cell that starts with = + - @ as a formula: an actor or a reason comes
    from outside (a SCIM client, a directory), so such a cell is quoted with a leading '."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@blueprint.get("/t/<name>/tokens")
@signed_in
def tokens(name: str) -> Response:
    tenant = tenant_scope(name)
    with transaction(runtime().engine, write=False) as conn:
        rows = list_tokens(conn, tenant.id)
    return _tenant_page(
        "tokens.html",
        tenant,
        "tokens",
        words()["tokens_title"],
        rows=rows,
        notice=words()["token_revoked"] if request.args.get("done") == "revoke" else None,
        created=None,
    )
