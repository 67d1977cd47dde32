"""Webhooks to the product: signed JSON POSTs, and the endpoint's enabled/disabled state.

Signature: header `Bridge-Signature: t=<unix seconds>,v1=<hex>` where the hex is
HMAC-SHA256(secret, "<t>." + raw body). The timestamp is inside the MAC so a captured request
cannot be replayed later than the receiver's tolerance; the event `id` lets it drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from sqlalchemy import Connection, insert, select, update

from bridge.store.audit import record_tenant_event
from bridge.store.tables import WebhookEndpoint

SIGNATURE_HEADER = "Bridge-Signature"
EVENT_ID_HEADER = "Bridge-Event-Id"
EVENT_TYPE_HEADER = "Bridge-Event-Type"
DEFAULT_TOLERANCE_SECONDS = 300

endpoints = WebhookEndpoint.__table__


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str, body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """What a receiver does (also in docs/operations/email-and-webhooks.md)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def encode_event(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str).encode()


@dataclass(frozen=True)
class Outcome:
    ok: bool
    gone: bool = False  # 410: the receiver asks us to stop
    error: str | None = None


class WebhookSender:
    """One `requests.Session` (keep-alive) for a batch; connect and read timeouts on every call."""

    def __init__(self, url: str, secret: bytes, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = (min(timeout, 5.0), timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "bridge-webhooks/1"

    def post(self, payload: dict[str, Any], timestamp: int) -> Outcome:
        body = encode_event(payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, timestamp, body),
            EVENT_ID_HEADER: str(payload.get("id", "")),
            EVENT_TYPE_HEADER: str(payload.get("type", "")),
        }
        try:
            # No redirects: requests would turn a 301/302 POST into a GET and drop the body.
            response = self.session.post(
                self.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return Outcome(ok=True)
        if status == 410:
            return Outcome(ok=False, gone=True, error="410 Gone: the receiver disabled this endpoint")
        return Outcome(ok=False, error=f"HTTP {status} {response.reason or ''}".strip())

    def close(self) -> None:
        self.session.close()


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def endpoint_disabled(conn: Connection, url: str) -> str | None:
    """The reason the endpoint is disabled, or None when it is enabled."""
    row = conn.execute(
        select(endpoints.c.disabled_at, endpoints.c.disabled_reason).where(endpoints.c.url_hash == url_key(url))
    ).first()
    if row is None or row.disabled_at is None:
        return None
    return row.disabled_reason or "disabled"


def disable_endpoint(conn: Connection, url: str, reason: str, now: datetime, *, tenant_id: int, actor: str) -> bool:
    """Disable `url` (idempotent); the first disabling writes an audit event for `tenant_id`."""
    key = url_key(url)
    row = conn.execute(select(endpoints.c.disabled_at).where(endpoints.c.url_hash == key)).first()
    if row is not None and row.disabled_at is not None:
        return False
    if row is None:
        conn.execute(
            insert(endpoints).values(url_hash=key, url=url, disabled_at=now, disabled_reason=reason, updated_at=now)
        )
    else:
        conn.execute(
            update(endpoints)
            .where(endpoints.c.url_hash == key)
            .values(disabled_at=now, disabled_reason=reason, updated_at=now)
        )
    record_tenant_event(
        conn,
        tenant_id,
        actor=actor,
        action="webhook_disabled",
        before={"webhook": "enabled"},
        after={"webhook": "disabled", "url": url},
        reason=reason,
        correlation_id=None,
        now=now,
    )
    return True


def enable_endpoint(conn: Connection, url: str, now: datetime) -> bool:
    result = conn.execute(
        update(endpoints)
        .where(endpoints.c.url_hash == url_key(url), endpoints.c.disabled_at.is_not(None))
        .values(disabled_at=None, disabled_reason=None, updated_at=now)
    )
    return result.rowcount == 1
