"""Rate-limit counters in the database, so that a limit holds across every process sharing one
PostgreSQL (bridge.web.ratelimit.limiter decides when they are used).

A sliding window, counted in one-second slots: one row per (limit, hashed key, second) with the
hits of that second. A hit is allowed while the hits of the slots inside the window are under the
limit; one statement sums them and raises the current slot (INSERT ... SELECT ... ON CONFLICT DO
UPDATE ... WHERE ... RETURNING), and a refused hit returns no row and changes nothing, as in the
in-process limiter. On PostgreSQL a transaction-scoped advisory lock on the key comes first, so
that hits on one key from any number of processes are counted one after the other: without it
two processes writing different slots at a second's turn could each miss the other's hit. The
only difference from the in-process limiter: a hit leaves the window up to a second early.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import BigInteger, Connection, Integer, String, bindparam, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite

from bridge.store.tables import RateLimitHit

hits_table = RateLimitHit.__table__
_c = hits_table.c
_STATEMENTS: dict[str, Any] = {}


def _count_hit_statement(dialect: str) -> Any:
    statement = _STATEMENTS.get(dialect)
    if statement is not None:
        return statement
    # Typed, so that PostgreSQL knows what the SELECT's bare parameters are.
    name, key_hash = bindparam("name", type_=String), bindparam("key_hash", type_=String)
    inside = hits_table.alias("inside")
    in_window = (
        select(func.coalesce(func.sum(inside.c.hits), 0))
        .where(
            inside.c.name == name,
            inside.c.key_hash == key_hash,
            inside.c.window > bindparam("since", type_=BigInteger),
        )
        .scalar_subquery()
    )
    limit = bindparam("limit", type_=Integer)
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(hits_table)
    statement = (
        insert.from_select(
            ["name", "key_hash", "window", "hits", "expires_at"],
            select(
                name,
                key_hash,
                bindparam("slot", type_=BigInteger),
                literal(1, Integer),
                bindparam("expires_at", type_=BigInteger),
            ).where(in_window < limit),
        )
        .on_conflict_do_update(
            index_elements=[_c.name, _c.key_hash, _c.window],
            set_={"hits": hits_table.c.hits + 1},
            where=in_window < limit,
        )
        .returning(hits_table.c.hits)
    )
    _STATEMENTS[dialect] = statement
    return statement


def _lock_key(name: str, key_hash: str) -> int:
    digest = hashlib.blake2b(f"ratelimit\x00{name}\x00{key_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def count_hit(conn: Connection, name: str, key_hash: str, *, limit: int, window_seconds: int, now: float) -> bool:
    """Count one hit of `key_hash` against limit `name`; False (nothing counted) when over.
    Run it in a transaction of its own: on PostgreSQL it holds the key's lock until the end."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_lock_key(name, key_hash))))
    slot = int(now)
    row = conn.execute(
        _count_hit_statement(conn.dialect.name),
        {
            "name": name,
            "key_hash": key_hash,
            "slot": slot,
            # Slot s holds hits in [s, s + 1): inside the window while s > now - window.
            "since": int(now - window_seconds),
            "limit": limit,
            "expires_at": slot + window_seconds + 1,
        },
    ).first()
    return row is not None


def purge_expired(conn: Connection, now: float) -> int:
    return conn.execute(delete(hits_table).where(_c.expires_at < int(now))).rowcount
