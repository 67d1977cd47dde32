"""The server secret: the key activation links and CSRF tokens are derived from.

`[server] secret_env` / `secret_file` when configured (required when several machines serve one
deployment, so they derive the same links). Otherwise a random secret is generated once into a
0600 file beside the SQLite database (beside the config file for PostgreSQL). It never goes into
the database: a copy of the database alone must not be enough to rebuild a link.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from bridge.config import Config, read_secret
from bridge.errors import ConfigError

log = logging.getLogger(__name__)

SECRET_FILE_NAME = "bridge.secret"
_MIN_LENGTH = 32


def secret_path(config: Config) -> Path:
    """Where the generated secret lives when none is configured."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / SECRET_FILE_NAME
    return config.path.resolve().parent / SECRET_FILE_NAME


def server_secret(config: Config) -> bytes:
    settings = dict(config.server)
    if settings.get("secret_file") and not Path(settings["secret_file"]).is_absolute():
        settings["secret_file"] = str(config.path.resolve().parent / settings["secret_file"])
    configured = read_secret(settings, "secret", config.origin, "server")
    if configured is not None:
        if len(configured) < _MIN_LENGTH:
            raise ConfigError(
                config.origin, "server.secret_env", f"the secret must be at least {_MIN_LENGTH} characters"
            )
        return configured.encode()
    return _generated_secret(secret_path(config))


def _generated_secret(path: Path) -> bytes:
    try:
        # O_EXCL: when two processes start together exactly one creates the file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_generated(path)
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot create the server secret file: {exc.strerror}") from None
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    log.info("generated a server secret in %s", path)
    return value.encode()


def _read_generated(path: Path) -> bytes:
    # The creator may not have written it yet when we lost the O_EXCL race.
    for _ in range(50):
        value = path.read_text(encoding="ascii").strip()
        if value:
            return value.encode()
        time.sleep(0.02)
    raise ConfigError(str(path), None, "the server secret file is empty; delete it to generate a new one")
