"""The product feed's pure parts: its cursors and its config key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.errors import ConfigError
from bridge.store.events import BadCursor, decode_cursor, encode_cursor


def test_a_cursor_decodes_to_its_position_for_its_own_tenant_only() -> None:
    cursor = encode_cursor(7, 123456)
    assert cursor.startswith("ev1.") and decode_cursor(cursor, 7) == 123456
    with pytest.raises(BadCursor, match="another tenant"):
        decode_cursor(cursor, 8)


@pytest.mark.parametrize("cursor", ["", "ev1.", "ev1.%%%", "ev1.MTp4", "ev1.MTotMQ", "123", "ev1." + "A" * 100])
def test_a_cursor_bridge_did_not_make_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor, 1)


def test_event_retention_days_defaults_to_30_and_must_be_at_least_1() -> None:
    assert parse_config({}, Path("b.toml")).api["event_retention_days"] == 30
    assert parse_config({"api": {"event_retention_days": 7}}, Path("b.toml")).api["event_retention_days"] == 7
    with pytest.raises(ConfigError, match=r"api\.event_retention_days"):
        parse_config({"api": {"event_retention_days": 0}}, Path("b.toml"))
    with pytest.raises(ConfigError, match=r"api\.event_retention_days"):
        parse_config({"api": {"event_retention_days": "30"}}, Path("b.toml"))
    with pytest.raises(ConfigError, match=r"api\.retention"):
        parse_config({"api": {"retention": 3}}, Path("b.toml"))
