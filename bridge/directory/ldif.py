"""RFC 2849 LDIF reader for directory exports (slapcat, ldapsearch -LLL, ldifde).

Only the entries of an export are read. Change records other than `changetype: add` are refused:
an export that modifies or deletes entries is not a description of the directory, and applying
half of it would give a snapshot of a state that never existed. `ldifde` writes `changetype: add`
on every record, so add records are read like plain content records.

No third-party dependency, and no file is ever opened on the LDIF's behalf (`attr:< file://` is
refused), so an export cannot make the bridge read arbitrary local files.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import BridgeError

__all__ = ["LdifEntry", "LdifError", "iter_ldif_file", "parse_ldif", "read_ldif_file"]


class LdifError(BridgeError):
    """An LDIF file cannot be read. `str()` is `origin:line: message`, the one line the CLI prints."""

    exit_code = 2

    def __init__(self, origin: str, line: int, message: str) -> None:
        super().__init__(f"{origin}:{line}: {message}")
        self.origin = origin
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class LdifEntry:
    """One content record. Attribute names are lower-cased, options kept (`member;range=0-1499`).

    Values are `str`, or `bytes` for base64 values that are not UTF-8 and for the attributes in
    `BINARY_ATTRIBUTES`. `line` is the line of the record's `dn:`.
    """

    dn: str
    attributes: dict[str, list[str | bytes]]
    line: int


# Attributes whose base64 value stays bytes even when it happens to be valid UTF-8: a 16-byte
# objectGUID whose bytes are all below 0x80 decodes as UTF-8, and about one GUID in 65,000 does
# (ad-ldap-traps.md trap 10: GUID bytes/str confusion). A `;binary` option means the same.
BINARY_ATTRIBUTES = frozenset(
    {
        "objectguid",
        "objectsid",
        "sidhistory",
        "logonhours",  # 21 bytes; all zeros ("never") would decode as UTF-8
        "ms-ds-consistencyguid",
        "msds-consistencyguid",
        "msexchmailboxguid",
        "tokengroups",
        "jpegphoto",
        "thumbnailphoto",
        "photo",
        "usercertificate",
        "cacertificate",
        "usersmimecertificate",
        "userpkcs12",
    }
)

# RFC 2849 attribute descriptions, plus `=` and `*` in options because AD's ranged retrieval
# writes `member;range=0-1499` and `member;range=1500-*` (trap 7).
_ATTRIBUTE_DESCRIPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_]*(?:;[A-Za-z0-9.\-_=*]+)*\Z")


# One `name:[:<] value` line of an unfolded record; see `_fast_record`.
_LINE = re.compile(r"^([^:\n]*):([:<]?) *(.*)$", re.MULTILINE)


def parse_ldif(text: str, origin: str) -> Iterator[LdifEntry]:
    """Yield the entries of an LDIF document one by one; raise `LdifError` at the first problem.

    `origin` names the document in error messages (usually the file path).
    """
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    names: dict[str, str] = {}  # raw attribute description -> lower-cased, validated once
    first_record = True
    line = 1
    for chunk in _chunks(text):
        start = line
        line += chunk.count("\n") + 2
        body = chunk.strip("\n")
        if not body:
            continue
        start += len(chunk) - len(chunk.lstrip("\n"))
        entry = None if first_record else _fast_record(body, start, names)
        if entry is None:
            logical_lines = _logical_lines(body, start, origin)
            if not logical_lines:
                continue  # only comments
            entry = _record(logical_lines, origin, names, first_record)
            first_record = False
            if entry is None:
                continue  # only `version: 1`
        yield entry


def _chunks(text: str) -> Iterator[str]:
    # str.split would hold every record's text a second time for the whole parse.
    position, size = 0, len(text)
    while position <= size:
        end = text.find("\n\n", position)
        if end < 0:
            end = size
        yield text[position:end]
        position = end + 2


def _fast_record(body: str, start: int, names: dict[str, str]) -> LdifEntry | None:
    """The usual record (no comments, change records, URLs or invalid lines) parsed by regex.

    A 100k-entry export is about 2 million lines, and a Python loop over each of them was most of
    the parse time. Anything unusual returns None and goes through `_logical_lines` and `_record`,
    which read line by line, know line numbers and raise the errors, so both paths agree.
    """
    if body[0] in " #" or "\n#" in body:
        return None
    unfolded = body.replace("\n ", "")
    matches = _LINE.findall(unfolded)
    if len(matches) != unfolded.count("\n") + 1:
        return None
    raw_name, marker, dn = matches[0]
    if marker or raw_name.lower() != "dn":
        return None
    attributes: dict[str, list[str | bytes]] = {}
    for raw_name, marker, text in matches[1:]:
        name = names.get(raw_name)
        if name is None:
            if not _ATTRIBUTE_DESCRIPTION.match(raw_name):
                return None
            name = names[raw_name] = raw_name.lower()
        value: str | bytes = text
        if marker:
            if marker == "<":
                return None
            try:
                value = _decode_base64(name, text)
            except (binascii.Error, ValueError):
                return None
        values = attributes.get(name)
        if values is None:
            attributes[name] = [value]
        else:
            values.append(value)
    if "changetype" in attributes or "control" in attributes:
        return None
    return LdifEntry(dn=dn, attributes=attributes, line=start)


def _logical_lines(body: str, start: int, origin: str) -> list[tuple[int, str]]:
    """A record's lines with folding undone and comments dropped, each with its line number."""
    lines: list[tuple[int, str]] = []
    current: str | None = None  # the logical line being unfolded
    current_line = 0
    in_comment = False
    for lineno, line in enumerate(body.split("\n"), start=start):
        if line.startswith(" "):
            # RFC 2849 folding: one leading space continues the previous line, comments included.
            if in_comment:
                continue
            if current is None:
                if line.strip():
                    raise LdifError(origin, lineno, "continuation line (starting with a space) has no line to continue")
                continue
            current += line[1:]
            continue
        if current is not None:
            lines.append((current_line, current))
            current = None
        in_comment = line.startswith("#")
        if not in_comment:
            current = line
            current_line = lineno
    if current is not None:
        lines.append((current_line, current))
    return lines


