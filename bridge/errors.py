"""Error types, raised where the problem is known and rendered once at the edge (CLI, HTTP)."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(BridgeError):
    """A configuration or mapping file is wrong. The message names the file and the key."""

    exit_code = 2

    def __init__(self, origin: str, key: str | None, message: str) -> None:
        where = f"{origin}: {key}" if key else origin
        super().__init__(f"{where}: {message}")
        self.origin = origin
        self.key = key


class SourceUnavailable(BridgeError):
    """A source could not be read completely; nothing may be archived from such a read."""


class NotFound(BridgeError):
    pass


class Ambiguous(BridgeError):
    pass


class Conflict(BridgeError):
    """A write would break a uniqueness rule (a name already taken in the tenant)."""


class InvalidValue(BridgeError):
    """A value the store cannot hold (longer than its column, say)."""
