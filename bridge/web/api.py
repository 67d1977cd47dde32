"""`POST /api/v1/verify-password`: the product checks a login against the password set on
activation. Read-only product tokens only; the answer is valid or invalid, nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from bridge.runtime import Runtime
from bridge.store.accounts import find_sign_in_account, rehash_password
from bridge.store.db import transaction
from bridge.store.ids import fold
from bridge.store.tokens import hash_token, tenant_for_token, token_use
from bridge.web.passwords import MAX_LENGTH, hash_password, verify
from bridge.web.ratelimit import limiter

blueprint = Blueprint("verify_password", __name__)


def register(app: Flask, runtime: Runtime) -> None:
    # Per user: online guessing against one account. Per token: the product's whole login flow,
    # so generous; it bounds a leaked product token used to guess across many accounts.
    app.extensions["bridge.verify_limits"] = (
        limiter(runtime.engine, "verify.user", 10, 60),
        limiter(runtime.engine, "verify.token", 1200, 60),
    )
    app.register_blueprint(blueprint)


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="bridge"'
    return response


@blueprint.post("/api/v1/verify-password")
def verify_password() -> Response:
    runtime: Runtime = current_app.extensions["bridge"]
    per_user, per_token = current_app.extensions["bridge.verify_limits"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "a read-only product token is required")
    now = datetime.now(UTC)
    with transaction(runtime.engine, write=False) as conn:
        found = tenant_for_token(conn, token.strip(), now)
    if found is None:
        return _error(401, "invalid token")
    token_use.note(runtime.engine, found.token_id, found.last_used_at, now)
    tenant_id = found.tenant_id
    if not found.read_only:
        # An identity provider's SCIM token has no business checking passwords.
        return _error(403, "use a read-only product token (bridge tokens create --read-only)")
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
    return jsonify(valid=verified.valid)


def _too_many() -> Response:
    response = _error(429, "too many attempts")
    response.headers["Retry-After"] = "60"
    return response
