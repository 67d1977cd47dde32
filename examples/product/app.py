"""The reference product's web side: bridge's webhooks, a sign-in page, a status page; and
`main()`, which reads the configuration and serves it with the feed follower beside it.

It talks to bridge over HTTP only (it imports nothing of bridge), as a vendor's product would.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, jsonify, request, session
from markupsafe import escape

from .follower import BridgeClient, BridgeError, Follower, Store, display_name

log = logging.getLogger("product")

SIGNATURE_HEADER = "Bridge-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300


def signature_is_valid(secret: bytes, header: str, body: bytes, now: float) -> bool:
    """bridge's `Bridge-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 keyed with the webhook
    secret over `"<t>." + raw body`. The timestamp is inside the MAC, so an old captured request
    is refused once it is older than the tolerance."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class Settings:
    bridge_url: str
    token: str
    webhook_secret: bytes
    db_path: Path
    host: str = "127.0.0.1"
    port: int = 5000
    poll_seconds: float = 60.0
    page_limit: int = 100
    secret_key: str = ""


def create_app(settings: Settings, store: Store, client: BridgeClient, follower: Follower) -> Flask:
    app = Flask(__name__)
    # Sessions are signed cookies: a fixed key keeps them across restarts, a random one does not.
    app.config.update(
        SECRET_KEY=settings.secret_key or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    received = Counter[str]()  # webhooks taken and refused, for /status (this process only)
    counting = threading.Lock()  # requests run on several threads

    @app.post("/webhooks/bridge")
    def webhook() -> tuple[Response, int]:
        body = request.get_data()  # the raw bytes: the signature is over them, not over parsed JSON
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not signature_is_valid(settings.webhook_secret, header, body, time.time()):
            with counting:
                received["refused"] += 1
            return jsonify(error="bad or missing Bridge-Signature"), 401
        try:
            json.loads(body)
        except ValueError:
            return jsonify(error="the body is not JSON"), 400
        # The webhook only says that something changed. Its event may be late, repeated or out
        # of order, and others may be lost: the feed, read now, is what gets applied.
        with counting:
            received["webhooks"] += 1
        follower.hint()
        return jsonify(accepted=True), 202

    @app.get("/status")
    def status() -> Response:
        return jsonify(
            **store.state(),
            webhooksReceived=received["webhooks"],
            webhooksRefused=received["refused"],
            lastError=follower.last_error,
            caughtUpAt=follower.caught_up_at,
        )

    @app.get("/")
    def home() -> str:
        user = store.user(session["user"]) if "user" in session else None
        if user is None or user["status"] != "active":
            return _page("Reference product", '<p>Not signed in. <a href="/signin">Sign in</a></p>')
        return _page("Reference product", _welcome(user))

    @app.get("/signin")
    def signin_form() -> str:
        return _page("Sign in", _FORM)

    @app.post("/signin")
    def signin() -> tuple[str, int]:
        login = request.form.get("userName", "").strip()
        password = request.form.get("password", "")
        if not login or not password:
            return _page("Sign in", "<p>Enter your user name and password.</p>" + _FORM), 400
        try:
            # Always asked, whatever the product knows of the user: the answer then takes as
            # long for a name that exists as for one that does not.
            answer = client.verify_password(login, password)
        except (requests.RequestException, BridgeError) as exc:
            log.warning("verify-password failed: %s", exc)
            return _page("Sign in", "<p>Sign-in is unavailable right now; try again shortly.</p>"), 503
        if not answer.get("valid"):
            if answer.get("reason") == "outside_login_hours":
                return _page("Sign in", "<p>You cannot sign in at this time.</p>"), 403
            return _page("Sign in", "<p>Wrong user name or password.</p>" + _FORM), 401
        # The password is right; the product's own copy decides whether it lets the person in.
        user = store.user_for_login(login)
        if user is None or user["status"] != "active":
            session.clear()
            return _page("Sign in", "<p>Your account is not active in this product.</p>"), 403
        session.clear()
        session["user"] = user["bridge_id"]
        return _page("Signed in", _welcome(user)), 200

    @app.post("/signout")
    def signout() -> tuple[str, int]:
        session.clear()
        return _page("Signed out", '<p>Signed out. <a href="/signin">Sign in</a></p>'), 200

    return app


_FORM = """<form method="post" action="/signin">
<label>User name or email <input name="userName" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form>"""


def _welcome(user: Any) -> str:
    roles = ", ".join(json.loads(user["roles"])) or "none"
    name = display_name(user)
    return f'<p>Signed in as <strong id="user">{escape(name)}</strong>.</p><p id="roles">Roles: {escape(roles)}</p>'


def _page(title: str, body: str) -> str:
    head = f"<!doctype html><html><head><title>{escape(title)}</title></head>"
    return f"{head}<body><h1>{escape(title)}</h1>{body}</body></html>"


# ---- configuration and start-up ---------------------------------------------------------------------


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Arguments override environment variables. Secrets come from the environment only (command
    lines are visible to every user of the machine)."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m examples.product", description=__doc__)
    parser.add_argument("--bridge-url", default=env("PRODUCT_BRIDGE_URL"), help="bridge's URL ($PRODUCT_BRIDGE_URL)")
    parser.add_argument("--db", default=env("PRODUCT_DB", "product.db"), help="SQLite file ($PRODUCT_DB)")
    parser.add_argument("--host", default=env("PRODUCT_HOST", "127.0.0.1"), help="$PRODUCT_HOST")
    parser.add_argument("--port", type=int, default=int(env("PRODUCT_PORT", "5000")), help="$PRODUCT_PORT")
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=float(env("PRODUCT_POLL_SECONDS", "60")),
        help="read the feed this often even without webhooks ($PRODUCT_POLL_SECONDS)",
    )
    parser.add_argument(
        "--page-limit", type=int, default=int(env("PRODUCT_PAGE_LIMIT", "100")), help="events or accounts per page"
    )
    args = parser.parse_args(argv)
    missing = [
        name
        for name, value in (
            ("--bridge-url / PRODUCT_BRIDGE_URL", args.bridge_url),
            ("PRODUCT_BRIDGE_TOKEN", env("PRODUCT_BRIDGE_TOKEN")),
            ("PRODUCT_WEBHOOK_SECRET", env("PRODUCT_WEBHOOK_SECRET")),
        )
        if not value
    ]
    if missing:
        parser.error(f"missing: {', '.join(missing)}")
    if not 1 <= args.page_limit <= 1000:
        parser.error("--page-limit must be from 1 to 1000 (bridge's bounds)")
    return Settings(
        bridge_url=args.bridge_url,
        token=env("PRODUCT_BRIDGE_TOKEN", ""),
        webhook_secret=env("PRODUCT_WEBHOOK_SECRET", "").encode(),
        db_path=Path(args.db),
        host=args.host,
        port=args.port,
        poll_seconds=args.poll_seconds,
        page_limit=args.page_limit,
        secret_key=env("PRODUCT_SECRET_KEY", ""),
    )


def main(argv: list[str] | None = None) -> None:
    from waitress import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_settings(argv)
    store = Store(settings.db_path)
    client = BridgeClient(settings.bridge_url, settings.token)
    follower = Follower(store, client, poll_seconds=settings.poll_seconds, page_limit=settings.page_limit)
    app = create_app(settings, store, client, follower)
    # SIGTERM ends the server like Ctrl-C. Nothing needs flushing on the way out: every change
    # and its cursor are already committed together, so even SIGKILL loses nothing.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    follower.start()
    log.info("reference product on http://%s:%d, following %s", settings.host, settings.port, settings.bridge_url)
    try:
        serve(app, host=settings.host, port=settings.port, threads=4, _quiet=True)
    finally:
        follower.stop()
