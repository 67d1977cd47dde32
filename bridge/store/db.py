"""Engine set-up, transactions and migrations."""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    InterfaceError,
    InternalError,
    OperationalError,
)

from bridge import jsonfast
from bridge.errors import BridgeError, ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseUnavailable(BridgeError):
    """The database cannot be used (unreachable, locked, corrupt, replaced): one line naming it."""


class DatabaseMissing(DatabaseUnavailable):
    """A command that only reads found no database file: nothing to read, and it creates none."""

    exit_code = 2


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite database URL; None for an in-memory one or another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") or parsed.query.get("mode") == "memory":
        return None  # an SQLite URI the operator wrote: its own mode and path rules
    return Path(os.path.abspath(parsed.database))  # as pysqlite resolves it


def describe_database(url: str | URL) -> str:
    """The database as an error line names it: the SQLite file, or the URL without its password
    and query (where libpq options such as `password=` may sit)."""
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return "in-memory SQLite"
    return parsed.set(query={}).render_as_string(hide_password=True)


def is_database_failure(exc: BaseException) -> bool:
    """The database could not be used, as opposed to a statement it refused (an integrity or
    programming error is a bug with a traceback worth having)."""
    return isinstance(exc, (OperationalError, InterfaceError, InternalError)) or type(exc) is DatabaseError


def unavailable(url: str | URL | None, exc: DBAPIError) -> DatabaseUnavailable:
    """One line naming the database: drivers' messages span lines (libpq adds hints)."""
    reason = " ".join(str(exc.orig).split()) or type(exc.orig).__name__
    where = describe_database(url) if url is not None else "unavailable"
    return DatabaseUnavailable(f"database {where}: {reason}")


def missing(path: Path) -> DatabaseMissing:
    return DatabaseMissing(f"database not found at {path}; run `bridge db upgrade` or `bridge sync` first")


