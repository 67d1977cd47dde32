"""Sliding-window rate limits, in memory.

Per process: with several `bridge serve` processes each enforces its own window, so the
effective limit is the configured one times the number of processes. That still caps guessing
(links carry 256 bits; passwords are slowed by argon2id) and mail bombing to a small multiple.

Keys sit in an OrderedDict in the order of their last counted hit. The clock is monotonic, so
the keys whose window has passed are always at the front: each call drops the expired ones there
and stops at the first live one. A key is dropped at most once per insertion, so the work is
amortised O(1) per hit however many keys there are (the earlier version scanned every key on
each new key past 50,000, under the lock: 4.5 ms per key; bench/ratelimit_bench.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

# Past this many live keys the least recently hit one is forgotten (its budget starts again):
# memory stays bounded under a flood of distinct keys (addresses, invented tokens), and the key
# under attack is the most recently hit, so it is the last to go. About 200 bytes per key.
MAX_KEYS = 200_000


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
