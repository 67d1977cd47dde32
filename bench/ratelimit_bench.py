"""Rate limiter: the cost of a hit from a new key as the number of live keys grows.

    .venv/bin/python bench/ratelimit_bench.py [--keys 1000,10000,100000] [--hits 2000] [--repeat 3]

For each size N, a limiter is filled with N keys that are all inside their window (a flood of
distinct addresses or invented tokens), then `--hits` hits from further new keys are timed. Two
limiters in the same run: the baseline (the pruning bridge had before issue 13: past 50,000 keys
each new key scanned them all under the lock) and bridge's (bridge/web/ratelimit.py: keys ordered
by last hit, expired ones dropped from the front). Also times the steady state where keys expire
as fast as new ones arrive. Prints a Markdown table; the ratio is per-hit cost against bridge's
own at the smallest size.
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from bridge.web.ratelimit import RateLimiter


class BaselineLimiter:
    """bridge/web/ratelimit.py as it was before (commit c1b6d48), kept here to compare."""

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self._hits: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> bool:
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) > 50_000:
                    self._prune(now)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
            del self._hits[key]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def per_hit_us(make: Callable[[Clock], object], live_keys: int, hits: int, *, expiring: bool) -> float:
    clock = Clock()
    limiter = make(clock)
    allow = limiter.allow  # type: ignore[attr-defined]
    table = limiter._hits  # type: ignore[attr-defined]
    for i in range(live_keys):
        # Filled directly, as allow() would leave it: through the baseline's allow() the fill
        # alone would take minutes at 100,000 keys. Steady state: one key per time step and a
        # window as long as `live_keys` steps, so from here on each new key lets the oldest expire.
        clock.now += 1.0 if expiring else 0.0
        table[("fill", i)] = deque([clock.now])
    started = time.perf_counter()
    for i in range(hits):
        clock.now += 1.0 if expiring else 0.0
        allow(("new", i))
    return (time.perf_counter() - started) / hits * 1e6


def best_of(make: Callable[[Clock], object], live_keys: int, hits: int, expiring: bool, repeat: int) -> float:
    # The fastest of a few runs: the machine is shared, and the slow runs measure the neighbours.
    return min(per_hit_us(make, live_keys, hits, expiring=expiring) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default="1000,10000,100000")
    parser.add_argument("--hits", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.keys.split(",")]
    print(
        f"Python {platform.python_version()} on {platform.machine()}; {args.hits} new-key hits per cell "
        f"(200 for the baseline past 50,000 keys), best of {args.repeat}\n"
    )
    print("| live keys | case | baseline µs/hit | bridge µs/hit | baseline / bridge | bridge vs its smallest size |")
    print("|---:|---|---:|---:|---:|---:|")
    for expiring in (False, True):
        smallest: float | None = None
        case = "keys expire as new ones come" if expiring else "all keys live (flood)"
        for n in sizes:
            window = float(n) if expiring else 3600.0
            # Past 50,000 keys each baseline hit costs milliseconds: fewer of them.
            base_hits = args.hits if n <= 50_000 else min(args.hits, 200)
            base = best_of(lambda c, w=window: BaselineLimiter(10, w, clock=c), n, base_hits, expiring, args.repeat)
            new = best_of(lambda c, w=window: RateLimiter(10, w, clock=c), n, args.hits, expiring, args.repeat)
            smallest = smallest or new
            print(f"| {n:,} | {case} | {base:,.2f} | {new:,.2f} | {base / new:,.1f}× | {new / smallest:,.2f}× |")


if __name__ == "__main__":
    main()
