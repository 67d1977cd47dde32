"""Rate-limit counters in the database (bridge/store/ratelimit.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from bridge.store.db import make_engine, transaction, upgrade
from bridge.store.ratelimit import count_hit, hits_table, purge_expired


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def hit(engine: Engine, key: str, now: float, limit: int = 3, window: int = 60) -> bool:
    with transaction(engine) as conn:
        return count_hit(conn, "test", key, limit=limit, window_seconds=window, now=now)


def test_the_limit_holds_and_a_refused_hit_is_not_counted(engine: Engine) -> None:
    start = 6000.0  # the start of a window
    assert [hit(engine, "a", start + i) for i in range(5)] == [True, True, True, False, False]
    assert hit(engine, "b", start + 5)
    with transaction(engine) as conn:
        counted = conn.execute(select(func.sum(hits_table.c.hits)).where(hits_table.c.key_hash == "a")).scalar_one()
    assert counted == 3


def test_the_window_slides(engine: Engine) -> None:
    start = 6000.0
    assert [hit(engine, "a", start + 50.2) for _ in range(3)] == [True, True, True]
    assert not hit(engine, "a", start + 75)
    assert not hit(engine, "a", start + 109.9)
    # 60 s after the first hits they leave the window, as in the in-process limiter.
    assert [hit(engine, "a", start + 110.5) for _ in range(4)] == [True, True, True, False]


def test_hits_spread_over_the_window_all_count(engine: Engine) -> None:
    start = 6000.0
    assert [hit(engine, "a", start + t) for t in (0.5, 20.5, 40.5, 59.0)] == [True, True, True, False]
    assert hit(engine, "a", start + 61.0)  # the first has left; the other two still count
    assert not hit(engine, "a", start + 61.5)


def test_expired_rows_are_purged(engine: Engine) -> None:
    hit(engine, "old", 6000.0)
    hit(engine, "live", 6100.0)
    with transaction(engine) as conn:
        assert purge_expired(conn, 6100.0) == 1  # "old" left its window at 6060
        assert conn.execute(select(func.count()).select_from(hits_table)).scalar_one() == 1
