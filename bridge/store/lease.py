"""One runner at a time across processes and machines sharing one database.

PostgreSQL: a session advisory lock held on a dedicated connection for the job's duration; if
the holder dies, its connection closes and the server frees the lock at once.
SQLite: a lease row with an expiry, renewed by a thread while the job runs; a crashed holder's
lease simply expires (`ttl` seconds at most).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from bridge.store.db import transaction
from bridge.store.tables import Lease

log = logging.getLogger(__name__)
leases = Lease.__table__

HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class LeaseHandle:
    def __init__(self, name: str, release: Callable[[], None]) -> None:
        self.name = name
        self._release = release

    def release(self) -> None:
        self._release()

    def __enter__(self) -> LeaseHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lease(
    engine: Engine, name: str, *, ttl: float = 60.0, holder: str = HOLDER, tenant_id: int = 0
) -> LeaseHandle | None:
    """Take the lease `name` if free; None when another process holds it."""
    if engine.dialect.name == "postgresql":
        return _try_advisory(engine, name)
    return _try_row(engine, name, ttl, holder, tenant_id)


def _try_advisory(engine: Engine, name: str) -> LeaseHandle | None:
    conn: Connection = engine.connect()
    key = _advisory_key(name)
    try:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
        conn.commit()
    except Exception:
        conn.close()
        raise
    if not got:
        conn.close()
        return None

    def release() -> None:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
        finally:
            # A pooled connection must never go back holding a session lock.
            conn.invalidate()
            conn.close()

    return LeaseHandle(name, release)


def _try_row(engine: Engine, name: str, ttl: float, holder: str, tenant_id: int) -> LeaseHandle | None:
    now = datetime.now(UTC)
    with transaction(engine) as conn:
        row = conn.execute(select(leases).where(leases.c.tenant_id == tenant_id, leases.c.name == name)).first()
        values = {"holder": holder, "expires_at": now + timedelta(seconds=ttl), "acquired_at": now}
        if row is None:
            conn.execute(insert(leases).values(tenant_id=tenant_id, name=name, **values))
        elif row.holder == holder or row.expires_at <= now:
            if row.holder != holder:
                log.warning("lease %s taken over from %s (expired %s)", name, row.holder, row.expires_at.isoformat())
            conn.execute(update(leases).where(leases.c.tenant_id == tenant_id, leases.c.name == name).values(**values))
        else:
            return None

    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                with transaction(engine) as conn:
                    conn.execute(
                        update(leases)
                        .where(leases.c.tenant_id == tenant_id, leases.c.name == name, leases.c.holder == holder)
                        .values(expires_at=datetime.now(UTC) + timedelta(seconds=ttl))
                    )
            except Exception:  # a missed renewal only shortens the lease; the job goes on
                log.exception("could not renew lease %s", name)

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()

    def release() -> None:
        stop.set()
        renewer.join(timeout=5)
        with transaction(engine) as conn:
            conn.execute(
                delete(leases).where(leases.c.tenant_id == tenant_id, leases.c.name == name, leases.c.holder == holder)
            )

    return LeaseHandle(name, release)
