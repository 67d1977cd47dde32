"""The console at `{public_url}/admin/`: operators and tenant administrators see what bridge did
and act on it (issue 15).

A door like SCIM: it reads through `bridge.store` and acts through the same core and apply code
as the CLI; nothing is decided in a view or a template. This module holds what every page
shares: the blueprint, who is asking (`auth.py` signs them in), the tenant scope (a tenant
administrator asking for another tenant's page or action gets 404, the same as a tenant that
does not exist), CSRF, the response headers and rendering in the reader's language.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, abort, current_app, g, redirect, request
from jinja2 import Environment, PackageLoader, select_autoescape

from bridge.errors import NotFound
from bridge.runtime import Runtime
from bridge.store.admins import AdminRow, SessionRow, session_admin, touch_session
from bridge.store.db import transaction
from bridge.store.tenants import get_tenant
from bridge.web.i18n import CONSOLE

SESSION_COOKIE = "bridge_admin"
FORM_COOKIE = "bridge_admin_form"  # CSRF before there is a session (sign-in, setup)
LANG_COOKIE = "bridge_lang"
PREFIX = "/admin"
# A session's last-seen time is written at most this often: every page would otherwise be a write.
TOUCH_EVERY = timedelta(seconds=60)

blueprint = Blueprint("console", __name__, url_prefix=PREFIX)
_pages = Environment(
    loader=PackageLoader("bridge.web", "templates/console"), autoescape=select_autoescape(default=True)
)
STYLESHEET = (Path(__file__).parent / "console.css").read_bytes()
STYLESHEET_VERSION = hashlib.sha256(STYLESHEET).hexdigest()[:12]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    paused_at: datetime | None = None  # bridge.engine.pause


def register(app: Flask, runtime: Runtime) -> None:
    from bridge.web.console import (  # noqa: F401  (their routes join the blueprint)
        actions,
        auth,
        people,
        plans,
        requestlog,
        screens,
        understand,
    )

    auth.register_limits(app, runtime)
    app.register_blueprint(blueprint)


def runtime() -> Runtime:
    value: Runtime = current_app.extensions["bridge"]
    return value


def now() -> datetime:
    return datetime.now(UTC)


def secret() -> bytes:
    from bridge.notify.secret import server_secret

    app = current_app
    if "bridge.server_secret" not in app.extensions:
        app.extensions["bridge.server_secret"] = server_secret(runtime().config)
    value: bytes = app.extensions["bridge.server_secret"]
    return value


def secure_cookies() -> bool:
    return str(runtime().config.server["public_url"]).startswith("https:")


# ---- who asks -------------------------------------------------------------------------------


def current_session() -> SessionRow | None:
    """The session the cookie names, if it is within its idle and absolute limits."""
    if "console_session" in g:
        found: SessionRow | None = g.console_session
        return found
    value = request.cookies.get(SESSION_COOKIE, "")
    found = None
    if 20 <= len(value) <= 100 and value.isascii():
        settings = runtime().config.console
        moment = now()
        with transaction(runtime().engine) as conn:
            found = session_admin(
                conn,
                value,
                idle_after=moment - timedelta(minutes=int(settings["idle_minutes"])),
                opened_after=moment - timedelta(hours=int(settings["session_hours"])),
            )
            if found is not None and moment - found.last_seen_at >= TOUCH_EVERY:
                touch_session(conn, found.id_hash, moment)
    g.console_session = found
    return found


def admin() -> AdminRow:
    session = current_session()
    assert session is not None and session.stage == "full", "only behind @signed_in"
    return session.admin


def actor() -> str:
    return f"admin:{admin().email}"


def signed_in(view: F) -> F:
    """The page needs a full session (password, and the second factor when enrolled or required)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = current_session()
        if session is None:
            return redirect(f"{PREFIX}/login?next={_quoted_path()}", code=303)
        if session.stage != "full":
            return redirect(f"{PREFIX}/login/totp", code=303)
        if (
            runtime().config.console["require_totp"]
            and session.admin.totp_secret is None
            and request.endpoint
            not in (
                "console.enrol_totp",
                "console.logout",
            )
        ):
            return redirect(f"{PREFIX}/me/totp", code=303)
        if request.method == "POST" and not csrf_ok(session_csrf(session)):
            return forbidden_form()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _quoted_path() -> str:
    from urllib.parse import quote

    return quote(request.full_path.rstrip("?"), safe="")


