"""The outbox's delivery policy: the backoff between tries, when a row is dead, how long rows are kept.

The delivery state itself (claims, leases, marks, listings, the purge's statements) is in
`bridge.store.outbox`; this module decides and the store records.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import Engine

from bridge.notify.activation import ACTIVATION_TOPIC
from bridge.store import outbox as store
from bridge.store.outbox import Claimed


def backoff_seconds(attempts: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before the next try after `attempts` failed tries: doubling from `base`, capped, with
    "equal jitter" (half fixed, half random) so rows that failed together do not retry together."""
    delay = min(cap, base * (2 ** max(attempts - 1, 0)))
    return delay / 2 + (rng or random).uniform(0, delay / 2)


def mark_failed(
    engine: Engine,
    row: Claimed,
    worker_id: str,
    now: datetime,
    error: str,
    *,
    permanent: bool,
    max_attempts: int,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> str:
    """Record a failed try; the row goes back to the queue with a backoff, or dies. Returns the
    new status ("queued" or "dead"), or "lost" when the claim was no longer ours."""
    attempts = row.attempts + 1
    dead = permanent or attempts >= max_attempts
    retry_at = None if dead else now + timedelta(seconds=backoff_seconds(attempts, base=base, cap=cap, rng=rng))
    if not store.record_failure(engine, row.id, worker_id, attempts=attempts, error=error, retry_at=retry_at):
        return "lost"
    return "dead" if dead else "queued"


def purge_outbox(engine: Engine, now: datetime, *, keep_days: int = 30, keep_attention_days: int = 90) -> int:
    """Delete rows sent or superseded more than `keep_days` ago, and dead or failed rows older
    than `keep_attention_days`, in short transactions. Each account's newest activation row is
    kept whatever its age: its link is valid only while no newer activation row exists, so
    deleting it would bring an older, replaced link back to life. Returns the count."""
    return store.purge(
        engine,
        done_before=now - timedelta(days=keep_days),
        attention_before=now - timedelta(days=keep_attention_days),
        keep_newest_of=ACTIVATION_TOPIC,
    )
