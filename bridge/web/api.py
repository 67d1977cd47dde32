"""The product API, for read-only product tokens (`bridge tokens create --read-only`) of one
tenant; an identity provider's SCIM token (read-write) is refused with 403.

- `POST /api/v1/verify-password`: a login against the password set on activation; the answer
  is valid or invalid, nothing more (but `reason: "outside_login_hours"` for a correct password
  outside the person's login hours, docs/operations/login-hours.md).
- `GET /api/v1/events`: the change feed, oldest first, from an opaque cursor
  (bridge.store.events has why a cursor never passes over an event committed late).
- `GET /api/v1/accounts`: a paged snapshot, with the feed position it stands at;
  `GET /api/v1/accounts/<id>`: one account, the same document.
docs/product-integration.md is the product's side of all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from bridge.core.login_hours import allowed, login_hours_from_json
from bridge.jsonfast import dumps_bytes
from bridge.runtime import Runtime
from bridge.store.accounts import STATUSES, account_refs, find_sign_in_account, rehash_password
from bridge.store.db import transaction
from bridge.store.events import MAX_LIMIT, BadCursor, CursorExpired, decode_cursor, encode_cursor, read_events
from bridge.store.ids import fold
from bridge.store.snapshot import account_document, snapshot_page
from bridge.store.tokens import hash_token, tenant_for_token, token_use
from bridge.web.passwords import MAX_LENGTH, hash_password, verify
from bridge.web.ratelimit import limiter

blueprint = Blueprint("verify_password", __name__)
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def register(app: Flask, runtime: Runtime) -> None:
    # Per user: online guessing against one account. Per token: the product's whole login flow,
    # so generous; it bounds a leaked product token used to guess across many accounts.
    app.extensions["bridge.verify_limits"] = (
        limiter(runtime.engine, "verify.user", 10, 60),
        limiter(runtime.engine, "verify.token", 1200, 60),
    )
    app.register_blueprint(blueprint)


@blueprint.route("/api/v1/", defaults={"rest": ""}, methods=_ALL_METHODS, strict_slashes=False)
@blueprint.route("/api/v1/<path:rest>", methods=_ALL_METHODS)
def unknown(rest: str) -> Response:
    """Whatever no route of the API takes: werkzeug routes here a path under /api/v1 that no
    rule matches, and a method the path's rule does not take (a rule that matches the path and
    the method wins; this one only when none does). OPTIONS comes here too: the API's routes
    leave Flask's automatic answer off, which would list this rule's methods as the path's."""
    allowed = sorted(
        {
            method
            for rule in current_app.url_map.iter_rules()
            if rule.rule == request.path and rule.endpoint != "verify_password.unknown"
            for method in rule.methods or ()
        }
        | {"OPTIONS"}
    )
    if allowed == ["OPTIONS"]:
        raise NotFound(f"no API endpoint at {request.path}")
    if request.method == "OPTIONS":
        return Response(status=204, headers={"Allow": ", ".join(allowed)})
    raise MethodNotAllowed(allowed, f"{request.method} is not allowed on {request.path}")


# Code by code, as well as for any HTTPException: Flask tries the handlers of a status code
# first, and the SCIM door's app-wide 404 handler would otherwise answer with Flask's page.
@blueprint.errorhandler(404)
@blueprint.errorhandler(405)
@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    # Flask's own answers (404, 405, 413...) in the API's shape, never an HTML page.
    response = _error(error.code or 500, error.description or error.name)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        # RFC 9110 15.5.6: a 405 names the methods the resource takes.
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge"'
    return response


@dataclass(frozen=True)
class _LoggedCaller:
    tenant_name: str
    actor: str


