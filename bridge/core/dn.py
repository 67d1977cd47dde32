"""Distinguished names in their comparison form (RFC 4514), for matching rule DNs and group DNs.

Pure string handling, shared by the mapping rules and the directory sources so that a DN written
in a mapping file and the same DN read from a directory compare equal however each is spelled.
"""

from __future__ import annotations

import re

_NEEDS_SLOW_PATH = re.compile(r'[\\"+;<>]')
# Most DNs need nothing but lower-casing: no escapes, no spaces around `,` or `=`.
_PLAIN_VALUE = r'(?:[^\s,=\\"+;<>](?:[^,=\\"+;<>]*[^\s,=\\"+;<>])?)?'
_PLAIN_DN = re.compile(rf"[A-Za-z0-9.-]+={_PLAIN_VALUE}(?:,[A-Za-z0-9.-]+={_PLAIN_VALUE})*")
_ESCAPE_ANYWHERE = frozenset('"+,;<>\\')
_HEX = frozenset("0123456789abcdefABCDEF")


def normalize_dn(dn: str) -> str:
    """A DN's comparison form: lower-case, no spaces around `,` `=` `+`, canonical escapes.

    DNs are case-insensitive and the same DN can be spelled `CN=Doe\\, John` or `cn=doe\\2c john`
    (trap 17). Escapes are kept (re-written one canonical way), so the result is still a DN and
    an escaped `,` is never mistaken for a separator. Multi-valued RDNs are sorted. The empty DN
    (the root) stays empty. Raises `ValueError` for text that is not a DN.
    """
    if _PLAIN_DN.fullmatch(dn):
        return dn.lower()
    if _NEEDS_SLOW_PATH.search(dn):
        return _normalize_escaped_dn(dn)
    if not dn.strip():
        return ""
    parts = []
    for rdn in dn.lower().split(","):
        attribute, equals, value = rdn.partition("=")
        attribute = attribute.strip()
        if not equals or not attribute:
            raise ValueError(f"not a DN: {dn!r}")
        parts.append(f"{attribute}={value.strip()}")
    return ",".join(parts)


def _normalize_escaped_dn(dn: str) -> str:
    rdns: list[str] = []
    avas: list[str] = []
    i, n = 0, len(dn)
    while True:
        equals = dn.find("=", i)
        if equals < 0:
            raise ValueError(f"not a DN: {dn!r}")
        attribute = dn[i:equals].strip().lower()
        if not attribute or any(c in attribute for c in ',+"\\'):
            raise ValueError(f"not a DN: {dn!r}")
        i = equals + 1
        while i < n and dn[i] == " ":
            i += 1
        ber = i < n and dn[i] == "#"  # `#04...` is a BER-encoded value (RFC 4514 2.4), compared as written
        if i < n and dn[i] == '"':
            # RFC 1779 quoted value, still written by some older tools.
            value = bytearray()
            i += 1
            while i < n and dn[i] != '"':
                if dn[i] == "\\" and i + 1 < n:
                    i += 1
                value += dn[i].encode("utf-8")
                i += 1
            if i >= n:
                raise ValueError(f"unterminated quoted value in DN: {dn!r}")
            i += 1
            text = _decode_dn_value(value, dn)
            while i < n and dn[i] == " ":
                i += 1
            if i < n and dn[i] not in ",+":
                raise ValueError(f"text after a quoted value in DN: {dn!r}")
        else:
            value = bytearray()
            significant = 0  # length without unescaped trailing spaces
            while i < n and dn[i] not in ",+":
                c = dn[i]
                if c == "\\":
                    pair = dn[i + 1 : i + 3]
                    if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                        value.append(int(pair, 16))
                        i += 3
                    elif i + 1 < n:
                        value += dn[i + 1].encode("utf-8")
                        i += 2
                    else:
                        raise ValueError(f"DN ends with a lone backslash: {dn!r}")
                    significant = len(value)
                    continue
                value += c.encode("utf-8")
                if c != " ":
                    significant = len(value)
                i += 1
            del value[significant:]
            text = _decode_dn_value(value, dn)
        if ber:
            avas.append(f"{attribute}={text.lower()}")
        else:
            avas.append(f"{attribute}={_escape_dn_value(text).lower()}")
        if i >= n:
            rdns.append("+".join(sorted(avas)))
            return ",".join(rdns)
        if dn[i] == ",":
            rdns.append("+".join(sorted(avas)))
            avas = []
        i += 1


def _decode_dn_value(value: bytearray, dn: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"DN escapes are not UTF-8: {dn!r}") from None


def _escape_dn_value(text: str) -> str:
    out = []
    last = len(text) - 1
    for position, c in enumerate(text):
        if c in _ESCAPE_ANYWHERE or (position == 0 and c in " #") or (position == last and c == " "):
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    return "".join(out)
