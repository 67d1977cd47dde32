"""Search entries straight from BER to `dn` + raw attribute bytes, for bridge's own connections.

ldap3 decodes every message through a generic BER walker that builds a tuple per element, then
turns each entry into two dicts: the raw bytes and a second copy formatted to text through a
configuration lookup per value. bridge reads only the raw bytes (normalize.py decodes what it
uses). At 100k users that generic path was most of the time of a full sync's read; this one reads
an entry about 2.5 times faster (docs/benchmarks.md).

How it is plugged in, without changing ldap3 for anyone else in the process:
- `ldap3.strategy.sync.decode_message_fast` is wrapped once: the wrapper decodes a searchResEntry
  itself only while the current thread is inside the `_get_response` of a connection set up by
  `install` (a thread-local flag); otherwise, and for every other message type, for controls on an
  entry, or for anything it does not parse cleanly, it returns ldap3's own result unchanged;
- that connection's `decode_response_fast` turns the pre-decoded entry into the response dict
  (`dn`, lower-cased `raw_attributes`); other messages go through ldap3's as before.
"""

from __future__ import annotations

import threading
from typing import Any

import ldap3.strategy.sync as ldap3_sync
from ldap3 import Connection

_lean = threading.local()
_install_lock = threading.Lock()
_SEQUENCE, _INTEGER, _OCTET_STRING, _SET, _SEARCH_RESULT_ENTRY = 0x30, 0x02, 0x04, 0x31, 0x64


class RawEntry:
    """A searchResEntry decoded by `decode_entry`: the payload handed to the connection."""

    __slots__ = ("attributes", "dn")

    def __init__(self, dn: bytes, attributes: dict[str, list[bytes]]) -> None:
        self.dn = dn
        self.attributes = attributes


def _length(data: bytes, i: int) -> tuple[int, int]:
    """A BER definite length at `i`: (length, offset of the value)."""
    first = data[i]
    if first < 0x80:
        return first, i + 1
    count = first & 0x7F
    if count == 0 or count > 4:  # indefinite form (not allowed in LDAP, RFC 4511 5.1) or absurd
        raise ValueError("unsupported BER length")
    return int.from_bytes(data[i + 1 : i + 1 + count], "big"), i + 1 + count


def _expect(data: bytes, i: int, tag: int) -> tuple[int, int]:
    if data[i] != tag:
        raise ValueError(f"BER tag {data[i]:#x} where {tag:#x} was expected")
    return _length(data, i + 1)


def decode_entry(data: bytes) -> tuple[int, RawEntry] | None:
    """(messageID, entry) if `data` is one LDAPMessage carrying a searchResEntry without
    controls; None for any other message. Raises ValueError/IndexError on malformed input."""
    total, i = _expect(data, 0, _SEQUENCE)
    end_of_message = i + total
    if end_of_message != len(data):
        raise ValueError("the message is not one complete LDAPMessage")
    n, i = _expect(data, i, _INTEGER)
    message_id = int.from_bytes(data[i : i + n], "big", signed=True)
    i += n
    if data[i] != _SEARCH_RESULT_ENTRY:
        return None
    n, i = _length(data, i + 1)
    if i + n != end_of_message:
        return None  # controls follow the entry: leave the message to ldap3
    n, i = _expect(data, i, _OCTET_STRING)
    dn = data[i : i + n]
    i += n
    n, i = _expect(data, i, _SEQUENCE)
    end = i + n
    attributes: dict[str, list[bytes]] = {}
    # The hot loop (every attribute and value of every entry): headers read inline, short-form
    # lengths without a call; a long form or a wrong tag goes through `_expect`.
    while i < end:
        if data[i] == _SEQUENCE and data[i + 1] < 0x80:
            next_attribute = i + 2 + data[i + 1]
            i += 2
        else:
            n, i = _expect(data, i, _SEQUENCE)
            next_attribute = i + n
        if data[i] == _OCTET_STRING and data[i + 1] < 0x80:
            n, i = data[i + 1], i + 2
        else:
            n, i = _expect(data, i, _OCTET_STRING)
        name = data[i : i + n].decode("ascii", "replace").lower()
        i += n
        if data[i] == _SET and data[i + 1] < 0x80:
            end_of_values = i + 2 + data[i + 1]
            i += 2
        else:
            n, i = _expect(data, i, _SET)
            end_of_values = i + n
        values: list[bytes] = []
        while i < end_of_values:
            if data[i] == _OCTET_STRING and data[i + 1] < 0x80:
                n, i = data[i + 1], i + 2
            else:
                n, i = _expect(data, i, _OCTET_STRING)
            values.append(data[i : i + n])
            i += n
        if i != end_of_values:
            raise ValueError("attribute values overrun their set")
        attributes[name] = values
        i = next_attribute
    if i != end or end != end_of_message:
        raise ValueError("searchResEntry lengths do not add up")
    return message_id, RawEntry(dn, attributes)


def _wrap_ldap3_decoder() -> None:
    with _install_lock:
        standard = ldap3_sync.decode_message_fast
        if getattr(standard, "bridge_lean", False):
            return

        def decode_message(message: bytes) -> dict[str, Any]:
            if getattr(_lean, "active", False):
                try:
                    decoded = decode_entry(bytes(message))
                except (ValueError, IndexError):
                    decoded = None  # ldap3 decodes it, and reports the error its own way
                if decoded is not None:
                    message_id, entry = decoded
                    return {"messageID": message_id, "protocolOp": 4, "payload": entry, "controls": None}
            return standard(message)

        decode_message.bridge_lean = True  # type: ignore[attr-defined]
        ldap3_sync.decode_message_fast = decode_message


def dn_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # what ldap3's to_unicode falls back to as well


def install(conn: Connection) -> None:
    """Make `conn`'s search entries `{"type", "dn", "raw_attributes"}` only, decoded fast."""
    _wrap_ldap3_decoder()
    strategy = conn.strategy
    standard_get, standard_decode = strategy._get_response, strategy.decode_response_fast

    def get_response(message_id: int, timeout: Any) -> Any:
        previous = getattr(_lean, "active", False)
        _lean.active = True
        try:
            return standard_get(message_id, timeout)
        finally:
            _lean.active = previous

    def decode_response(message: dict[str, Any]) -> dict[str, Any]:
        payload = message["payload"]
        if isinstance(payload, RawEntry):
            return {"type": "searchResEntry", "dn": dn_text(payload.dn), "raw_attributes": payload.attributes}
        if message["protocolOp"] != 4:
            return standard_decode(message)
        # An entry ldap3 decoded itself (it carried controls): keep the same shape.
        attributes: dict[str, list[bytes]] = {}
        for attribute in payload[1][3]:
            description, values = attribute[3]
            attributes[bytes(description[3]).decode("ascii", "replace").lower()] = [bytes(v[3]) for v in values[3]]
        return {"type": "searchResEntry", "dn": dn_text(bytes(payload[0][3])), "raw_attributes": attributes}

    strategy._get_response = get_response  # type: ignore[method-assign]
    strategy.decode_response_fast = decode_response  # type: ignore[method-assign]
