"""Activation pages: `GET /activate/<token>` shows the form, `POST` activates.

GET never changes anything: mail scanners (Outlook Safe Links, Proofpoint) open every link in a
mail before the person does, and must not use it up. So even with `activation = "sso"`, where
there is no password, confirming is a button (a POST), followed by the redirect to the tenant's
`login_url`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, g, redirect, request
from jinja2 import Environment, PackageLoader

from bridge.config import TenantConfig
from bridge.notify.activation import LinkInfo, LinkRefused, LinkState, activate, look_up, token_hash
from bridge.notify.mail import format_date, pick_language, valid_address
from bridge.notify.secret import server_secret
from bridge.runtime import Runtime
from bridge.store.activation import pending_accounts_by_email
from bridge.store.db import transaction
from bridge.store.ids import fold
from bridge.web.client import current_client
from bridge.web.i18n import MESSAGES
from bridge.web.passwords import MIN_LENGTH, hash_password, password_problems
from bridge.web.ratelimit import Limiter, limiter

CSRF_COOKIE = "bridge_csrf"
ACTOR = "web:activation"

CSS = (
    "body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1a1a1a;"
    "background:#f4f5f7;line-height:1.5}"
    "main{max-width:32rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.15)}"
    "h1{font-size:1.5rem;margin-top:0}label{display:block;font-weight:600;margin-top:1.25rem}"
    ".hint{margin:.25rem 0;color:#4a4a4a;font-size:.95rem}"
    "input[type=password],input[type=email]{box-sizing:border-box;width:100%;padding:.6rem;font-size:1rem;"
    "border:2px solid #5f6368;border-radius:4px;margin-top:.25rem}"
    "button,.button{display:inline-block;margin-top:1.5rem;padding:.7rem 1.4rem;font-size:1rem;border:0;"
    "border-radius:4px;background:#0b57d0;color:#fff;text-decoration:none;cursor:pointer}"
    ":focus-visible{outline:3px solid #e37400;outline-offset:2px}"
    ".errors{border-left:4px solid #b3261e;background:#fce8e6;padding:.5rem 1rem;margin-bottom:1rem}"
    ".lang{margin-top:2rem;font-size:.9rem}"
)
# The page's only style block, allowed by hash: no 'unsafe-inline', no external asset.
CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()

_pages = Environment(loader=PackageLoader("bridge.web", "templates"), autoescape=True)


@dataclass
class Limits:
    """Per link: guessing a password confirmation or hammering one link. Per client address:
    trying many links. Per email address: mail bombing someone through the new-link form."""

    per_token: Limiter
    per_client: Limiter
    new_link_client: Limiter
    new_link_email: Limiter


def register(app: Flask, runtime: Runtime) -> None:
    engine = runtime.engine
    app.extensions["bridge.activation_limits"] = Limits(
        per_token=limiter(engine, "activation.token", 10, 15 * 60),
        per_client=limiter(engine, "activation.client", 60, 15 * 60),
        new_link_client=limiter(engine, "new_link.client", 10, 60 * 60),
        new_link_email=limiter(engine, "new_link.email", 3, 60 * 60),
    )
    app.register_blueprint(blueprint)


blueprint = Blueprint("activation", __name__)


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["bridge"]
    return runtime


def _limits() -> Limits:
    limits: Limits = current_app.extensions["bridge.activation_limits"]
    return limits


def _secret() -> bytes:
    app = current_app
    if "bridge.server_secret" not in app.extensions:
        app.extensions["bridge.server_secret"] = server_secret(_runtime().config)
    secret: bytes = app.extensions["bridge.server_secret"]
    return secret


def _now() -> datetime:
    return datetime.now(UTC)


# ---- CSRF: a double-submit cookie, with the form value bound to the cookie and the link ------


def _csrf_nonce() -> str:
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if not (16 <= len(nonce) <= 64) or not nonce.isascii():
        nonce = g.get("new_csrf_nonce") or secrets.token_urlsafe(24)
        g.new_csrf_nonce = nonce
    return nonce


def _csrf_value(purpose: str, nonce: str) -> str:
    return hmac.new(_secret(), f"csrf\x00{purpose}\x00{nonce}".encode(), hashlib.sha256).hexdigest()


def _csrf_ok(purpose: str) -> bool:
    nonce = request.cookies.get(CSRF_COOKIE, "")
    sent = request.form.get("csrf", "")
    return bool(nonce) and hmac.compare_digest(_csrf_value(purpose, nonce), sent)


@blueprint.after_request
def _headers(response: Response) -> Response:
    nonce = g.pop("new_csrf_nonce", None)
    if nonce:
        secure = _runtime().config.server["public_url"].startswith("https:")
        response.set_cookie(CSRF_COOKIE, nonce, path="/activate", httponly=True, samesite="Strict", secure=secure)
    form_action = ["'self'", *g.get("extra_form_action", [])]
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src '{CSS_HASH}'; form-action {' '.join(form_action)}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    # The link is a credential: never let it leak through a Referer, a cache or a frame.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    return response


# ---- rendering ------------------------------------------------------------------------------------


def _language(*preferred: str | None) -> str:
    return pick_language(request.values.get("lang"), *preferred, request.accept_languages.best_match(["en", "fr"]))


def _page(
    lang: str, title_key: str, *, status: int = 200, paragraphs: list[str] | None = None, **values: Any
) -> Response:
    t = MESSAGES[lang]
    html = _pages.get_template("page.html").render(
        lang=lang,
        other_lang="fr" if lang == "en" else "en",
        t=t,
        title=t[title_key],
        css=CSS,
        paragraphs=paragraphs or [],
        min_length=MIN_LENGTH,
        new_link_action="/activate/new-link",
        csrf=values.pop("csrf", ""),
        errors=values.pop("errors", []),
        view=values.pop("view", ""),
        login_url=values.pop("login_url", None),
        **values,
    )
    return Response(html, status=status, content_type="text/html; charset=utf-8")


def _refused(state: LinkState, lang: str) -> Response:
    t = MESSAGES[lang]
    key = f"refused_{state.value}"
    status = 404 if state is LinkState.UNKNOWN else 410
    return _page(
        lang,
        f"{key}_title",
        status=status,
        view="new_link",
        csrf=_csrf_value("new-link", _csrf_nonce()),
        paragraphs=[t[f"{key}_text"], t["new_link_intro"]],
    )


def _rate_limited(lang: str) -> Response:
    response = _page(lang, "rate_title", status=429, paragraphs=[MESSAGES[lang]["rate_text"]])
    response.headers["Retry-After"] = "900"
    return response


def _client() -> str:
    return current_client()


def _tenant_config(info: LinkInfo) -> TenantConfig | None:
    return _runtime().config.tenant(info.tenant or "")


def _form(info: LinkInfo, raw: str, lang: str, *, errors: list[str] | None = None, status: int = 200) -> Response:
    t = MESSAGES[lang]
    tenant_cfg = _tenant_config(info)
    sso = tenant_cfg is not None and tenant_cfg.activation == "sso"
    name = info.given_name or info.user_name or ""
    expires = t["expires"].format(date=format_date(info.expires_at, lang)) if info.expires_at else ""
    if sso and tenant_cfg is not None and tenant_cfg.login_url:
        g.extra_form_action = [_origin(tenant_cfg.login_url)]
    return _page(
        lang,
        "confirm_title" if sso else "activate_title",
        status=status,
        errors=errors or [],
        view="confirm" if sso else "password",
        csrf=_csrf_value(token_hash(raw), _csrf_nonce()),
        action=f"/activate/{raw}",
        user_name=info.user_name or "",
        paragraphs=[t["confirm_intro" if sso else "activate_intro"].format(name=name, tenant=info.tenant), expires],
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# ---- routes ---------------------------------------------------------------------------------------


@blueprint.get("/activate/new-link")
def new_link_form() -> Response:
    lang = _language()
    return _page(
        lang,
        "new_link_title",
        view="new_link",
        csrf=_csrf_value("new-link", _csrf_nonce()),
        paragraphs=[MESSAGES[lang]["new_link_intro"]],
    )


@blueprint.post("/activate/new-link")
def new_link_request() -> Response:
    lang = _language()
    limits = _limits()
    email = request.form.get("email", "").strip()
    if not limits.new_link_client.allow(_client()):
        return _rate_limited(lang)
    if not _csrf_ok("new-link"):
        return _page(lang, "csrf_title", status=403, paragraphs=[MESSAGES[lang]["csrf_text"]])
    # The same answer whether or not the address is known, and the per-address limit counts
    # unknown addresses too, so neither the page nor a 429 tells which addresses exist.
    if valid_address(email) and len(email) <= 320 and limits.new_link_email.allow(fold(email)):
        _resend_for(email)
    return _page(lang, "new_link_sent_title", paragraphs=[MESSAGES[lang]["new_link_sent_text"]])


def _resend_for(email: str) -> None:
    from bridge.provision.apply import ApplyContext
    from bridge.provision.replan import resend_activation

    runtime = _runtime()
    now = _now()
    with transaction(runtime.engine) as conn:
        for row in pending_accounts_by_email(conn, fold(email)):
            ctx = ApplyContext.for_tenant(
                runtime.config,
                row.tenant_id,
                row.tenant_name,
                actor="web:new-link",
                correlation_id=f"web-{uuid.uuid4().hex[:16]}",
                now=now,
            )
            resend_activation(conn, row, ctx)


@blueprint.get("/activate/<token>")
def show(token: str) -> Response:
    limits = _limits()
    if not limits.per_client.allow(_client()):
        return _rate_limited(_language())
    with transaction(_runtime().engine, write=False) as conn:
        info = look_up(conn, token, _now())
    tenant_cfg = _tenant_config(info)
    lang = _language(info.language, tenant_cfg.default_language if tenant_cfg else None)
    if info.state is not LinkState.VALID:
        return _refused(info.state, lang)
    return _form(info, token, lang)


@blueprint.post("/activate/<token>")
def use(token: str) -> Response:
    limits = _limits()
    runtime = _runtime()
    if not limits.per_client.allow(_client()) or not limits.per_token.allow(token_hash(token)):
        return _rate_limited(_language())
    with transaction(runtime.engine, write=False) as conn:
        info = look_up(conn, token, _now())
    tenant_cfg = _tenant_config(info)
    lang = _language(info.language, tenant_cfg.default_language if tenant_cfg else None)
    if info.state is not LinkState.VALID:
        return _refused(info.state, lang)
    if not _csrf_ok(token_hash(token)):
        return _page(lang, "csrf_title", status=403, paragraphs=[MESSAGES[lang]["csrf_text"]])
    sso = tenant_cfg is not None and tenant_cfg.activation == "sso"
    password_hash = None
    if not sso:
        password = request.form.get("password", "")
        problems = password_problems(
            password, request.form.get("password_confirm", ""), user_name=info.user_name, email=info.email
        )
        if problems:
            return _form(info, token, lang, errors=problems, status=422)
        # Hashed before the transaction opens: argon2 takes tens of milliseconds and SQLite
        # would hold its write lock meanwhile.
        password_hash = hash_password(password)
    try:
        with transaction(runtime.engine) as conn:
            activate(
                conn,
                token,
                _now(),
                password_hash=password_hash,
                actor=ACTOR,
                correlation_id=g.get("request_id") or f"web-{uuid.uuid4().hex[:16]}",
                webhooks=bool(runtime.config.webhook.get("url")),
            )
    except LinkRefused as exc:
        return _refused(exc.state, lang)
    login_url = tenant_cfg.login_url if tenant_cfg else None
    if sso and login_url:
        return redirect(login_url, code=303)
    return _page(
        lang,
        "done_title",
        login_url=login_url,
        paragraphs=[MESSAGES[lang]["done_text"].format(tenant=info.tenant)],
    )
