"""The SCIM request log's capture (issue 16): what a tenant's identity provider sent and what
bridge answered, so its IT administrator can see it on the console.

Every authenticated request to /scim/v2 (the Flask routes and the fast lane alike) is handed to
`RequestLog.record` once its answer is built. Recording is a `put` on an in-process queue: the
request never waits for the log's write and never fails because of it. One writer thread per
process takes whatever is queued, redacts and cuts the bodies, and inserts the rows in one short
transaction of their own (under load, many requests per transaction, so the log adds one write
per batch rather than one per request to SQLite's single writer). A failed write is logged and
its rows are dropped; so are rows beyond `MAX_PENDING` while the database is unreachable. A
process that ends drains what is queued at exit; a process killed loses its last few rows.

Redaction, before anything is stored (`redact_body`):
- a member whose name contains `password`, `secret` or `token` (any case, at any depth: the
  core User's `password`, an extension's `clientSecret`, Entra's path-keyed
  `urn:...:User:password`) has its value replaced by "[redacted]";
- a PATCH operation (any object with a `path`) whose path names such an attribute has its
  `value` replaced, whatever its shape (`{"path": "password", "value": "..."}`);
- every other string goes through the log filter's masks (`bridge.logs.redact`: bearer tokens,
  bridge tokens, `password=...` pairs, activation links, passwords in URLs);
- a body that is not JSON is not kept at all (only its size): its secrets cannot be found
  reliably. Headers are never stored (the Authorization header included); the query string is
  replaced by "[redacted]" when it names such an attribute.
Bodies are kept up to `MAX_BODY` characters of their compact JSON, and marked truncated.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

from sqlalchemy import Engine

from bridge import jsonfast
from bridge.logs import redact
from bridge.store.db import transaction
from bridge.store.requestlog import insert_requests

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
SENSITIVE = ("password", "secret", "token")
MAX_BODY = 64 * 1024  # characters of a body's compact JSON
MAX_PATH = 2000
MAX_PENDING = 10_000  # rows waiting for the writer; beyond it (database down) new ones are dropped
BATCH = 500
FLUSH_DELAY = 0.2  # seconds a first queued request waits for others to share its transaction
_WARN_EVERY = 60.0  # seconds between two log lines about failed writes


@dataclass(frozen=True, slots=True)
class Captured:
    """One request as the door saw it, raw: the writer thread redacts it."""

    tenant_id: int
    token_id: str | None
    finished_at: datetime
    duration: float  # seconds
    method: str
    path: str
    query: str
    status: int
    user_agent: str | None
    client: str | None
    request_id: str
    request_body: bytes
    response_body: bytes


def sensitive(name: str) -> bool:
    folded = name.casefold()
    return "password" in folded or "secret" in folded or "token" in folded  # SENSITIVE


def redact_value(value: Any) -> Any:
    """`value` (decoded JSON) with the value of every sensitive member and PATCH operation
    replaced; strings are masked afterwards, on the whole text (`redact_body`)."""
    if isinstance(value, dict):
        path = next((v for k, v in value.items() if isinstance(k, str) and k.casefold() == "path"), None)
        hide_value = isinstance(path, str) and sensitive(path)
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if sensitive(name) or (hide_value and name.casefold() == "value"):
                out[key] = REDACTED
            else:
                out[key] = redact_value(item)
        return out
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    return value


def _plain(raw: bytes) -> bool:
    """Whether no member name or path in `raw` can be sensitive: none of the words appears in any
    case, and no escape or other alphabet could spell one (`"pass\\u0077ord"`, a Kelvin sign for
    the k of token). Most bodies (every lookup's answer) are so, and skip the walk."""
    if b"\\u" in raw or not raw.isascii():  # bytes.lower() folds ASCII only
        return False
    folded = raw.lower()
    return b"password" not in folded and b"secret" not in folded and b"token" not in folded  # SENSITIVE


def redact_body(raw: bytes, *, made_here: bool = False) -> tuple[str | None, bool]:
    """(the body as stored, whether it was cut): None for an empty body. `made_here`: a response
    bridge wrote (always SCIM JSON), which a plain body need not be parsed to be trusted."""
    if not raw:
        return None, False
    plain = _plain(raw)
    if plain and made_here:
        text = raw.decode("ascii")
    else:
        try:
            decoded = jsonfast.loads(raw)
        except ValueError:
            return f"(not JSON: {len(raw)} bytes, not kept)", False
        text = raw.decode("ascii") if plain else jsonfast.dumps(redact_value(decoded))
    # The log masks (bearer and bridge tokens, `password=` pairs, activation links) on the
    # whole text at once: a few regular-expression scans instead of five per string.
    text = redact(text)
    if len(text) > MAX_BODY:
        return text[:MAX_BODY], True
    return text, False


def stored_path(path: str, query: str) -> str:
    if query:
        shown = "[redacted]" if sensitive(unquote_plus(query)) else query
        path = f"{path}?{shown}"
    return redact(path)[:MAX_PATH]


def row_of(entry: Captured) -> dict[str, Any]:
    request_body, cut_request = redact_body(entry.request_body)
    response_body, cut_response = redact_body(entry.response_body, made_here=True)
    return {
        "tenant_id": entry.tenant_id,
        "token_id": entry.token_id or None,
        "occurred_at": entry.finished_at - timedelta(seconds=entry.duration),
        "method": entry.method[:10],
        "path": stored_path(entry.path, entry.query),
        "status": entry.status,
        "user_agent": redact(entry.user_agent)[:300] if entry.user_agent else None,
        "client": (entry.client or "")[:64] or None,
        "duration_ms": max(0, round(entry.duration * 1000)),
        "request_id": entry.request_id[:64],
        "request_body": request_body,
        "response_body": response_body,
        "truncated": cut_request or cut_response,
    }


class RequestLog:
    """The queue and its writer thread, started in the process that serves (after any fork)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pid = 0
        self._queue: queue.SimpleQueue[Captured | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._warned = 0.0
        self._dropped = 0

    def record(self, entry: Captured) -> None:
        """Queue one request; never raises, never waits."""
        try:
            if self._pid != os.getpid():
                self._start()
            if self._queue.qsize() >= MAX_PENDING:
                self._dropped += 1
                return
            self._queue.put(entry)
        except Exception:  # the log must never fail a request
            log.exception("the SCIM request log could not queue a request")

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked worker inherits the queue object but not the thread: a fresh queue and
            # thread of its own.
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="scim-request-log", daemon=True).start()
            atexit.register(self.drain)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            # What arrives meanwhile joins the batch: one transaction per FLUSH_DELAY under load,
            # where one per request would cost the serving threads more than the lookups.
            time.sleep(FLUSH_DELAY)
            batch = self._batch(first)
            self._write(batch)
            while len(batch) == BATCH:  # more waiting than a batch: on at once, no new delay
                try:
                    first = self._queue.get_nowait()
                except queue.Empty:
                    break
                if first is None:
                    return
                batch = self._batch(first)
                self._write(batch)
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                self._warn(f"the SCIM request log dropped {dropped} requests: more than {MAX_PENDING} were waiting")

    def _batch(self, first: Captured) -> list[Captured]:
        batch = [first]
        while len(batch) < BATCH:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # the stop signal, for the loop
                break
            batch.append(more)
        return batch

    def _write(self, batch: list[Captured]) -> None:
        try:
            rows = []
            for n, entry in enumerate(batch, 1):
                rows.append(row_of(entry))
                if n % 16 == 0:
                    # Let the serving threads have the GIL: otherwise they wait for the switch
                    # interval (5 ms) while a batch is redacted, which a lone client feels.
                    time.sleep(0)
            with transaction(self.engine) as conn:
                insert_requests(conn, rows)
        except Exception as exc:
            # Never retried: a request log that falls behind would delay itself further.
            self._warn(f"the SCIM request log dropped {len(batch)} requests: {exc}")

    def _warn(self, message: str) -> None:
        moment = time.monotonic()
        if moment - self._warned >= _WARN_EVERY:  # one line a minute while the database is down
            self._warned = moment
            log.warning("%s", message)

    def drain(self) -> None:
        """Write what is queued now (at exit; tests)."""
        batch: list[Captured] = []
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not None:
                batch.append(entry)
        for start in range(0, len(batch), BATCH):
            self._write(batch[start : start + BATCH])
