"""A source read from an HR or spreadsheet export: one CSV file, one row per person (issue 19).

Small organisations (a daycare, a shop) keep their staff list in payroll software or a spreadsheet,
not a directory. The file is the whole list, so a read is complete, and the sync plans it as it
plans an LDIF export: the deletion threshold, `--dry-run` and `explain` work the same.

What a row means is the source's `columns` map: `anchor` (a stable key such as the employee
number: never the email, which changes) and `userName` are required; `email`, `givenName`,
`familyName`, `groups` (several, split on `group_separator`), `active` and `userType` are
optional. Every column is also an attribute under its header name (lower-cased), for
`attribute` rules and `[user_type] external_attribute`; `userType` is the attribute `usertype`.
Groups have no DN: rules match them with `group_name` or `group_pattern`.

A file that is not usable as a whole (unreadable, undecodable in its encoding, no header, a
mapped column missing from the header) raises `CsvError`. A bad row (a field count that differs
from the header's, an empty anchor or userName, an `active` value that is not a yes or a no, an
anchor or userName seen before) is reported with its file and line and makes the snapshot
incomplete: the run aborts as for an incomplete directory read, and nobody is taken for a leaver
because a row could not be read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bridge.config import CSV_DELIMITERS as DELIMITERS
from bridge.config import CSV_REQUIRED_COLUMNS as REQUIRED_COLUMNS
from bridge.core.model import Snapshot, SourceGroup, SourceUser
from bridge.directory.normalize import NormalizeReport
from bridge.errors import SourceUnavailable

__all__ = ["CsvError", "CsvSettings", "CsvSource", "detect_delimiter", "read_csv"]


# What an `active` cell may say, in the languages the exports come in (case and spaces ignored).
_YES = frozenset({"1", "true", "yes", "y", "oui", "o", "active", "actif", "x"})
_NO = frozenset({"0", "false", "no", "n", "non", "inactive", "inactif", "disabled", "left", "parti"})


class CsvError(SourceUnavailable):
    """The file cannot be used at all; the message names the file (and the line). The run aborts
    with it, as when a directory cannot be reached: nothing is written."""


@dataclass(frozen=True)
class CsvSettings:
    path: Path
    columns: Mapping[str, str]  # COLUMN_KEYS -> header names
    encoding: str = "utf-8"
    delimiter: str | None = None  # None: detected among DELIMITERS from the header line
    group_separator: str = ";"


class CsvSource:
    def __init__(self, name: str, settings: CsvSettings) -> None:
        self.name = name
        self.settings = settings

    def fetch(self, now: datetime) -> tuple[Snapshot, NormalizeReport]:
        return read_csv(self.settings)


def _text(settings: CsvSettings) -> str:
    try:
        raw = settings.path.read_bytes()
    except OSError as exc:
        raise CsvError(f"{settings.path}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode(settings.encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CsvError(
            f"{settings.path}:{line}: not {settings.encoding} (byte {raw[exc.start]:#04x}); "
            'a spreadsheet export may need encoding = "cp1252" or "utf-8-sig"'
        ) from None


def detect_delimiter(header: str) -> str:
    """The delimiter of a header line: the one of `,` `;` tab it holds most of (outside quotes)."""
    counts = {d: 0 for d in DELIMITERS}
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(settings: CsvSettings) -> tuple[Snapshot, NormalizeReport]:
    text = _text(settings)
    if text.startswith("\ufeff"):  # a BOM read as utf-8: the header's first name would carry it
        text = text[1:]
    first_line = text.split("\n", 1)[0]
    delimiter = settings.delimiter or detect_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    where = str(settings.path)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvError(f"{where}: empty file (a header line is needed)") from None
    except csv.Error as exc:
        raise CsvError(f"{where}:1: {exc}") from None
    names = [h.strip() for h in header]
    index = {name.casefold(): i for i, name in enumerate(names) if name}
    positions: dict[str, int] = {}
    for key, column in settings.columns.items():
        found = index.get(str(column).strip().casefold())
        if found is None:
            raise CsvError(f"{where}:1: no column {column!r} (columns.{key}) in the header: {', '.join(names)}")
        positions[key] = found
    for key in REQUIRED_COLUMNS:
        if key not in positions:
            raise CsvError(f"{where}: columns.{key} is required")

    report = NormalizeReport()
    users: dict[str, SourceUser] = {}
    groups: dict[str, SourceGroup] = {}
    members: dict[str, list[str]] = {}
    group_names: dict[str, str] = {}  # anchor -> the name as first written
    seen_names: dict[str, int] = {}
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.errors.append(f"{where}:{reader.line_num}: {exc}")
            break  # the reader cannot resync after a broken quote: the rest is unread
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines (a spreadsheet's trailing rows)
        report.entries += 1
        problem, user, named = _user(row, names, positions, settings.group_separator)
        if problem is None and user is not None:
            if user.anchor in users:
                problem = f"anchor {user.anchor!r} already on an earlier line"
            elif user.user_name.casefold() in seen_names:
                problem = f"userName {user.user_name!r} already on line {seen_names[user.user_name.casefold()]}"
        if problem is not None or user is None:
            report.errors.append(f"{where}:{line}: {problem}")
            continue
        seen_names[user.user_name.casefold()] = line
        users[user.anchor] = user
        for group_anchor, group_name in named:
            group_names.setdefault(group_anchor, group_name)
            members.setdefault(group_anchor, []).append(user.anchor)
    for anchor, member_anchors in members.items():
        groups[anchor] = SourceGroup(anchor=anchor, name=group_names[anchor], members=tuple(member_anchors))
    report.users = len(users)
    report.groups = len(groups)
    return Snapshot(users=users, groups=groups, complete=not report.errors), report


def _user(
    row: list[str], names: list[str], positions: Mapping[str, int], separator: str
) -> tuple[str | None, SourceUser | None, list[tuple[str, str]]]:
    """(problem, None, []) for a bad row; else (None, the person, their groups as (anchor, name))."""
    if len(row) != len(names):
        return f"{len(row)} fields where the header has {len(names)}", None, []

    def cell(key: str) -> str:
        return row[positions[key]].strip() if key in positions else ""

    anchor, user_name = cell("anchor"), cell("userName")
    if not anchor:
        return f"empty {names[positions['anchor']]!r} (the anchor)", None, []
    if not user_name:
        return f"empty {names[positions['userName']]!r} (the userName)", None, []
    active = True
    if "active" in positions:
        flag = cell("active").casefold()
        if flag in _YES:
            active = True
        elif flag in _NO:
            active = False
        else:
            return f"{names[positions['active']]!r} is {cell('active')!r}: neither a yes nor a no", None, []
    attributes: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        value = row[i].strip()
        if name and value:
            attributes[name.casefold()] = (value,)
    if "userType" in positions and cell("userType"):
        attributes["usertype"] = (cell("userType"),)
    group_names = [g.strip() for g in cell("groups").split(separator)] if "groups" in positions else []
    # One group per name whatever its case in the file: "Crèche" and "crèche" are the same team.
    named: list[tuple[str, str]] = []
    for group in group_names:
        key = f"csv:{group.casefold()}"
        if group and all(key != known for known, _ in named):
            named.append((key, group))
    given, family = cell("givenName") or None, cell("familyName") or None
    user = SourceUser(
        anchor=anchor,
        user_name=user_name,
        email=cell("email") or None,
        given_name=given,
        family_name=family,
        display_name=" ".join(p for p in (given, family) if p) or None,
        active=active,
        attributes=attributes,
        groups=tuple(anchor for anchor, _ in named),
    )
    return None, user, named
