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
from datetime import UTC, datetime
from typing import Any

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_SECRET_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"brg_[A-Za-z0-9_-]{10,}"), "brg_[redacted]"),
    (re.compile(r"(?i)((?:password|passwd|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1[redacted]"),
    (re.compile(r"/activate/[A-Za-z0-9_-]{16,}"), "/activate/[redacted]"),
    # The password in a URL's user-info (`postgresql://bridge:s3cret@db/bridge`, `ldaps://u:p@h`).
    (re.compile(r"(://[^/\s:@]+:)[^@\s/]+@"), r"\1[redacted]@"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
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
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # The whole line, not only the message: a traceback's text (an exception's message, a
        # frame's source line) can hold a URL with a password or a token as well as a message can.
        line = redact(super().format(record))
        cid = getattr(record, "correlation_id", None)
        return f"{line} [{cid}]" if cid else line


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
