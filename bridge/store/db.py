"""Engine set-up, transactions and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, OperationalError

from bridge import jsonfast
from bridge.errors import BridgeError, ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseUnavailable(BridgeError):
    pass


def make_engine(url: str, *, origin: str = "config", echo: bool = False) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(
                url,
                echo=echo,
                # Bound values are names, addresses and hashes: never in error text or echo logs.
                hide_parameters=True,
                connect_args={"check_same_thread": False, "timeout": 30},
                json_serializer=jsonfast.dumps,
                json_deserializer=jsonfast.loads,
                # The driver's own transaction handling is off so that we can say BEGIN IMMEDIATE.
                isolation_level=None,
            )
            _sqlite_setup(engine)
        else:
            engine = create_engine(
                url,
                echo=echo,
                hide_parameters=True,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=10,
                json_serializer=jsonfast.dumps,
                json_deserializer=jsonfast.loads,
            )
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(origin, "database.url", f"cannot use this database URL: {exc}") from None
    return engine


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers (SCIM GETs) proceed while a sync writes; NORMAL is durable in WAL
        # mode except for the last transactions on power loss, which the next sync converges.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that later writes can fail with "database is locked" without
        # waiting; writers take the lock up front so busy_timeout applies.
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def transaction(engine: Engine, *, write: bool = True) -> Iterator[Connection]:
    """One database transaction: committed on success, rolled back on any exception."""
    with engine.connect() as connection:
        if write and engine.dialect.name == "sqlite":
            connection = connection.execution_options(sqlite_immediate=True)
        with connection.begin():
            yield connection


@contextmanager
def page_cache(conn: Connection, mebibytes: int) -> Iterator[None]:
    """A larger SQLite page cache on `conn` for one bulk write, then the connection's own again.

    Writing 300,000 memberships inserts into an index keyed by member, in no order the rows can
    share: with SQLite's default 2 MiB cache most inserts read a page back from the OS first.
    The cache is memory for as long as the block runs, so it is sized against the sync's peak
    (docs/benchmarks.md). Nothing on PostgreSQL, whose buffers are the server's."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(mebibytes) * 1024}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def _alembic_config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Apply pending migrations (idempotent). Returns (revision before, revision after)."""
    try:
        before = current_revision(engine)
        head = head_revision()
        if before != head:
            with engine.begin() as connection:
                command.upgrade(_alembic_config(connection), "head")
        return before, head
    except OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc.orig}") from None


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
