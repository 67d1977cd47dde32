"""The console's held plans (issue 17): the tenant's list, a review page per plan (its counts and
each account's change, paged) and its two buttons, `Approve` and `Reject`. They call the same
functions as `bridge plans` (`bridge.engine.plans`) with the actor `admin:<email>` and the
tenant the administrator may act in; a plan of another tenant is 404, as a missing one.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, abort, redirect, request

from bridge.errors import BridgeError, NotFound
from bridge.web.console import PREFIX, actor, blueprint, runtime, signed_in, tenant_scope, words
from bridge.web.console.screens import _tenant_page

CHANGES_PAGE = 100


def _back(path: str, **query: str) -> Response:
    return redirect(f"{path}?{urlencode(query)}" if query else path, code=303)


@blueprint.get("/t/<name>/plans")
@signed_in
def plans(name: str) -> Response:
    from bridge.engine.plans import plans as tenant_plans

    tenant = tenant_scope(name)
    return _tenant_page(
        "plans.html", tenant, "plans", words()["plans_title"], rows=tenant_plans(runtime().engine, tenant_id=tenant.id)
    )


@blueprint.get("/t/<name>/plans/<plan_id>")
@signed_in
def plan(name: str, plan_id: str) -> Response:
    from bridge.engine.plans import show

    tenant = tenant_scope(name)
    after = request.args.get("after", type=int)
    try:
        shown, next_after = show(runtime().engine, plan_id, tenant_id=tenant.id, after_seq=after, limit=CHANGES_PAGE)
    except NotFound:
        abort(404)
    done = request.args.get("done")
    notice = words().get(f"done_{done}") if done else None
    if notice and request.args.get("changed"):
        notice = f"{notice} {words()['done_approved_changed']} {request.args['changed']}"
    return _tenant_page(
        "plan.html",
        tenant,
        "plans",
        f"{words()['plan_title']} {shown['id']}",
        plan=shown,
        next_after=next_after,
        paged=after is not None,
        notice=notice,
        error=request.args.get("refused"),
    )


@blueprint.post("/t/<name>/plans/<plan_id>/<decision>")
@signed_in
def decide(name: str, plan_id: str, decision: str) -> Response:
    from bridge.engine.plans import approve, reject

    tenant = tenant_scope(name)
    if decision not in ("approve", "reject"):
        abort(404)
    page_url = f"{PREFIX}/t/{tenant.name}/plans/{plan_id}"
    try:
        if decision == "reject":
            reject(runtime().engine, plan_id, actor=actor(), tenant_id=tenant.id)
            return _back(page_url, done="rejected")
        made = approve(runtime().config, runtime().engine, plan_id, actor=actor(), tenant_id=tenant.id)
    except NotFound:
        abort(404)
    except BridgeError as exc:
        return _back(page_url, refused=f"{words()['refused']}: {exc}")
    if made.scim is not None:
        # A SCIM guard's plan: applied from what the identities say now. Who differs from the
        # held change is in the approval's audit event; the notice says how many.
        if made.scim.differences:
            names = ", ".join(d["userName"] for d in made.scim.differences[:10])
            return _back(page_url, done="approved", changed=names)
        return _back(page_url, done="approved")
    result = made.result
    assert result is not None
    if made.refused:
        # The directory changed since the review: the new plan is the one to review now.
        target = f"{PREFIX}/t/{tenant.name}/plans/{result.held}" if result.held else page_url
        return _back(target, refused=f"{words()['refused']}: {result.reason}")
    if result.errors:
        return _back(page_url, refused=f"{words()['refused']}: {'; '.join(result.errors[:5])}")
    return _back(page_url, done="approved")
