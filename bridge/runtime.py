"""Opening a deployment: config, database (migrated on start-up) and the tenants it declares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from bridge.config import Config, check_mappings, load_config
from bridge.logs import setup_logging
from bridge.store.db import make_engine, transaction, upgrade
from bridge.store.tenants import ensure_tenant


def config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("BRIDGE_CONFIG") or "bridge.toml")


@dataclass
class Runtime:
    config: Config
    engine: Engine


def open_runtime(path: Path, *, migrate: bool = True, check: bool = False, create: bool = True) -> Runtime:
    """`check`: load and check every tenant's mapping first, before the database is touched
    (`serve`, `scheduler`, `sync`). `create`: create a missing SQLite file; without it a missing
    one is `DatabaseMissing` (commands that only read, processes started beside a server)."""
    config = load_config(path)
    if check:
        check_mappings(config)
    # Interactive commands print their own results; only warnings and errors are logged there.
    # `serve` and `scheduler` switch to the configured level (see bridge/cli/serve.py and jobs.py).
    level = config.logging["level"].upper()
    setup_logging(config.logging["format"], level if level in ("WARNING", "ERROR", "CRITICAL") else "WARNING")
    engine = make_engine(config.database_url, origin=config.origin, echo=False, create=create)
    if migrate:
        upgrade(engine)
        now = datetime.now(UTC)
        with transaction(engine) as conn:
            for tenant in config.tenants.values():
                ensure_tenant(conn, tenant.name, tenant.seat_limit, now, update_limit=tenant.seat_limit is not None)
    return Runtime(config=config, engine=engine)