def _product_token(runtime: Runtime) -> Any:
    """The product token's row (bridge.store.tokens.TOKEN_COLUMNS), or the error Response."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "a read-only product token is required")
    now = datetime.now(UTC)
    with transaction(runtime.engine, write=False) as conn:
        found = tenant_for_token(conn, token.strip(), now)
    if found is None:
        return _error(401, "invalid token")
    token_use.note(runtime.engine, found.token_id, found.last_used_at, now)
    # Who asked, for the access log (bridge.http.Caller): the tenant and the token's label.
    g.api_caller = _LoggedCaller(found.tenant_name, found.token_label or found.token_id)
    if not found.read_only:
        # An identity provider's SCIM token has no business checking passwords or reading the
        # product's feed: it writes accounts, the product reads them.
        return _error(403, "use a read-only product token (bridge tokens create --read-only)")
    return found


def _limit() -> int | Response:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        return _error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


DEFAULT_LIMIT = 100


def _paged_read() -> tuple[Runtime, Any, int] | Response:
    """What the feed and the snapshot ask first: the product token, then the page size."""
    runtime: Runtime = current_app.extensions["bridge"]
    found = _product_token(runtime)
    if isinstance(found, Response):
        return found
    limit = _limit()
    if isinstance(limit, Response):
        return limit
    return runtime, found, limit


@blueprint.get("/api/v1/events", provide_automatic_options=False)
def events() -> Response:
    asked = _paged_read()
    if isinstance(asked, Response):
        return asked
    runtime, found, limit = asked
    after_text = request.args.get("after") or None
    try:
        after = decode_cursor(after_text, found.tenant_id) if after_text is not None else None
        with transaction(runtime.engine, write=False) as conn:
            page = read_events(conn, found.tenant_id, after, limit)
            who = account_refs(conn, ((e.get("account") or {}).get("id") for e in page.events))
    except BadCursor as exc:
        return _error(400, str(exc))
    except CursorExpired:
        response = jsonify(
            error="this cursor is older than the oldest event kept (event_retention_days): "
            "take the snapshot again from /api/v1/accounts and follow the feed from its eventsCursor",
            snapshot="/api/v1/accounts",
        )
        response.status_code = 410
        return response
    # Who each event is about, as the account is now (as the webhooks do at delivery); an event
    # about the tenant (plan.held, plan.approved) has no account. The payloads are this read's
    # own dicts: updated in place.
    for event in page.events:
        account = event.get("account")
        if account:
            account.update(who.get(account["id"], ()))
    return _page(events=page.events, next=encode_cursor(found.tenant_id, page.last), hasMore=page.has_more)


@blueprint.get("/api/v1/accounts", provide_automatic_options=False)
def accounts() -> Response:
    asked = _paged_read()
    if isinstance(asked, Response):
        return asked
    runtime, found, limit = asked
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        return _error(400, f"status must be one of {', '.join(STATUSES)}")
    try:
        with transaction(runtime.engine, write=False) as conn:
            page = snapshot_page(
                conn, found.tenant_id, found.tenant_name, request.args.get("cursor") or None, limit, status
            )
    except BadCursor as exc:
        return _error(400, str(exc))
    return _page(
        accounts=page.accounts,
        next=page.next_cursor,
        eventsCursor=encode_cursor(found.tenant_id, page.events_position),
    )


@blueprint.get("/api/v1/accounts/<account_id>", provide_automatic_options=False)
def account(account_id: str) -> Response:
    """One account, as the snapshot shows it: what a product re-reads after an event it cannot
    apply from the event alone (a type it does not know), instead of paging the whole snapshot.
    Another tenant's account is a 404 like an id that does not exist."""
    runtime: Runtime = current_app.extensions["bridge"]
    found = _product_token(runtime)
    if isinstance(found, Response):
        return found
    with transaction(runtime.engine, write=False) as conn:
        document = account_document(conn, found.tenant_id, found.tenant_name, account_id)
    if document is None:
        return _error(404, f"no account {account_id}")
    return _page(**document)


def _page(**body: Any) -> Response:
    """A page of the feed or the snapshot, encoded with orjson (bridge.jsonfast): Flask's
    `jsonify` (the standard library's encoder) was about a fifth of a feed page of 1,000 events
    (docs/benchmarks.md, "Product API")."""
    return Response(dumps_bytes(body), mimetype="application/json")


@blueprint.post("/api/v1/verify-password", provide_automatic_options=False)
def verify_password() -> Response:
    runtime: Runtime = current_app.extensions["bridge"]
    per_user, per_token = current_app.extensions["bridge.verify_limits"]
    found = _product_token(runtime)
    if isinstance(found, Response):
        return found
    tenant_id = found.tenant_id
    token = request.headers.get("Authorization", "").partition(" ")[2]
    body: Any = request.get_json(silent=True)
    user = body.get("userName") if isinstance(body, dict) else None
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(user, str) or not isinstance(password, str) or not user or len(user) > 320:
        return _error(400, 'expected JSON {"userName": "...", "password": "..."}')
    if len(password) > MAX_LENGTH:
        password = password[: MAX_LENGTH + 1]  # still verified (and wrong): same work, same answer
    if not per_token.allow(hash_token(token)):
        return _too_many()
    with transaction(runtime.engine, write=False) as conn:
        row = find_sign_in_account(conn, tenant_id, user)
    # Keyed on the account, so its userName and its address share one budget; an unknown login is
    # keyed on what was asked, so a 429 comes as soon for a name that exists as for one that does not.
    if not per_user.allow(("account", row.id) if row is not None else (tenant_id, fold(user))):
        return _too_many()
    # One argon2 verification on every path (unknown user, inactive, no password, ambiguous),
    # so the answer takes as long whether or not the user exists.
    stored = row.password_hash if row is not None else None
    verified = verify(stored, password)
    if verified.rehash and row is not None:
        with transaction(runtime.engine) as conn:
            rehash_password(conn, row.id, hash_password(password), datetime.now(UTC))
    if verified.valid and row is not None and not _within_login_hours(row.login_hours, datetime.now(UTC)):
        # Only after a correct password: a wrong one keeps its plain answer, so the reason tells
        # nothing to someone guessing.
        return jsonify(valid=False, reason="outside_login_hours")
    return jsonify(valid=verified.valid)


def _within_login_hours(stored: Any, now: datetime) -> bool:
    try:
        hours = login_hours_from_json(stored)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # windows bridge cannot read (a time zone gone from tzdata): refuse, never allow
    return allowed(hours, now)


def _too_many() -> Response:
    response = _error(429, "too many attempts")
    response.headers["Retry-After"] = "60"
    return response
