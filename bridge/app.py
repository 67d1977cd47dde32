"""Flask app factory: health endpoints here; SCIM, activation pages and metrics register blueprints."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from sqlalchemy import text

from bridge.runtime import Runtime
from bridge.store.db import is_current


def create_app(runtime: Runtime) -> Flask:
    app = Flask("bridge")
    app.config["MAX_CONTENT_LENGTH"] = int(runtime.config.server["max_body_bytes"])
    app.extensions["bridge"] = runtime

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        try:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current = is_current(runtime.engine)
        except Exception as exc:  # any database failure means "not ready", never a 500 page
            return jsonify(status="unavailable", database=type(exc).__name__), 503
        if not current:
            return jsonify(status="unavailable", database="migrations pending: run bridge db upgrade"), 503
        return jsonify(status="ok")

    _register_optional(app, runtime)
    return app


def _register_optional(app: Flask, runtime: Runtime) -> None:
    # Channels built in other modules plug in here when present.
    try:
        from bridge.scim.blueprint import register as register_scim  # type: ignore[import-not-found]
    except ImportError:
        return
    register_scim(app, runtime)
