"""The engine's one door to the directory: the `Source` protocol, the source a `[[sources]]` entry
describes, and what the mapping makes a directory source read.

Every other engine module reaches bridge.directory through this one (checked by `.importlinter`),
so a change of directory code shows here what the sync depends on. The LDAP module (and ldap3) is
imported only when an LDAP source or its delta is used, as before the move.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bridge.config import SourceConfig
from bridge.core.mapping import RoleMapping
from bridge.core.model import Snapshot

if TYPE_CHECKING:
    from bridge.directory.ldap_source import Bookmark, DeltaUnavailable, KnownReferences

__all__ = [
    "Bookmark",
    "DeltaUnavailable",
    "KnownReferences",
    "Source",
    "directory_attributes",
    "make_source",
]

# The LDAP delta's types, imported on first use (`from bridge.engine.sources import Bookmark`).
_LDAP_NAMES = frozenset({"Bookmark", "DeltaUnavailable", "KnownReferences"})


def __getattr__(name: str) -> Any:
    if name in _LDAP_NAMES:
        from bridge.directory import ldap_source

        return getattr(ldap_source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Source(Protocol):
    name: str

    def fetch(self, now: datetime) -> tuple[Snapshot, Any]:
        """A complete read of the scope, and a report whose `errors` lists entries left out."""
        ...


def make_source(source: SourceConfig, mapping: RoleMapping | None = None) -> Source:
    """The source a `[[sources]]` entry describes, reading what `mapping` (its tenant's) needs."""
    if source.kind == "csv":
        from pathlib import Path

        from bridge.directory.csv_source import CsvSettings, CsvSource

        csv_settings = CsvSettings(
            path=Path(source.get("path")),
            columns=dict(source.get("columns") or {}),
            encoding=source.get("encoding") or "utf-8",
            delimiter=source.get("delimiter"),
            group_separator=source.get("group_separator") or ";",
        )
        return CsvSource(source.name, csv_settings)
    from bridge.directory.normalize import DEFAULT_KEEP_ATTRIBUTES, DirectorySettings

    renames = dict(source.get("attributes") or {})
    settings = DirectorySettings(
        flavor=source.get("flavor"),
        user_base=source.get("user_base"),
        group_base=source.get("group_base"),
        user_name_attribute=(source.get("user_name_attribute") or None),
        email_attribute=source.get("email_attribute") or "mail",
        anchor_attribute=source.get("anchor_attribute") or None,
        attribute_map=renames,
        keep_attributes=(*DEFAULT_KEEP_ATTRIBUTES, *directory_attributes(mapping, renames)),
    )
    if source.kind == "ldif":
        from pathlib import Path

        from bridge.directory.ldif_source import LdifSource

        return LdifSource(source.name, Path(source.get("path")), settings)
    from bridge.directory.ldap_source import LdapSource

    return LdapSource(source, settings)


# An LDAP attribute description (RFC 4512 descr or numericoid, then options such as ;lang-fr).
_LDAP_ATTRIBUTE = re.compile(r"(?:[a-z][a-z0-9-]*|\d+(?:\.\d+)+)(?:;[a-z0-9-]+)*", re.IGNORECASE)


def directory_attributes(mapping: RoleMapping | None, renames: Mapping[str, str]) -> tuple[str, ...]:
    """The directory attributes to read so that every attribute the mapping's rules name arrives.

    The one place where the mapping decides what a directory source requests (and so its delta
    scope: a mapping that reads a new attribute makes the next delta a full run). A SCIM path
    (`urn:...:User:department`) means its last part; a name the source's `attributes` table
    renames to is read under its directory names. Names that cannot be LDAP attributes
    (`name.givenName`) are not requested; the run then warns that nobody has them.
    """
    if mapping is None:
        return ()
    sources_of: dict[str, list[str]] = {}
    for directory_name, target in renames.items():
        sources_of.setdefault(target.lower(), []).append(directory_name.lower())
    names: list[str] = []
    for name in mapping.attribute_names():
        name = name.rsplit(":", 1)[-1]
        names += sources_of.get(name, [name])
    return tuple(n for n in dict.fromkeys(names) if _LDAP_ATTRIBUTE.fullmatch(n))
