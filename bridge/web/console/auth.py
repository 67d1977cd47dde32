"""Signing in to the console: the setup link, email and password, the optional second factor
(TOTP, RFC 6238) and signing out.

Decisions: a session is a database row (it holds across processes and workers on PostgreSQL, and
`bridge admins remove` ends it at once); the cookie is `HttpOnly`, `SameSite=Lax`, `Secure`
behind https, scoped to `/admin`. Every sign-in opens a new session (no fixation), and the
second factor replaces the half-open session with a new one. A wrong email and a wrong password
get the same answer after the same argon2 work. Sign-in is rate limited per client address and
per email address, the second factor per administrator.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

import pyotp
from flask import Flask, Response, current_app, g, redirect, request

from bridge.runtime import Runtime
from bridge.store.admins import (
    AdminRow,
    admin_by_email,
    admin_by_setup_token,
    close_session,
    complete_setup,
    open_session,
    promote_session,
    rehash_admin_password,
    secret_hash,
    set_totp_secret,
)
from bridge.store.db import transaction
from bridge.web.client import current_client
from bridge.web.console import (
    PREFIX,
    SESSION_COOKIE,
    blueprint,
    current_session,
    forbidden_form,
    form_csrf,
    form_csrf_ok,
    now,
    page,
    runtime,
    secret,
    secure_cookies,
    session_csrf,
    signed_in,
    words,
)
from bridge.web.passwords import MIN_LENGTH, hash_password, password_problems, verify
from bridge.web.ratelimit import Limiter, limiter

ISSUER = "bridge"


@dataclass
class Limits:
    login_client: Limiter
    login_email: Limiter
    totp: Limiter
    setup_client: Limiter


def register_limits(app: Flask, runtime: Runtime) -> None:
    engine = runtime.engine
    app.extensions["bridge.console_limits"] = Limits(
        login_client=limiter(engine, "console.login.client", 30, 15 * 60),
        login_email=limiter(engine, "console.login.email", 10, 15 * 60),
        totp=limiter(engine, "console.totp", 10, 15 * 60),
        setup_client=limiter(engine, "console.setup.client", 30, 15 * 60),
    )


def _limits() -> Limits:
    limits: Limits = current_app.extensions["bridge.console_limits"]
    return limits


def _rate_limited() -> Response:
    response = page("message.html", status=429, title=words()["rate_title"], message=words()["rate_text"])
    response.headers["Retry-After"] = "900"
    return response


def _start_session(admin: AdminRow, stage: str, target: str) -> Response:
    with transaction(runtime().engine) as conn:
        value = open_session(conn, admin.id, stage, now())
    return _with_cookie(redirect(target, code=303), value)


def _with_cookie(response: Response, value: str) -> Response:
    response.set_cookie(SESSION_COOKIE, value, path=PREFIX, httponly=True, samesite="Lax", secure=secure_cookies())
    return response


def _local_target(value: str | None) -> str:
    """Only a console path: `next` must never send someone elsewhere after signing in."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


# ---- sign in ------------------------------------------------------------------------------


@blueprint.get("/login")
def login_form() -> Response:
    return page("login.html", next=_local_target(request.args.get("next")), csrf_form=form_csrf("login"))


@blueprint.post("/login")
def login() -> Response:
    limits = _limits()
    email = request.form.get("email", "").strip()[:320]
    target = _local_target(request.form.get("next"))
    if not limits.login_client.allow(current_client()) or not limits.login_email.allow(email.casefold()):
        return _rate_limited()
    if not form_csrf_ok("login"):
        return forbidden_form()
    with transaction(runtime().engine, write=False) as conn:
        admin = admin_by_email(conn, email) if email else None
    checked = verify(admin.password_hash if admin else None, request.form.get("password", ""))
    if admin is None or not checked.valid:
        return page(
            "login.html",
            status=401,
            next=target,
            email=email,
            error=words()["login_failed"],
            csrf_form=form_csrf("login"),
        )
    if checked.rehash:
        with transaction(runtime().engine) as conn:
            rehash_admin_password(conn, admin.id, hash_password(request.form.get("password", "")))
    if admin.totp_secret is not None:
        return _start_session(admin, "totp", f"{PREFIX}/login/totp?next={quote(target, safe='')}")
    return _start_session(admin, "full", target)


@blueprint.get("/login/totp")
def totp_form() -> Response:
    session = current_session()
    if session is None or session.stage != "totp":
        return redirect(f"{PREFIX}/login", code=303)
    return page("totp.html", next=_local_target(request.args.get("next")), csrf_form=session_csrf(session))


