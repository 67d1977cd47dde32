"""Sliding-window rate limits: in the database when several processes share PostgreSQL, in
memory otherwise (`limiter()` picks).

On PostgreSQL every process and machine counts in one table (bridge.store.ratelimit), so a limit
holds whatever number of `bridge serve` processes answer. On SQLite the limiter stays in
process: SQLite means one host, and a counter there would be a write, queued behind SQLite's one
writer lock, which a sync or a large SCIM write holds for seconds: every login check
(verify-password) and activation page would wait for it. Each granian worker then enforces its
own window, so the effective limit is the configured one times the workers (2 by default). That
still caps guessing (links carry 256 bits; passwords are slowed by argon2id) and mail bombing to
a small multiple.

In memory, keys sit in an OrderedDict in the order of their last counted hit. The clock is
monotonic, so the keys whose window has passed are always at the front: each call drops the
expired ones there and stops at the first live one. A key is dropped at most once per insertion,
so the work is amortised O(1) per hit however many keys there are (the earlier version scanned
every key on each new key past 50,000, under the lock: 4.5 ms per key; bench/ratelimit_bench.py).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Protocol

from sqlalchemy import Engine

from bridge.store.db import transaction
from bridge.store.ratelimit import count_hit, purge_expired

# Past this many live keys the least recently hit one is forgotten (its budget starts again):
# memory stays bounded under a flood of distinct keys (addresses, invented tokens), and the key
# under attack is the most recently hit, so it is the last to go. About 200 bytes per key.
MAX_KEYS = 200_000


class Limiter(Protocol):
    def allow(self, key: Hashable) -> bool: ...


def limiter(engine: Engine, name: str, limit: int, window_seconds: int) -> Limiter:
    """The limiter `name` (unique per deployment: it names the counters in the database)."""
    if engine.dialect.name == "postgresql":
        return SharedRateLimiter(engine, name, limit, window_seconds)
    return RateLimiter(limit, window_seconds)


class RateLimiter:
    def __init__(
        self,
        limit: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._hits: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> bool:
        """Count one hit for `key`; False when it is over the limit (the hit is not counted)."""
        now = self.clock()
        cutoff = now - self.window
        with self._lock:
            self._prune(cutoff)
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_keys:
                    self._hits.popitem(last=False)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= cutoff:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            self._hits.move_to_end(key)
            return True

    def retry_after(self, key: Hashable) -> int:
        with self._lock:
            hits = self._hits.get(key)
            if not hits:
                return 0
            return max(1, int(hits[0] + self.window - self.clock()) + 1)

    def __len__(self) -> int:
        return len(self._hits)

    def _prune(self, cutoff: float) -> None:
        # Front = least recently hit. Stops at the first key still inside its window.
        hits = self._hits
        while hits:
            oldest = next(iter(hits.values()))
            if oldest and oldest[-1] > cutoff:
                return
            hits.popitem(last=False)


class SharedRateLimiter:
    """The same limit, counted in the database for every process that shares it."""

    # Expired counters are deleted by whichever process first finds this long has passed.
    PURGE_EVERY_SECONDS = 60.0

    def __init__(
        self, engine: Engine, name: str, limit: int, window_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.name = name
        self.limit = limit
        self.window = window_seconds
        # Wall time, not monotonic: the windows are shared with other processes and machines.
        self.clock = clock
        self._next_purge = 0.0

    def allow(self, key: Hashable) -> bool:
        """Count one hit for `key`; False when it is over the limit (the hit is not counted)."""
        now = self.clock()
        # Hashed: no client address, user name or token reaches the table. repr() of the str,
        # int and tuple keys the callers use is the same in every process.
        key_hash = hashlib.sha256(repr(key).encode()).hexdigest()
        with transaction(self.engine) as conn:
            allowed = count_hit(conn, self.name, key_hash, limit=self.limit, window_seconds=self.window, now=now)
        if now >= self._next_purge:
            self._next_purge = now + self.PURGE_EVERY_SECONDS
            with transaction(self.engine) as conn:
                purge_expired(conn, now)
        return allowed
