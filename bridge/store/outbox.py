"""The outbox's delivery state: claiming due rows, marking them, retrying, listing, purging.

Contract:
- Rows are written by `bridge.provision.apply` (through its store statements), in the
  transaction of the change they announce, with `status` "queued", `attempts` 0 and
  `next_attempt_at` when first due. This module never creates a row; it moves rows through
  `queued` → `sent` | `superseded` | `failed` | `dead`, and back to `queued` on a retry.
- Claiming is a lease, not a lock held while sending: `claim` gives a row to one worker
  (`claimed_by`, `claimed_until`) in a short transaction; the caller delivers outside any
  transaction, then marks the row with a guard on `claimed_by`. On PostgreSQL candidates are
  picked with `FOR UPDATE SKIP LOCKED`, so concurrent workers pass each other's rows by; on
  SQLite the claim runs under BEGIN IMMEDIATE (one writer at a time). On both, the UPDATE
  re-checks that the row is still queued and unclaimed, and `claim` returns only the rows that
  carry this worker's claim, so two workers never hold the same row. A worker that dies leaves
  its claims behind; they are free again when their lease runs out.
- Every `mark_*` and `record_failure` returns False when the claim was lost (the lease ran out
  and another worker took the row, or an operator retried it): the caller's delivery may then be
  repeated by that other worker, and the caller must not count it as its own.
- The caller decides the policy (`bridge.notify.outbox`): the backoff, when a row is dead, how
  long rows are kept. This module stores the outcome. `last_error` is cut to `MAX_ERROR_LENGTH`.
- `retry_message` raises `bridge.errors.NotFound` for an unknown id and `RetryRefused` for a
  row that cannot be retried (sent or superseded, or claimed right now); the CLI prints either
  as a one-line error.
- Payloads hold no secret (activation tokens are derived at delivery), so the listings may show
  what they return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, or_, select, update

from bridge.errors import BridgeError, NotFound
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
    """The row no longer makes sense (its account left `pending`, its link was replaced): it
    will not go out, and it needs nobody's attention."""
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


def record_failure(
    engine: Engine, row_id: int, worker_id: str, *, attempts: int, error: str, retry_at: datetime | None
) -> bool:
    """Record a failed try (`attempts` is the count including it): the row goes back to the queue,
    due at `retry_at`, or dies (status `dead`) when `retry_at` is None."""
    values: dict[str, Any] = {"attempts": attempts, "last_error": error[:MAX_ERROR_LENGTH], "claimed_until": None}
    if retry_at is None:
        values["status"] = "dead"
    else:
        values["next_attempt_at"] = retry_at
    with transaction(engine) as conn:
        result = conn.execute(update(outbox).where(_mine(row_id, worker_id)).values(**values))
    return result.rowcount == 1


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
    return [_message(r) for r in rows]


