"""The in-process sliding-window limiter (bridge/web/ratelimit.py): its semantics, with a clock
the test moves."""

from __future__ import annotations

from bridge.web.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_holds_within_the_window_and_a_refused_hit_is_not_counted() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60, clock=clock)
    assert [limiter.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("b")
    clock.now += 59.9
    assert not limiter.allow("a")
    # Sliding: 60 s after the first hits, they leave the window (the refused ones never entered).
    clock.now += 0.1
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_expired_keys_are_pruned_and_live_ones_kept() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 60, clock=clock)
    for i in range(1000):
        limiter.allow(f"old{i}")
    limiter.allow("live")
    limiter.allow("live")
    clock.now += 30
    limiter.allow("live")  # refused, and does not make the key look newer than it is
    limiter.allow("recent")
    assert len(limiter) == 1002
    clock.now += 30  # the old keys' and "live"'s window is over; "recent" has 30 s left
    assert limiter.allow("new")
    assert len(limiter) == 2  # "recent" and "new"
    assert [limiter.allow("recent"), limiter.allow("recent")] == [True, False]
    assert limiter.allow("live")  # a fresh window


def test_a_key_hit_again_moves_behind_the_others() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 60, clock=clock)
    limiter.allow("a")
    clock.now += 10
    limiter.allow("b")
    clock.now += 10
    limiter.allow("a")  # a's last hit is now the newest
    clock.now += 45  # b's hit is 55 s old: live; a's first hit (65 s) has left its window
    limiter.allow("c")
    assert len(limiter) == 3
    clock.now += 10  # b's last hit is 65 s old: gone; a's last is 55 s old: kept
    limiter.allow("d")
    assert len(limiter) == 3
    assert [limiter.allow("a") for _ in range(5)] == [True, True, True, True, False]


def test_the_number_of_keys_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 3600, clock=clock, max_keys=100)
    limiter.allow("target")
    for i in range(1000):
        clock.now += 0.001
        limiter.allow(f"k{i}")
        assert len(limiter) <= 100
    # The least recently hit keys went first; the most recent ones are still limited.
    assert not limiter.allow("k999")
    assert limiter.allow("target")