def _record(lines: list[tuple[int, str]], origin: str, names: dict[str, str], first_record: bool) -> LdifEntry | None:
    start = 0
    if first_record:
        lineno, text = lines[0]
        if text[:8].lower() == "version:":
            version = text[8:].strip()
            if version != "1":
                raise LdifError(origin, lineno, f"unsupported LDIF version {version!r} (only version 1 exists)")
            start = 1
            if len(lines) == 1:
                return None
    dn_line, text = lines[start]
    name, value = _attribute_value(dn_line, text, origin, names)
    if name != "dn":
        raise LdifError(origin, dn_line, f"a record must start with 'dn:', found '{name}:'")
    if isinstance(value, bytes):
        raise LdifError(origin, dn_line, "the base64 DN is not valid UTF-8")
    attributes: dict[str, list[str | bytes]] = {}
    for position, (lineno, text) in enumerate(lines[start + 1 :]):
        name, attr_value = _attribute_value(lineno, text, origin, names)
        if name == "changetype":
            kind = attr_value.strip().lower() if isinstance(attr_value, str) else ""
            if position != 0:
                raise LdifError(origin, lineno, "'changetype:' must directly follow 'dn:'")
            if kind != "add":
                raise LdifError(
                    origin,
                    lineno,
                    f"change record (changetype: {kind or '?'}) refused: an export must list entries, "
                    "not changes to them (use slapcat, ldapsearch -LLL or ldifde without -i)",
                )
            continue
        if name == "control":
            raise LdifError(origin, lineno, "LDAP controls belong to change records and are not supported")
        values = attributes.get(name)
        if values is None:
            attributes[name] = [attr_value]
        else:
            values.append(attr_value)
    return LdifEntry(dn=value, attributes=attributes, line=dn_line)


def _attribute_value(lineno: int, text: str, origin: str, names: dict[str, str]) -> tuple[str, str | bytes]:
    colon = text.find(":")
    if colon <= 0:
        raise LdifError(origin, lineno, f"expected 'attribute: value', found {text[:40]!r}")
    raw_name = text[:colon]
    name = names.get(raw_name)
    if name is None:
        if not _ATTRIBUTE_DESCRIPTION.match(raw_name):
            raise LdifError(origin, lineno, f"invalid attribute name {raw_name[:40]!r}")
        name = names[raw_name] = raw_name.lower()
    marker = text[colon + 1 : colon + 2]
    if marker == ":":
        try:
            return name, _decode_base64(name, text[colon + 2 :].strip(" "))
        except (binascii.Error, ValueError):
            raise LdifError(origin, lineno, f"invalid base64 value for '{name}'") from None
    if marker == "<":
        raise LdifError(origin, lineno, f"'{name}:<' URL values are refused: an export must carry its values inline")
    return name, text[colon + 1 :].lstrip(" ")


def _decode_base64(name: str, encoded: str) -> str | bytes:
    raw = base64.b64decode(encoded, validate=True)
    if name.partition(";")[0] in BINARY_ATTRIBUTES or ";binary" in name:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def iter_ldif_file(path: Path) -> Iterator[LdifEntry]:
    """Read and decode `path` now (raising `LdifError` if it cannot be), then parse it lazily.

    Lazily, so that a 100k-entry export is never held as a list of entries as well as as text.
    UTF-8 (with or without BOM) and, for `ldifde -u` exports, UTF-16 with BOM are accepted.
    """
    origin = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LdifError(origin, 0, f"cannot read LDIF file: {exc.strerror or exc}") from None
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1 if encoding == "utf-8-sig" else 0
        raise LdifError(origin, line, f"not valid {encoding.removesuffix('-sig').upper()}: {exc.reason}") from None
    return parse_ldif(text, origin)


def read_ldif_file(path: Path) -> list[LdifEntry]:
    """All entries of an LDIF file; `LdifError` if it cannot be read, decoded or parsed."""
    return list(iter_ldif_file(path))
