"""Webhooks to the product: signed JSON POSTs. Whether an endpoint is enabled (a 410 disables it)
is kept by `bridge.store.webhooks`.

Signature: header `Bridge-Signature: t=<unix seconds>,v1=<hex>` where the hex is
HMAC-SHA256(secret, "<t>." + raw body). The timestamp is inside the MAC so a captured request
cannot be replayed later than the receiver's tolerance; the event `id` lets it drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import requests

SIGNATURE_HEADER = "Bridge-Signature"
EVENT_ID_HEADER = "Bridge-Event-Id"
EVENT_TYPE_HEADER = "Bridge-Event-Type"
DEFAULT_TOLERANCE_SECONDS = 300


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
