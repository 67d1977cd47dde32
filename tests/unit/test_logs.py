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
