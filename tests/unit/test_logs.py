"""Secrets never reach a log line, in either format, including in an exception's text."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bridge.logs import JsonFormatter, RedactingFilter, TextFormatter

SECRET = "brg_abcdefghijklmnopqrstuv"


@pytest.mark.parametrize("formatter", [TextFormatter("%(levelname)s %(name)s: %(message)s"), JsonFormatter()])
def test_an_exceptions_text_is_redacted_in_every_format(formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)
    log = logging.getLogger("bridge.test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise RuntimeError(f"connect to postgresql://bridge:hunter2@db/bridge failed with Bearer {SECRET}")
        except RuntimeError:
            log.exception("the database is down (token %s)", SECRET)
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "RuntimeError" in out and "the database is down" in out
    assert SECRET not in out and "hunter2" not in out
    assert "postgresql://bridge:[redacted]@db/bridge" in out
    if isinstance(formatter, JsonFormatter):
        assert "RuntimeError" in json.loads(out)["error"]


@pytest.mark.parametrize("formatter", [TextFormatter("%(levelname)s %(name)s: %(message)s"), JsonFormatter()])
def test_an_access_line_is_redacted_field_by_field(formatter: logging.Formatter) -> None:
    """Access lines skip the handler's generic pass (log_access redacts each field itself): a
    token pasted into the path, a query key, the request id or a label is masked all the same."""
    import time

    from bridge.logs import access_log, log_access

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)
    access_log.addHandler(handler)
    access_log.propagate, level = False, access_log.level
    access_log.setLevel(logging.INFO)
    try:
        log_access(
            "GET",
            f"/scim/v2/Users/{SECRET}\nforged",
            f"access_token={SECRET}&{SECRET}=1&count=2",
            404,
            time.perf_counter(),
            "t1",
            f"label {SECRET}",
            f"Bearer {SECRET}",
        )
    finally:
        access_log.removeHandler(handler)
        access_log.propagate = True
        access_log.setLevel(level)
    out = stream.getvalue()
    assert SECRET not in out and out.count("\n") == 1
    if isinstance(formatter, JsonFormatter):
        entry = json.loads(out)
        assert entry["path"] == "/scim/v2/Users/brg_[redacted]\\u000aforged"
        assert entry["query"] == ["access_token", "brg_[redacted]", "count"] and entry["status"] == 404
    else:
        assert "/scim/v2/Users/brg_[redacted]\\u000aforged?access_token&brg_[redacted]&count status=404" in out


def test_a_logger_named_secret_is_not_mistaken_for_a_secret() -> None:
    record = logging.LogRecord(
        "bridge.notify.secret", logging.INFO, __file__, 1, "generated a server secret", None, None
    )
    RedactingFilter().filter(record)
    line = TextFormatter("%(name)s: %(message)s").format(record)
    assert line == "bridge.notify.secret: generated a server secret"