def tenant_scope(name: str) -> Tenant:
    """The tenant a page is about, if the administrator may see it; 404 otherwise, so a tenant
    administrator cannot even tell which other tenants exist."""
    config = runtime().config
    if config.tenant(name) is None:
        abort(404)
    try:
        with transaction(runtime().engine, write=False) as conn:
            row = get_tenant(conn, name)
    except NotFound:
        abort(404)
    if not admin().may_see(row.id):
        abort(404)
    return Tenant(id=row.id, name=row.name, paused_at=row.paused_at)


# ---- CSRF -----------------------------------------------------------------------------------


def session_csrf(session: SessionRow) -> str:
    """Bound to the session: a form from another session, or from before sign-in, is refused."""
    return hmac.new(secret(), f"console-csrf\x00{session.id_hash}".encode(), hashlib.sha256).hexdigest()


def form_csrf(purpose: str) -> str:
    """Before a session exists: a double-submit cookie, the form value an HMAC of it."""
    nonce = request.cookies.get(FORM_COOKIE, "")
    if not (16 <= len(nonce) <= 64) or not nonce.isascii():
        nonce = g.get("new_form_nonce") or secrets.token_urlsafe(24)
        g.new_form_nonce = nonce
    return hmac.new(secret(), f"console-form\x00{purpose}\x00{nonce}".encode(), hashlib.sha256).hexdigest()


def form_csrf_ok(purpose: str) -> bool:
    nonce = request.cookies.get(FORM_COOKIE, "")
    if not nonce:
        return False
    expected = hmac.new(secret(), f"console-form\x00{purpose}\x00{nonce}".encode(), hashlib.sha256).hexdigest()
    return csrf_ok(expected)


def csrf_ok(expected: str) -> bool:
    return hmac.compare_digest(expected, request.form.get("csrf", ""))


def csrf_field() -> str:
    session = current_session()
    return session_csrf(session) if session is not None else ""


def forbidden_form() -> Response:
    return page("message.html", status=403, title=words()["csrf_title"], message=words()["csrf_text"])


# ---- language and rendering ----------------------------------------------------------------


def language() -> str:
    chosen = request.args.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen in CONSOLE:
        if request.args.get("lang") in CONSOLE:
            g.set_language = chosen
        return chosen
    return request.accept_languages.best_match(list(CONSOLE)) or "en"


def words() -> dict[str, str]:
    return CONSOLE[language()]


def page(template: str, *, status: int = 200, **values: Any) -> Response:
    lang = language()
    session = current_session()
    who = session.admin if session is not None and session.stage == "full" else None
    html = _pages.get_template(template).render(
        lang=lang,
        other_lang="fr" if lang == "en" else "en",
        t=CONSOLE[lang],
        me=who,
        csrf=csrf_field(),
        stylesheet=f"{PREFIX}/console.css?v={STYLESHEET_VERSION}",
        prefix=PREFIX,
        **values,
    )
    return Response(html, status=status, content_type="text/html; charset=utf-8")


@blueprint.get("/console.css")
def stylesheet() -> Response:
    response = Response(STYLESHEET, content_type="text/css; charset=utf-8")
    response.headers["Cache-Control"] = "public, max-age=86400, immutable"
    return response


@blueprint.after_request
def _headers(response: Response) -> Response:
    nonce = g.pop("new_form_nonce", None)
    if nonce:
        response.set_cookie(FORM_COOKIE, nonce, path=PREFIX, httponly=True, samesite="Strict", secure=secure_cookies())
    lang = g.pop("set_language", None)
    if lang:
        response.set_cookie(
            LANG_COOKIE, lang, path=PREFIX, max_age=365 * 86400, samesite="Lax", secure=secure_cookies()
        )
    # No script at all, styles only from bridge itself, forms only back to bridge.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "console.stylesheet":
        response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.errorhandler(404)
def _not_found(_error: Exception) -> Response:
    return page("message.html", status=404, title=words()["not_found_title"], message=words()["not_found_text"])