def _message(r: Any) -> dict[str, Any]:
    """An outbox row (joined with its tenant's name as `tenant`) as the listings show it."""
    return {
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


UNDELIVERED = ("queued", "failed", "dead")


def problem_rows(
    conn: Connection,
    tenant_id: int,
    *,
    channel: str | None = None,
    statuses: Sequence[str] = UNDELIVERED,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the tenant's undelivered rows (of `statuses`, of one channel or both), newest
    first, as `list_messages` renders them (with `lastError`): (rows, the `before_id` of the next
    page, or None on the last). Keyset paging on the id, over index (tenant, status, id)."""
    limit = max(1, min(limit, 1000))
    query = (
        select(outbox, tenants.c.name.label("tenant"))
        .join(tenants, tenants.c.id == outbox.c.tenant_id)
        .where(outbox.c.tenant_id == tenant_id, outbox.c.status.in_(list(statuses)))
    )
    if channel:
        query = query.where(outbox.c.channel == channel)
    if before_id is not None:
        query = query.where(outbox.c.id < before_id)
    rows = conn.execute(query.order_by(outbox.c.id.desc()).limit(limit + 1)).all()
    page = [_message(r) for r in rows[:limit]]
    return page, (rows[limit - 1].id if len(rows) > limit else None)


@dataclass(frozen=True)
class MailHealth:
    """The tenant's undelivered outbox rows: counts by status, and the age of the oldest queued
    row (None when nothing is queued). `by_channel` holds the same for each channel with rows."""

    queued: int
    failed: int
    dead: int
    oldest_queued_age_seconds: float | None
    by_channel: dict[str, MailHealth]


def mail_health(conn: Connection, tenant_id: int, now: datetime) -> MailHealth:
    """The tenant's mail and webhook health (the metrics' counts, for one tenant): two grouped
    queries over its undelivered rows (index (tenant, status, id)), none over what was sent."""
    counts: dict[str, dict[str, int]] = {}
    for channel, status, count in undelivered_counts(conn, tenant_id):
        counts.setdefault(channel, {})[status] = count
    oldest: dict[str, float] = {}
    for channel, created in oldest_queued(conn, tenant_id):
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        oldest[channel] = max((now - created).total_seconds(), 0.0)

    def health(by_status: dict[str, int], age: float | None, by_channel: dict[str, MailHealth]) -> MailHealth:
        return MailHealth(
            queued=by_status.get("queued", 0),
            failed=by_status.get("failed", 0),
            dead=by_status.get("dead", 0),
            oldest_queued_age_seconds=age,
            by_channel=by_channel,
        )

    channels = {c: health(counts.get(c, {}), oldest.get(c), {}) for c in sorted(set(counts) | set(oldest))}
    total = {s: sum(by.get(s, 0) for by in counts.values()) for s in UNDELIVERED}
    return health(total, max(oldest.values()) if oldest else None, channels)


def problem_counts(conn: Connection) -> dict[int, int]:
    """Every tenant's count of rows that need an operator (dead and failed), by tenant id."""
    return dict(
        conn.execute(
            select(outbox.c.tenant_id, func.count())
            .where(outbox.c.status.in_(["dead", "failed"]))
            .group_by(outbox.c.tenant_id)
        )
        .tuples()
        .all()
    )


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


def message_for_retry(conn: Connection, row_id: int) -> Any | None:
    """What an operator retrying a row is told and what the audit keeps of it (tenant, account,
    channel, topic, status, attempts, last error), or None for an unknown id."""
    return conn.execute(
        select(
            outbox.c.id,
            outbox.c.tenant_id,
            outbox.c.account_id,
            outbox.c.channel,
            outbox.c.topic,
            outbox.c.status,
            outbox.c.attempts,
            outbox.c.last_error,
        ).where(outbox.c.id == row_id)
    ).first()


def retry_message(conn: Connection, row_id: int, now: datetime) -> str:
    """Put a dead, failed (or waiting) row back in the queue, due now, with a fresh attempt count.
    A failed row is refused again unless what made it fail was fixed (a template, say); a
    corrected address comes with a new activation row of its own. Returns the status it had."""
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


# What the purge keeps: a row still waiting, and the newest row of each account in the kept topic
# (an activation link is valid only while no newer activation row exists, so deleting the newest
# would bring an older, replaced link back to life). Rows that need an operator (dead, failed)
# are kept longer.
PURGE_DONE = ("sent", "superseded")
PURGE_ATTENTION = ("dead", "failed")
PURGE_CHUNK = 5000


def purge(engine: Engine, *, done_before: datetime, attention_before: datetime, keep_newest_of: str) -> int:
    """Delete rows sent or superseded before `done_before`, and dead or failed rows created
    before `attention_before`, except each account's newest row of topic `keep_newest_of`, in
    short transactions of PURGE_CHUNK rows. Returns the count."""
    newer = outbox.alias("newer")
    newest_kept = (outbox.c.topic == keep_newest_of) & ~(
        select(newer.c.id)
        .where(
            newer.c.tenant_id == outbox.c.tenant_id,
            newer.c.account_id == outbox.c.account_id,
            newer.c.topic == keep_newest_of,
            newer.c.id > outbox.c.id,
        )
        .exists()
    )
    old = or_(
        outbox.c.status.in_(PURGE_DONE) & (func.coalesce(outbox.c.sent_at, outbox.c.created_at) < done_before),
        outbox.c.status.in_(PURGE_ATTENTION) & (outbox.c.created_at < attention_before),
    )
    purged = 0
    while True:
        with transaction(engine) as conn:
            ids = list(
                conn.execute(
                    select(outbox.c.id).where(old, ~newest_kept).order_by(outbox.c.id).limit(PURGE_CHUNK)
                ).scalars()
            )
            if ids:
                conn.execute(outbox.delete().where(outbox.c.id.in_(ids)))
        purged += len(ids)
        if len(ids) < PURGE_CHUNK:
            return purged


# ---- metrics ---------------------------------------------------------------------------------


def undelivered_counts(conn: Connection, tenant_id: int | None = None) -> list[tuple[str, str, int]]:
    """(channel, status, count) of the rows not delivered: queued, dead, failed (of one tenant,
    or of all)."""
    query = select(outbox.c.channel, outbox.c.status, func.count()).where(outbox.c.status.in_(list(UNDELIVERED)))
    if tenant_id is not None:
        query = query.where(outbox.c.tenant_id == tenant_id)
    return [
        (channel, status, count)
        for channel, status, count in conn.execute(query.group_by(outbox.c.channel, outbox.c.status))
    ]


def oldest_queued(conn: Connection, tenant_id: int | None = None) -> list[tuple[str, datetime]]:
    """(channel, created_at of its oldest queued row), for the channels with a queued row (of
    one tenant, or of all). SQLite hands the time back naive (it is UTC); PostgreSQL aware."""
    query = select(outbox.c.channel, func.min(outbox.c.created_at)).where(outbox.c.status == "queued")
    if tenant_id is not None:
        query = query.where(outbox.c.tenant_id == tenant_id)
    return [(channel, created) for channel, created in conn.execute(query.group_by(outbox.c.channel))]
