"""The outbox as a queue: claiming due rows, marking them, backoff, and the operator's views.

Claiming is a lease, not a lock held while sending: a row is claimed by one worker (`claimed_by`,
`claimed_until`) in a short transaction, delivered outside any transaction, then marked with a
guard on `claimed_by`. On PostgreSQL candidates are picked with `FOR UPDATE SKIP LOCKED`, so
concurrent workers pass each other's rows by; on SQLite the claim runs under BEGIN IMMEDIATE (one
writer at a time). On both, the UPDATE re-checks that the row is still queued and unclaimed, and
the worker keeps only the rows that carry its own claim, so two workers never hold the same row.
A worker that dies leaves its claims behind; they are free again when their lease runs out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, or_, select, update

from bridge.errors import BridgeError, NotFound
from bridge.notify.activation import ACTIVATION_TOPIC
from bridge.store.db import transaction
from bridge.store.tables import OutboxMessage, Tenant

outbox = OutboxMessage.__table__
tenants = Tenant.__table__

# last_error is for operators; a receiver's whole error page is not.
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Claimed:
    id: int
    tenant_id: int
    account_id: str | None
    channel: str
    topic: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int
    created_at: datetime


def _due(now: datetime, due_by: datetime) -> Any:
    return (
        (outbox.c.status == "queued")
        & (outbox.c.next_attempt_at <= due_by)
        & or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now)
    )


def claim(
    engine: Engine,
    worker_id: str,
    now: datetime,
    *,
    limit: int,
    lease: timedelta,
    due_by: datetime | None = None,
) -> list[Claimed]:
    """Claim up to `limit` rows due by `due_by` (default `now`) for `worker_id`, oldest first.

    A pass passes its start as `due_by`, so a row it failed and rescheduled a moment later is
    left for the next pass instead of being hammered within this one."""
    due = _due(now, due_by or now)
    with transaction(engine) as conn:
        candidates = select(outbox.c.id).where(due).order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        ids = list(conn.execute(candidates).scalars())
        if not ids:
            return []
        conn.execute(
            update(outbox).where(outbox.c.id.in_(ids), due).values(claimed_by=worker_id, claimed_until=now + lease)
        )
        rows = conn.execute(
            select(outbox)
            .where(outbox.c.id.in_(ids), outbox.c.claimed_by == worker_id, outbox.c.status == "queued")
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
        ).all()
    return [
        Claimed(
            id=r.id,
            tenant_id=r.tenant_id,
            account_id=r.account_id,
            channel=r.channel,
            topic=r.topic,
            payload=dict(r.payload),
            idempotency_key=r.idempotency_key,
            attempts=r.attempts,
            created_at=r.created_at,
        )
        for r in rows
    ]


def _mine(row_id: int, worker_id: str) -> Any:
    return (outbox.c.id == row_id) & (outbox.c.claimed_by == worker_id) & (outbox.c.status == "queued")


def extend_claims(engine: Engine, worker_id: str, ids: Sequence[int], until: datetime) -> set[int]:
    """Renew the lease on `ids`; returns the ids this worker still holds."""
    if not ids:
        return set()
    with transaction(engine) as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(list(ids)), outbox.c.claimed_by == worker_id, outbox.c.status == "queued")
            .values(claimed_until=until)
        )
        return set(
            conn.execute(
                select(outbox.c.id).where(
                    outbox.c.id.in_(list(ids)), outbox.c.claimed_by == worker_id, outbox.c.status == "queued"
                )
            ).scalars()
        )


def release_claims(engine: Engine, worker_id: str) -> int:
    """Give back what this worker still holds (on a clean stop), so nobody waits for the lease."""
    with transaction(engine) as conn:
        result = conn.execute(
            update(outbox)
            .where(outbox.c.claimed_by == worker_id, outbox.c.status == "queued")
            .values(claimed_by=None, claimed_until=None)
        )
    return int(result.rowcount or 0)


# Built once: one is executed per delivered message, and building an UPDATE costs more than
# running it on SQLite.
_MARK_SENT = (
    update(outbox)
    .where(outbox.c.id == bindparam("row_id"), outbox.c.claimed_by == bindparam("worker"), outbox.c.status == "queued")
    .values(
        status="sent", sent_at=bindparam("now"), claimed_until=None, last_error=None, attempts=outbox.c.attempts + 1
    )
)


def mark_sent(engine: Engine, row_id: int, worker_id: str, now: datetime) -> bool:
    """False when the claim was lost (lease ran out and another worker took the row)."""
    with transaction(engine) as conn:
        result = conn.execute(_MARK_SENT, {"row_id": row_id, "worker": worker_id, "now": now})
    return result.rowcount == 1


def mark_superseded(engine: Engine, row_id: int, worker_id: str, reason: str) -> bool:
    with transaction(engine) as conn:
        result = conn.execute(
            update(outbox)
            .where(_mine(row_id, worker_id))
            .values(status="superseded", claimed_until=None, last_error=reason[:MAX_ERROR_LENGTH])
        )
    return result.rowcount == 1


def mark_refused(engine: Engine, row_id: int, worker_id: str, reason: str) -> bool:
    """Refuse a row for good (status `failed`): bridge cannot make a message of it (no usable
    address, no template, data that breaks the template), so no retry would help. Unlike `dead`,
    nothing was handed to a relay or receiver."""
    with transaction(engine) as conn:
        result = conn.execute(
            update(outbox)
            .where(_mine(row_id, worker_id))
            .values(
                status="failed",
                claimed_until=None,
                attempts=outbox.c.attempts + 1,
                last_error=reason[:MAX_ERROR_LENGTH],
            )
        )
    return result.rowcount == 1


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
    values: dict[str, Any] = {"attempts": attempts, "last_error": error[:MAX_ERROR_LENGTH], "claimed_until": None}
    if dead:
        values["status"] = "dead"
    else:
        values["next_attempt_at"] = now + timedelta(seconds=backoff_seconds(attempts, base=base, cap=cap, rng=rng))
    with transaction(engine) as conn:
        result = conn.execute(update(outbox).where(_mine(row.id, worker_id)).values(**values))
    if result.rowcount != 1:
        return "lost"
    return "dead" if dead else "queued"


# ---- operators -------------------------------------------------------------------------------


def list_messages(conn: Connection, *, dead_only: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
    """Undelivered rows (queued, dead and failed), or only those that will not go out by
    themselves (dead and failed). Never the payload's secrets: payloads hold none, activation
    tokens are derived at delivery."""
    statuses = ["dead", "failed"] if dead_only else ["queued", "dead", "failed"]
    rows = conn.execute(
        select(outbox, tenants.c.name.label("tenant"))
        .join(tenants, tenants.c.id == outbox.c.tenant_id)
        .where(outbox.c.status.in_(statuses))
        .order_by(outbox.c.id)
        .limit(limit)
    ).all()
    return [
        {
            "id": r.id,
            "tenant": r.tenant,
            "channel": r.channel,
            "topic": r.topic,
            "status": r.status,
            "attempts": r.attempts,
            "to": r.payload.get("to") if r.channel == "email" else None,
            "accountId": r.account_id,
            "created": r.created_at.isoformat(),
            "nextAttemptAt": r.next_attempt_at.isoformat() if r.status == "queued" else None,
            "lastError": r.last_error,
        }
        for r in rows
    ]


def account_mail(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's mails that did not (or not yet) go out: queued, dead, failed, with why."""
    rows = conn.execute(
        select(outbox.c.id, outbox.c.topic, outbox.c.status, outbox.c.created_at, outbox.c.last_error)
        .where(
            outbox.c.account_id == account_id,
            outbox.c.channel == "email",
            outbox.c.status.in_(["queued", "dead", "failed"]),
        )
        .order_by(outbox.c.id)
    ).all()
    return [
        {"id": r.id, "topic": r.topic, "status": r.status, "created": r.created_at.isoformat(), "reason": r.last_error}
        for r in rows
    ]


