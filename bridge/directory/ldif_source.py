"""A directory source read from an LDIF export (slapcat, ldapsearch -LLL, ldifde)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bridge.core.model import Snapshot
from bridge.directory.ldif import iter_ldif_file
from bridge.directory.normalize import DirectorySettings, NormalizeReport, build_snapshot

__all__ = ["LdifSource"]


class LdifSource:
    """Reads one LDIF file per fetch; the file is the whole directory, so the snapshot is complete.

    A file that cannot be read, decoded or parsed raises `LdifError` (nothing is returned from a
    half-read file: an early end would look like everyone after it had left).
    """

    def __init__(self, name: str, path: Path, settings: DirectorySettings) -> None:
        self.name = name
        self.path = path
        self.settings = settings

    def fetch(self, now: datetime) -> tuple[Snapshot, NormalizeReport]:
        entries = ((entry.dn, entry.attributes) for entry in iter_ldif_file(self.path))
        return build_snapshot(entries, self.settings, now)
