"""bridge/jsonfast.py gives the standard library's JSON data; new_id gives RFC 9562 UUIDv7s."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from bridge import jsonfast
from bridge.store.ids import new_id


@pytest.mark.parametrize(
    "value",
    [
        {"status": None, "roles": [], "detail": {"userName": "zoë@example.org", "n": 1.5, "ok": True}},
        {1: "int key", "nested": [{"a": [1, 2, {"b": None}]}]},
        'line\nbreak \u2028 "quoted" \\ back',
        2**70,  # beyond orjson's 64 bits: the standard library encodes it
        [],
    ],
)
def test_dumps_gives_the_standard_librarys_data(value: object) -> None:
    text = jsonfast.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert jsonfast.loads(text) == json.loads(json.dumps(value))
    assert jsonfast.dumps_bytes(value) == text.encode()


def test_what_the_standard_library_refuses_is_still_refused() -> None:
    @dataclass
    class Point:
        x: int

    for value in (datetime(2026, 11, 22, tzinfo=UTC), Point(1), {"when": datetime.now(UTC)}):
        with pytest.raises(TypeError):
            jsonfast.dumps(value)


def test_loads_reads_what_the_standard_library_wrote() -> None:
    assert jsonfast.loads(json.dumps({"a": "Zoë"})) == {"a": "Zoë"}
    assert jsonfast.loads(b'{"a": 1}') == {"a": 1}
    nan = jsonfast.loads('{"x": NaN}')["x"]
    assert nan != nan  # NaN, which json.dumps writes and orjson does not read


def test_new_id_is_a_time_ordered_uuid7() -> None:
    ids = [new_id() for _ in range(2000)]
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert len(set(ids)) == len(ids)
    millis = [uuid.UUID(i).int >> 80 for i in ids]
    assert millis == sorted(millis)


def test_identity_digests_keep_the_standard_librarys_bytes() -> None:
    """Stored digests were computed from json.dumps: the faster encoding must give the same
    bytes, or every identity would look changed after an upgrade."""
    import random

    from bridge.core.plan import _digest_json

    rng = random.Random(7)
    alphabet = [chr(c) for c in range(128)] + list("éßЖ漢\u2028\U0001f600")
    for _ in range(3000):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 6))) for _ in range(6)]
        payload = [words[0], None, rng.random() < 0.5, [(words[1], [words[2], words[3]])], sorted(words[4:])]
        assert _digest_json(payload) == json.dumps(payload, separators=(",", ":")).encode(), payload
    plain = ["alice", "alice@example.org", True, None, [("title", ["Engineer"])], ["g1", "g2"], [], "en"]
    assert _digest_json(plain) == json.dumps(plain, separators=(",", ":")).encode()
