"""The console's buttons. Each one calls the same function as its CLI command
(`bridge.provision.manual`), with the actor `admin:<email>` and the tenant the administrator may
act in; nothing here decides whether an action is allowed. A refusal (the lifecycle has no such
transition, the message cannot be retried) comes back to the page it came from, with the reason.
Every POST has passed `signed_in`'s CSRF check before it reaches these functions.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlencode

from flask import Response, abort, redirect, request

from bridge.core.actions import ActionRefused
from bridge.errors import Ambiguous, BridgeError, NotFound
from bridge.provision.manual import (
    ACCOUNT_ACTIONS,
    create_scim_token,
    retry_outbox_message,
    revoke_scim_token,
    run_action,
)
from bridge.store.accounts import find_account
from bridge.store.db import transaction
from bridge.web.console import PREFIX, actor, blueprint, page, runtime, signed_in, tenant_scope, words

log = logging.getLogger(__name__)


def _back(path: str, **query: str) -> Response:
    return redirect(f"{path}?{urlencode(query)}" if query else path, code=303)


@blueprint.post("/t/<name>/accounts/<account_id>/<action>")
@signed_in
def account_action(name: str, account_id: str, action: str) -> Response:
    tenant = tenant_scope(name)
    if action not in ACCOUNT_ACTIONS:
        abort(404)
    with transaction(runtime().engine, write=False) as conn:
        try:
            row = find_account(conn, tenant.id, account_id)
        except (NotFound, Ambiguous):
            abort(404)
    page_url = f"{PREFIX}/t/{tenant.name}/accounts/{row.id}"
    try:
        run_action(runtime(), tenant.name, row.id, action, actor=actor())  # type: ignore[arg-type]
    except ActionRefused as exc:
        return _back(page_url, refused=f"{words()['refused']}: {exc}")
    return _back(page_url, done=action)


@blueprint.post("/t/<name>/outbox/<int:message_id>/retry")
@signed_in
def retry(name: str, message_id: int) -> Response:
    tenant = tenant_scope(name)
    back = f"{PREFIX}/t/{tenant.name}/outbox"
    try:
        retry_outbox_message(runtime(), message_id, actor=actor(), tenant_id=tenant.id)
    except NotFound:
        abort(404)
    except BridgeError as exc:
        return _back(back, refused=f"{words()['refused']}: {exc}")
    return _back(back, done="retry")


@blueprint.post("/t/<name>/tokens")
@signed_in
def create_token(name: str) -> Response:
    tenant = tenant_scope(name)
    label = request.form.get("label", "").strip()[:200] or None
    made = create_scim_token(
        runtime(),
        tenant.name,
        label=label,
        read_only=bool(request.form.get("read_only")),
        expires_days=None,
        actor=actor(),
    )
    # Shown once, in this response only: never in a redirect's URL, a log or the database.
    return page(
        "tokens.html",
        tenant=tenant,
        section="tokens",
        title=words()["tokens_title"],
        rows=_token_rows(tenant.id),
        notice=None,
        created=made.token,
    )


def _token_rows(tenant_id: int) -> list[dict[str, object]]:
    from bridge.store.tokens import list_tokens

    with transaction(runtime().engine, write=False) as conn:
        return list_tokens(conn, tenant_id)


@blueprint.post("/t/<name>/tokens/<token_id>/revoke")
@signed_in
def revoke_token(name: str, token_id: str) -> Response:
    tenant = tenant_scope(name)
    try:
        revoke_scim_token(runtime(), token_id, actor=actor(), tenant_id=tenant.id)
    except NotFound:
        abort(404)
    return _back(f"{PREFIX}/t/{tenant.name}/tokens", done="revoke")


@blueprint.post("/t/<name>/pause")
@signed_in
def pause(name: str) -> Response:
    from bridge.engine.pause import pause_tenant

    tenant = tenant_scope(name)
    pause_tenant(runtime().config, runtime().engine, tenant.name, actor=actor())
    return _back(f"{PREFIX}/t/{tenant.name}/", done="pause")


@blueprint.post("/t/<name>/resume")
@signed_in
def resume(name: str) -> Response:
    """Resuming runs each directory source in full: minutes on a large directory, so it runs beside
    the request. Crash-safe: the pause is cleared and the SCIM catch-up marked due in one commit
    (engine.pause), and the scheduler finishes what a stopped process did not."""
    from bridge.engine.pause import resume_tenant

    tenant = tenant_scope(name)
    rt, who = runtime(), actor()

    def work() -> None:
        try:
            resume_tenant(rt.config, rt.engine, tenant.name, actor=who)
        except Exception:
            log.exception("resuming %s from the console failed; the scheduler's runs converge", tenant.name)

    threading.Thread(target=work, name=f"resume-{tenant.name}", daemon=True).start()
    return _back(f"{PREFIX}/t/{tenant.name}/", done="resume")