@blueprint.post("/login/totp")
def totp_check() -> Response:
    session = current_session()
    if session is None or session.stage != "totp":
        return redirect(f"{PREFIX}/login", code=303)
    if not _limits().totp.allow(session.admin.id):
        return _rate_limited()
    if not hmac.compare_digest(session_csrf(session), request.form.get("csrf", "")):
        return forbidden_form()
    target = _local_target(request.form.get("next"))
    code = "".join(request.form.get("code", "").split())
    if session.admin.totp_secret is None or not pyotp.TOTP(session.admin.totp_secret).verify(code, valid_window=1):
        return page("totp.html", status=401, next=target, error=words()["totp_failed"], csrf_form=session_csrf(session))
    with transaction(runtime().engine) as conn:
        value = promote_session(conn, session.id_hash, session.admin.id, now())
    return _with_cookie(redirect(target, code=303), value)


@blueprint.post("/logout")
def logout() -> Response:
    session = current_session()
    if session is not None:
        if not hmac.compare_digest(session_csrf(session), request.form.get("csrf", "")):
            return forbidden_form()
        with transaction(runtime().engine) as conn:
            close_session(conn, session.id_hash)
    response = redirect(f"{PREFIX}/login", code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


# ---- the setup link ---------------------------------------------------------------------------


@blueprint.get("/setup/<token>")
def setup_form(token: str) -> Response:
    if not _limits().setup_client.allow(current_client()):
        return _rate_limited()
    with transaction(runtime().engine, write=False) as conn:
        admin = admin_by_setup_token(conn, token, now())
    if admin is None:
        return _setup_refused()
    return _setup_page(admin, token)


def _setup_page(admin: AdminRow, token: str, *, errors: list[str] | None = None, status: int = 200) -> Response:
    return page(
        "setup.html",
        status=status,
        email=admin.email,
        errors=errors or [],
        min_length=MIN_LENGTH,
        action=f"{PREFIX}/setup/{token}",
        csrf_form=form_csrf(f"setup:{secret_hash(token)}"),
    )


def _setup_refused() -> Response:
    return page("message.html", status=410, title=words()["setup_refused_title"], message=words()["setup_refused_text"])


@blueprint.post("/setup/<token>")
def setup(token: str) -> Response:
    if not _limits().setup_client.allow(current_client()):
        return _rate_limited()
    with transaction(runtime().engine, write=False) as conn:
        admin = admin_by_setup_token(conn, token, now())
    if admin is None:
        return _setup_refused()
    if not form_csrf_ok(f"setup:{secret_hash(token)}"):
        return forbidden_form()
    password = request.form.get("password", "")
    problems = password_problems(password, request.form.get("password_confirm", ""), user_name=None, email=admin.email)
    if problems:
        return _setup_page(admin, token, errors=problems, status=422)
    password_hash = hash_password(password)  # before the transaction: argon2 takes a while
    with transaction(runtime().engine) as conn:
        done = complete_setup(conn, token, password_hash, now())
    if done is None:
        return _setup_refused()
    return _start_session(done, "full", f"{PREFIX}/")


# ---- enrolling the second factor ----------------------------------------------------------------


def _enrol_seal(candidate: str) -> str:
    """The secret offered travels in the form; this seal (bound to the session) proves bridge made it."""
    session = current_session()
    assert session is not None
    message = f"totp-enrol\x00{session.id_hash}\x00{candidate}".encode()
    return hmac.new(secret(), message, hashlib.sha256).hexdigest()


@blueprint.route("/me/totp", methods=["GET", "POST"])
@signed_in
def enrol_totp() -> Response:
    session = current_session()
    assert session is not None
    me = session.admin
    if request.method == "GET":
        if me.totp_secret is not None:
            return page("message.html", title=words()["totp_enrolled_title"], message=words()["totp_enrolled_text"])
        return _enrol_page(pyotp.random_base32())
    candidate = request.form.get("secret", "")
    if not hmac.compare_digest(_enrol_seal(candidate), request.form.get("seal", "")):
        return forbidden_form()
    code = "".join(request.form.get("code", "").split())
    if not pyotp.TOTP(candidate).verify(code, valid_window=1):
        return _enrol_page(candidate, error=words()["totp_failed"], status=422)
    with transaction(runtime().engine) as conn:
        set_totp_secret(conn, me.id, candidate)
    g.pop("console_session", None)
    return page("message.html", title=words()["totp_enrolled_title"], message=words()["totp_enrolled_text"])


def _enrol_page(candidate: str, *, error: str | None = None, status: int = 200) -> Response:
    me = current_session()
    assert me is not None
    uri = pyotp.TOTP(candidate).provisioning_uri(name=me.admin.email, issuer_name=ISSUER)
    grouped = " ".join(candidate[i : i + 4] for i in range(0, len(candidate), 4))
    return page(
        "enrol.html",
        status=status,
        secret=candidate,
        grouped=grouped,
        uri=uri,
        seal=_enrol_seal(candidate),
        error=error,
        required=bool(runtime().config.console["require_totp"]),
    )