class RetryRefused(BridgeError):
    pass


def retry_message(conn: Connection, row_id: int, now: datetime) -> str:
    """Put a dead, failed (or waiting) row back in the queue, due now, with a fresh attempt count.
    A failed row is refused again unless what made it fail was fixed (a template, say); a
    corrected address comes with a new activation row of its own."""
    row = conn.execute(select(outbox.c.status, outbox.c.claimed_until).where(outbox.c.id == row_id)).first()
    if row is None:
        raise NotFound(f"no outbox message {row_id}")
    if row.status not in ("dead", "failed", "queued"):
        raise RetryRefused(
            f"outbox message {row_id} is {row.status}; only dead, failed or queued messages can be retried"
        )
    if row.claimed_until is not None and row.claimed_until >= now:
        # Clearing a live claim would let a second worker send what the first is sending.
        raise RetryRefused(f"outbox message {row_id} is being delivered right now")
    conn.execute(
        update(outbox)
        .where(outbox.c.id == row_id)
        .values(status="queued", attempts=0, next_attempt_at=now, claimed_by=None, claimed_until=None)
    )
    return row.status


# What the purge keeps: a row still waiting, and the newest activation row of each account (a link
# is valid only while no newer activation row exists, so deleting the newest would bring an older,
# replaced link back to life). Rows that need an operator (dead, failed) are kept longer.
PURGE_DONE = ("sent", "superseded")
PURGE_ATTENTION = ("dead", "failed")
PURGE_CHUNK = 5000


def purge_outbox(engine: Engine, now: datetime, *, keep_days: int = 30, keep_attention_days: int = 90) -> int:
    """Delete rows sent or superseded more than `keep_days` ago, and dead or failed rows older
    than `keep_attention_days`, in short transactions. Returns the count."""
    newer = outbox.alias("newer")
    newest_activation = (outbox.c.topic == ACTIVATION_TOPIC) & ~(
        select(newer.c.id)
        .where(
            newer.c.tenant_id == outbox.c.tenant_id,
            newer.c.account_id == outbox.c.account_id,
            newer.c.topic == ACTIVATION_TOPIC,
            newer.c.id > outbox.c.id,
        )
        .exists()
    )
    old = or_(
        outbox.c.status.in_(PURGE_DONE)
        & (func.coalesce(outbox.c.sent_at, outbox.c.created_at) < now - timedelta(days=keep_days)),
        outbox.c.status.in_(PURGE_ATTENTION) & (outbox.c.created_at < now - timedelta(days=keep_attention_days)),
    )
    purged = 0
    while True:
        with transaction(engine) as conn:
            ids = list(
                conn.execute(
                    select(outbox.c.id).where(old, ~newest_activation).order_by(outbox.c.id).limit(PURGE_CHUNK)
                ).scalars()
            )
            if ids:
                conn.execute(outbox.delete().where(outbox.c.id.in_(ids)))
        purged += len(ids)
        if len(ids) < PURGE_CHUNK:
            return purged
