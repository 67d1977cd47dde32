"""What directory values mean, in one place: GUIDs, SIDs, anchors, `uniqueMember`, AD's flags and
times. The normaliser and the LDAP source (its delta and primary-group reads) decode through these
functions, because an anchor is the one key that must never change with the code path that read it.
"""

from __future__ import annotations

import re
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

Flavor = Literal["openldap", "ad"]

# Attributes holding a GUID in AD's mixed-endian layout (trap 1; Entra Connect's anchor is the second).
AD_GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid", "msds-consistencyguid"})

UAC_ACCOUNTDISABLE = 0x2
# Interdomain, workstation and server trust accounts are objectClass=user too (trap 16).
UAC_TRUST_ACCOUNTS = 0x800 | 0x1000 | 0x2000
SAM_NORMAL_USER_ACCOUNT = 805306368
FILETIME_NEVER = 0x7FFFFFFFFFFFFFFF
FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_SID_TEXT = re.compile(r"S-\d+-\d+(?:-\d+)*")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def text_of(value: str | bytes | bytearray | object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return str(value)  # a scalar a schema-aware ldap3 read formatted (trap 15)


def decode_object_guid(value: str | bytes) -> str:
    """An AD GUID as a lower-case UUID string; raises `ValueError` if it is not one.

    Accepts the 16 raw bytes (mixed-endian: `uuid.UUID(bytes_le=...)`, trap 1), ldap3's `{...}`
    form, a plain UUID string, and 16 raw bytes that an LDIF reader decoded as UTF-8 by chance.
    """
    if isinstance(value, bytes):
        if len(value) == 16:
            return str(uuid.UUID(bytes_le=value))
        value = value.decode("ascii")
    text = value.strip()
    try:
        return str(uuid.UUID(text))  # also takes `{...}`, upper case and `urn:uuid:`
    except ValueError:
        raw = value.encode("utf-8")
        if len(raw) == 16:
            return str(uuid.UUID(bytes_le=raw))
        raise ValueError(f"not a GUID: {value!r}") from None


def decode_sid(value: str | bytes) -> str:
    """A security identifier in `S-1-5-21-...-RID` form; raises `ValueError` if it is not one.

    Binary layout (MS-DTYP 2.4.2.2): revision, sub-authority count, 48-bit big-endian authority,
    then the sub-authorities as 32-bit little-endian integers; the last one is the RID.
    """
    if isinstance(value, str):
        text = value.strip().upper()
        if _SID_TEXT.fullmatch(text):
            return text
        value = value.encode("utf-8")  # binary that a reader decoded as text by chance
    if len(value) < 8 or len(value) != 8 + 4 * value[1]:
        raise ValueError(f"not a SID: {value!r}")
    authority = int.from_bytes(value[2:8], "big")
    sub_authorities = struct.unpack_from(f"<{value[1]}I", value, 8)
    return f"S-{value[0]}-{authority}" + "".join(f"-{s}" for s in sub_authorities)


def decode_anchor(value: str | bytes | bytearray, attribute: str, flavor: Flavor) -> str:
    """The stable key of an entry, from the value of its anchor attribute, for every reader."""
    if isinstance(value, bytearray):
        value = bytes(value)
    if attribute == "objectsid":
        return decode_sid(value)
    if flavor == "ad" and attribute in AD_GUID_ATTRIBUTES:
        return decode_object_guid(value)
    # entryUUID (RFC 4530) is a string; other anchors (nsUniqueId, an employee number) are kept
    # as written, lower-cased because directory string matching is case-insensitive.
    if type(value) is str and _CANONICAL_UUID.fullmatch(value):
        return value  # slapcat and ldap3 write entryUUID this way
    text = text_of(value).strip().lower()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def filetime(now: datetime) -> int:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return (now - FILETIME_EPOCH) // timedelta(microseconds=1) * 10


def strip_unique_member_uid(value: str) -> str:
    # uniqueMember is `DN [ "#" BitString ]` (RFC 4517 NameAndOptionalUID). A `#` right after `=`
    # starts a BER value and an escaped `\#` is part of a value, so only a later bare `#` cuts.
    sharp = value.rfind("#")
    if sharp > 0 and value[sharp - 1] not in "=\\" and "=" not in value[sharp:]:
        return value[:sharp]
    return value
