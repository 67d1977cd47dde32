"""The fast searchResEntry decoder against ldap3's own BER decoder, on hand-built messages."""

from __future__ import annotations

import pytest
from ldap3.utils.asn1 import decode_message_fast

from bridge.directory.ber import decode_entry


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + value


def entry_message(message_id: int, dn: bytes, attributes: dict[bytes, list[bytes]], controls: bytes = b"") -> bytes:
    partials = b"".join(
        tlv(0x30, tlv(0x04, name) + tlv(0x31, b"".join(tlv(0x04, v) for v in values)))
        for name, values in attributes.items()
    )
    op = tlv(0x64, tlv(0x04, dn) + tlv(0x30, partials))
    return tlv(0x30, tlv(0x02, message_id.to_bytes(2, "big", signed=True)) + op + controls)


def ldap3_view(message: bytes) -> tuple[int, bytes, dict[str, list[bytes]]]:
    decoded = decode_message_fast(message)
    payload = decoded["payload"]
    attributes = {bytes(a[3][0][3]).decode().lower(): [bytes(v[3]) for v in a[3][1][3]] for a in payload[1][3]}
    return decoded["messageID"], bytes(payload[0][3]), attributes


def test_same_result_as_ldap3_including_long_lengths_and_binary_values() -> None:
    members = [f"uid=user{i:06d},ou=people,dc=example,dc=org".encode() for i in range(3000)]
    message = entry_message(
        300,
        "cn=Équipe,ou=groups,dc=example,dc=org".encode(),
        {
            b"objectClass": [b"top", b"groupOfNames"],
            b"member": members,  # a value list over 64 KiB: three-byte lengths
            b"objectGUID": [bytes(range(16))],
            b"description": [b""],
        },
    )
    decoded = decode_entry(message)
    assert decoded is not None
    message_id, entry = decoded
    assert (message_id, entry.dn, entry.attributes) == ldap3_view(message)
    assert entry.attributes["member"][2999] == members[2999]
    assert entry.attributes["objectguid"] == [bytes(range(16))]


def test_other_messages_and_entries_with_controls_are_left_to_ldap3() -> None:
    done = tlv(0x30, tlv(0x02, b"\x05") + tlv(0x65, tlv(0x0A, b"\x00") + tlv(0x04, b"") + tlv(0x04, b"")))
    assert decode_entry(done) is None
    control = tlv(0xA0, tlv(0x30, tlv(0x04, b"1.2.3")))
    assert decode_entry(entry_message(7, b"uid=a", {b"uid": [b"a"]}, control)) is None


@pytest.mark.parametrize("cut", [5, 12, -3])
def test_truncated_or_inconsistent_messages_raise(cut: int) -> None:
    message = entry_message(9, b"uid=a,dc=x", {b"uid": [b"a"], b"mail": [b"a@x"]})
    broken = bytearray(message[:cut])
    with pytest.raises((ValueError, IndexError)):
        decode_entry(bytes(broken))
    # A value length pointing past its attribute: the totals no longer add up.
    bad = bytearray(message)
    bad[-1 - len(b"a@x") - 1] += 1
    with pytest.raises((ValueError, IndexError)):
        decode_entry(bytes(bad))