def create_sqlite_file(path: Path) -> None:
    """Create the database file owner-only, whatever the umask: it holds password and token
    hashes and everyone's addresses. SQLite gives its -wal and -shm files the mode of the
    database file. An existing file keeps the mode its owner gave it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseUnavailable(f"database {path}: cannot create it: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # unlike os.open's mode, not narrowed by the umask
    finally:
        os.close(fd)


class DatabaseFile:
    """The SQLite file an engine opened, by device and inode. A file deleted or replaced under a
    running bridge leaves its open connections on the old inode (writes there are lost with it)
    and makes new ones open the new path: both are refused until bridge is restarted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity: tuple[int, int] | None = None

    def problem(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "was deleted"
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        if self.identity is not None and (st.st_dev, st.st_ino) != self.identity:
            return "was replaced by another file"
        return None

    def opened(self) -> None:
        """A new connection has just opened the path: the first one fixes the file."""
        if self.identity is None:
            try:
                st = os.stat(self.path)
            except OSError:
                return  # the connection's own checks will fail on it
            self.identity = (st.st_dev, st.st_ino)
        self.check()

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            message = f"the database file {self.path} {problem} after bridge opened it; restart bridge"
            raise OperationalError(None, None, sqlite3.OperationalError(message))


_FILES: weakref.WeakKeyDictionary[Engine, DatabaseFile] = weakref.WeakKeyDictionary()


def database_file(engine: Engine) -> DatabaseFile | None:
    return _FILES.get(engine)


def file_problem(engine: Engine) -> str | None:
    """Why the engine's SQLite file is not the one it opened (deleted, replaced), or None."""
    guard = database_file(engine)
    return None if guard is None else guard.problem()


def make_engine(url: str, *, origin: str = "config", echo: bool = False, create: bool = True) -> Engine:
    """`create`: create a missing SQLite file (owner-only); without it a missing file is
    `DatabaseMissing`. Connections never create one: a file deleted under a running bridge
    must not come back empty beside the old -wal file."""
    path = sqlite_file(url) if url.startswith("sqlite") else None
    if path is not None:
        if create:
            create_sqlite_file(path)
        elif not path.exists():
            raise missing(path)
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
            _sqlite_setup(engine, path)
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
    event.listen(engine, "commit", _check_nothing_queued)
    return engine


# Work queued on a connection for the end of its transaction (`at_commit`): the account events,
# whose position must be taken as the transaction's last step (bridge.store.events).
_AT_COMMIT = "bridge.at_commit"


def at_commit(conn: Connection, key: str, flush: Any) -> list[Any]:
    """A list, kept for `conn`'s transaction, that `flush(conn, items)` writes as the last step
    before `transaction` (or `discardable_transaction`) commits; nothing is written when the
    block raises or is discarded. One list per `key`."""
    queued = conn.info.setdefault(_AT_COMMIT, {})
    if key not in queued:
        queued[key] = (flush, [])
    return queued[key][1]


def _run_at_commit(conn: Connection) -> None:
    queued = conn.info.pop(_AT_COMMIT, None) or {}
    for flush, items in queued.values():
        if items:
            flush(conn, items)


def _check_nothing_queued(conn: Connection) -> None:
    # A transaction opened another way (engine.begin()) would commit without writing what was
    # queued: refused, so an account change can never commit without its events.
    if any(items for _, items in (conn.info.get(_AT_COMMIT) or {}).values()):
        conn.info.pop(_AT_COMMIT, None)
        raise RuntimeError("account events queued in a transaction not opened by bridge.store.db.transaction")


def _sqlite_setup(engine: Engine, path: Path | None) -> None:
    if path is not None:
        _guard_file(engine, path)

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


def _guard_file(engine: Engine, path: Path) -> None:
    guard = _FILES[engine] = DatabaseFile(path)

    @event.listens_for(engine, "do_connect")
    def _open_existing(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        # Our reason rather than "unable to open database file", and as the engine's own error
        # type even for raw_connection(), which does not wrap what the driver raises.
        guard.check()
        # mode=rw: open the file or fail, never create it (make_engine created it if asked).
        cargs[:] = [f"file:{quote(str(path))}?mode=rw"]
        cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _fix_file(_dbapi_connection: Any, _record: Any) -> None:
        guard.opened()

    # Checked when a connection leaves the pool and again just before COMMIT, so that a write
    # reaches a deleted or replaced file only if that happens in the microseconds between the
    # check and the commit (nothing short of a lock the deleter takes could close that gap).
    @event.listens_for(engine, "checkout")
    def _check_checkout(*_: Any) -> None:
        guard.check()

    @event.listens_for(engine, "commit")
    def _check_commit(_connection: Connection) -> None:
        guard.check()


@contextmanager
def transaction(engine: Engine, *, write: bool = True) -> Iterator[Connection]:
    """One database transaction: committed on success, rolled back on any exception."""
    with engine.connect() as connection:
        if write and engine.dialect.name == "sqlite":
            connection = connection.execution_options(sqlite_immediate=True)
        try:
            with connection.begin():
                yield connection
                _run_at_commit(connection)
        finally:
            # `info` belongs to the pooled DB-API connection: nothing queued may outlive the block.
            connection.info.pop(_AT_COMMIT, None)


@contextmanager
def read_only_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that can write nothing and is always rolled back: a preview that plans
    against the database must leave it exactly as it was. PostgreSQL refuses any write in it
    (`SET TRANSACTION READ ONLY`); on SQLite it takes no write lock and is rolled back."""
    with engine.connect() as connection, connection.begin() as trans:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        try:
            yield connection
        finally:
            trans.rollback()
            connection.info.pop(_AT_COMMIT, None)


class Discard:
    """Handed out by `discardable_transaction`: calling it makes the block roll back, not commit."""

    def __init__(self) -> None:
        self.discarded = False

    def __call__(self) -> None:
        self.discarded = True


@contextmanager
def discardable_transaction(engine: Engine) -> Iterator[tuple[Connection, Discard]]:
    """A write `transaction` whose block can also end by rolling back without raising: the block
    calls the `Discard` it is given (a sync whose checks ended the run, after writing its groups
    in the same transaction). Rolled back on any exception too."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection = connection.execution_options(sqlite_immediate=True)
        try:
            with connection.begin() as trans:
                discard = Discard()
                yield connection, discard
                if discard.discarded:
                    trans.rollback()
                else:
                    _run_at_commit(connection)
        finally:
            connection.info.pop(_AT_COMMIT, None)


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
    except DBAPIError as exc:
        if not is_database_failure(exc):
            raise
        raise unavailable(engine.url, exc) from None


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def ping(engine: Engine) -> None:
    """One round trip to the database (the readiness probe); raises whatever the driver raises."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


# The tables a sync writes a row or more per account into.
_GROWN_BY_SYNC = (
    "identities",
    "memberships",
    "accounts",
    "role_grants",
    "audit_events",
    "account_events",
    "outbox",
    "activation_tokens",
)


def refresh_statistics(engine: Engine) -> None:
    """PostgreSQL: ANALYZE the tables a sync fills. After a first sync into empty tables the
    planner still believes they are empty until autovacuum's analyze, up to a minute or more
    later: a product's snapshot of 20k accounts took 34.7 s before and 3.4 s after
    (docs/benchmarks.md, "Product API"). SQLite keeps no statistics unless asked, and its
    planner is not led astray the same way: nothing to do there."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn.execute(text(f"ANALYZE {', '.join(_GROWN_BY_SYNC)}"))
        conn.commit()
