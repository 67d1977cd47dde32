"""Logging: one line per event, text or JSON (`[logging] format`), with the correlation id of
the sync run or HTTP request that caused it. Secrets never reach a log line: bearer tokens,
bridge tokens and password-like key/value pairs are masked by a filter on every handler.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# Each pattern with the words one of which any match contains (casefolded): a case-insensitive
# scan costs tens of microseconds on a SCIM body, a substring test on the folded text almost
# nothing, and most texts (every lookup the request log keeps) hold none of them.
_SECRET_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]", ("bearer",)),
    (re.compile(r"brg_[A-Za-z0-9_-]{10,}"), "brg_[redacted]", ("brg_",)),
    (
        re.compile(r"(?i)((?:password|passwd|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        r"\1[redacted]",
        ("password", "passwd", "secret", "token"),
    ),
    (re.compile(r"/activate/[A-Za-z0-9_-]{16,}"), "/activate/[redacted]", ("/activate/",)),
    # The password in a URL's user-info (`postgresql://bridge:s3cret@db/bridge`, `ldaps://u:p@h`).
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1[redacted]@", ("://",)),
]


def redact(text: str) -> str:
    # casefold, not lower: (?i) also matches the Kelvin sign for "k" and the long s for "s".
    folded = text.casefold()
    for pattern, replacement, words in _SECRET_PATTERNS:
        for word in words:  # a plain loop: a generator per pattern cost more than the tests
            if word in folded:
                text = pattern.sub(replacement, text)
                break
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # an access line, redacted field by field (log_access)
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if not getattr(record, "correlation_id", None):
            record.correlation_id = correlation_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "correlation_id", None):
            entry["correlation_id"] = record.correlation_id
        access = getattr(record, "access", None)
        if access:
            entry.update(access)  # its fields are redacted already (log_access)
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # The message is redacted by the filter; a traceback's text (an exception's message, a
        # frame's source line) can hold a URL with a password or a token as well, so it is redacted
        # here. Not the whole line: the logger's name (`bridge.notify.secret: ...`) would read as a
        # `secret: value` pair. A traceback another handler formatted and cached is formatted again.
        record.exc_text = None
        line = super().format(record)
        cid = getattr(record, "correlation_id", None)
        return f"{line} [{cid}]" if cid else line

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._bridge = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Replace only our own handler, so calling this twice (tests, embedding) leaves others be.
    for existing in list(root.handlers):
        if getattr(existing, "_bridge", False):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler logs every tick at INFO; its warnings and errors are what operators need.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Alembic announces its dialect on every readiness probe (/readyz checks the revision).
    logging.getLogger("alembic").setLevel(logging.WARNING)


# ---- the access log (`[server] access_log`) -----------------------------------------------------

access_log = logging.getLogger("bridge.access")
_MAX_PATH = 300
_MAX_KEYS = 10


def _printable(text: str, limit: int) -> str:
    """`text` cut to `limit` with anything unprintable escaped: a path is decoded from the request
    line, and a `%0A` in it must not start a line of its own in the log."""
    text = text[:limit]
    return text if text.isprintable() else "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def query_keys(query_string: str) -> list[str]:
    """The names of a query's parameters, without their values: values carry filters on names and
    addresses (personal data) and, from a careless client, tokens."""
    keys: list[str] = []
    for part in query_string.split("&"):
        key = part.partition("=")[0]
        if key:
            key = _printable(unquote_plus(key), 40)
            if key not in keys:
                keys.append(key)
        if len(keys) >= _MAX_KEYS:
            break
    return keys


# Where a secret could start, for any of _SECRET_PATTERNS: substring checks on the request's
# fields instead of five substitutions on every request; the substitutions run on a field only
# when the fields hold one of these.
_SUSPECT = ("bearer", "brg_", "passw", "secret", "token", "/activate/", "://")


def _suspect(*texts: str) -> bool:
    joined = "\n".join(texts).lower()
    return any(s in joined for s in _SUSPECT)


def log_access(
    method: str,
    path: str,
    query: str,
    status: int,
    started: float,
    tenant: str | None,
    token_label: str | None,
    request_id: str,
) -> None:
    """One line per request: what was asked, the answer, how long it took and who asked (the
    tenant and the token's label). Never the token, a header's value, a body or a query value.

    Every field passes the same redaction as any other line (a token pasted into a path, a request
    id or a label is masked), here and once, so the line is marked `redacted` and the handler's
    filter and formatter do not scan it again: on the fast lane the generic pass cost as much as
    the lookup itself."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    label = _printable(token_label, 80) if token_label else None
    keys = query_keys(query) if query else []
    path = _printable(path, _MAX_PATH)
    rid = request_id
    if _suspect(path, label or "", rid, *keys):
        path, rid, label = redact(path), redact(rid), redact(label) if label else None
        keys = [redact(k) for k in keys]
    fields: dict[str, Any] = {
        "method": _printable(method, 16),
        "path": path,
        "query": keys,
        "status": status,
        "duration_ms": duration_ms,
        "tenant": tenant,
        "token_label": label,
    }
    joined = "&".join(keys)
    message = (
        f"{fields['method']} {fields['path']}{'?' + joined if joined else ''} status={status} "
        f"ms={duration_ms:.1f} tenant={tenant or '-'} token_label={label or '-'}"
    )
    # Built directly: Logger.info would also walk the stack for a caller nobody reads here.
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        0,
        message,
        None,
        None,
        extra={"access": fields, "correlation_id": rid, "redacted": True},
    )
    access_log.handle(record)
