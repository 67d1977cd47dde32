"""The product's copy of bridge's accounts: its SQLite database, a small client of bridge's
product API, and the follower that keeps the copy in step with bridge's change feed.

The rules it follows (docs/product-integration.md has bridge's side of each):
- The feed (`GET /api/v1/events`) is the source of truth. Each page of events is applied in one
  transaction together with the cursor that comes after it, so a crash anywhere leaves either
  the page and its cursor or neither: the next read starts again from the cursor stored with
  the last changes that committed.
- Events are applied idempotently, keyed by their `id`: the feed may bring an event again (after
  a crash, or after a snapshot that already showed its change), and a repeat changes nothing.
- With no cursor (first start, or a 410 because the cursor is older than bridge keeps events),
  the product reconciles from the snapshot (`GET /api/v1/accounts`, every page) and follows
  the feed from the snapshot's `eventsCursor`.
- An event of a type this product does not know (a newer bridge), or about an account it has
  never seen, is not guessed at: the account is marked and re-read (`GET /api/v1/accounts/<id>`).
- Events never stop the follower: an odd field is skipped, a failed read is retried later.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

log = logging.getLogger("product.follower")

# Account events whose `change.after` holds the account's status and roles at that event.
KNOWN_ACCOUNT_EVENTS = frozenset(
    {
        "account.created",
        "account.pending",
        "account.activated",
        "account.roles_changed",
        "account.suspended",
        "account.resumed",
        "account.archived",
        "account.reactivated",
        "account.updated",  # status and roles unchanged by it; its detail has the changed fields
    }
)
# Changes of the account's own fields: `change.detail` names each, {"email": {"from", "to"}}.
UPDATED = "account.updated"
# The fields of `account.updated` this product keeps (snapshot name -> column).
NAME_FIELDS = {"givenName": "given_name", "familyName": "family_name", "displayName": "display_name"}
# Events about the tenant (held plans, failed syncs): recorded, nothing to apply to a user.
TENANT_EVENTS = frozenset({"plan.held", "plan.approved", "sync.failed"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    bridge_id      TEXT PRIMARY KEY,          -- bridge's account id: stable, unlike userName or email
    user_name      TEXT NOT NULL,
    email          TEXT,
    given_name     TEXT,
    family_name    TEXT,
    display_name   TEXT,                      -- bridge's displayName (the directory's displayName or cn)
    status         TEXT NOT NULL,             -- no_access, pending, active, suspended, archived
    roles          TEXT NOT NULL DEFAULT '[]',-- JSON array of role ids, sorted
    user_type      TEXT,
    needs_refresh  INTEGER NOT NULL DEFAULT 0,-- re-read from the snapshot (unknown event type, new account)
    events_applied INTEGER NOT NULL DEFAULT 0,-- feed events applied to this user (each once)
    updated_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS users_user_name ON users (lower(user_name));
CREATE INDEX IF NOT EXISTS users_email ON users (lower(email));
CREATE TABLE IF NOT EXISTS applied_events (
    event_id   TEXT PRIMARY KEY,              -- what makes applying an event idempotent
    type       TEXT NOT NULL,
    account_id TEXT,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_state (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    cursor             TEXT,                  -- where the feed continues; NULL: reconcile first
    reconciled_at      TEXT,
    reconciled_cursor  TEXT,                  -- the eventsCursor of the last reconciliation
    reconciliations    INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO feed_state (id) VALUES (1);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def display_name(user: sqlite3.Row) -> str:
    """What the product shows: bridge's displayName, else the given and family names, else the login."""
    parts = [p for p in (user["given_name"], user["family_name"]) if p]
    return str(user["display_name"] or " ".join(parts) or user["user_name"])


def _roles_text(roles: Any) -> str:
    return json.dumps(sorted(r for r in roles if isinstance(r, str))) if isinstance(roles, list) else "[]"


# ---- the product's database ----------------------------------------------------------------------


class Store:
    """The product's SQLite database. One connection per call (threads: the web requests and the
    follower); every write is one `BEGIN IMMEDIATE` transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; `transaction()` says where they are.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    # -- reads --
    def cursor(self) -> str | None:
        with self.reading() as conn:
            return conn.execute("SELECT cursor FROM feed_state WHERE id = 1").fetchone()["cursor"]

    def state(self) -> dict[str, Any]:
        with self.reading() as conn:
            feed = dict(conn.execute("SELECT * FROM feed_state WHERE id = 1").fetchone())
            counts = dict(conn.execute("SELECT status, count(*) FROM users GROUP BY status").fetchall())
            applied = conn.execute("SELECT count(*) FROM applied_events").fetchone()[0]
            marked = conn.execute("SELECT count(*) FROM users WHERE needs_refresh = 1").fetchone()[0]
        feed.pop("id")
        return {**feed, "users": counts, "eventsApplied": applied, "needsRefresh": marked}

    def user_for_login(self, login: str) -> sqlite3.Row | None:
        """The user a sign-in names, by userName first, then by email (as bridge resolves it)."""
        with self.reading() as conn:
            for column in ("user_name", "email"):
                rows = conn.execute(
                    f"SELECT * FROM users WHERE lower({column}) = lower(?) AND status != 'archived'", (login,)
                ).fetchall()
                if len(rows) == 1:
                    return rows[0]
        return None

    def user(self, bridge_id: str) -> sqlite3.Row | None:
        with self.reading() as conn:
            row: sqlite3.Row | None = conn.execute("SELECT * FROM users WHERE bridge_id = ?", (bridge_id,)).fetchone()
            return row

    def marked_for_refresh(self) -> set[str]:
        with self.reading() as conn:
            return {r[0] for r in conn.execute("SELECT bridge_id FROM users WHERE needs_refresh = 1")}

    # -- writes --
    def apply_page(self, after: str | None, events: list[dict[str, Any]], next_cursor: str) -> bool:
        """Apply one page of the feed, read after `after`, and store `next_cursor`, in one
        transaction. False (and nothing written) when the stored cursor is no longer `after`:
        another follower (a second process on the same database) got there first."""
        with self.transaction() as conn:
            stored = conn.execute("SELECT cursor FROM feed_state WHERE id = 1").fetchone()["cursor"]
            if stored != after:
                return False
            for event in events:
                _apply_event(conn, event)
            conn.execute("UPDATE feed_state SET cursor = ? WHERE id = 1", (next_cursor,))
        return True

    def replace_all(self, accounts: list[dict[str, Any]], events_cursor: str) -> None:
        """A reconciliation: the snapshot becomes the product's users, with the feed's cursor.
        bridge never deletes an account, so a user the snapshot does not list is one the product
        should no longer let in: archived here, not deleted (the product's own data stays)."""
        now = _now()
        with self.transaction() as conn:
            listed = set()
            for account in accounts:
                _upsert_document(conn, account, now)
                listed.add(account["id"])
            for row in conn.execute("SELECT bridge_id FROM users WHERE status != 'archived'").fetchall():
                if row[0] not in listed:
                    conn.execute(
                        "UPDATE users SET status = 'archived', roles = '[]', updated_at = ? WHERE bridge_id = ?",
                        (now, row[0]),
                    )
            conn.execute(
                "UPDATE feed_state SET cursor = ?, reconciled_cursor = ?, reconciled_at = ?,"
                " reconciliations = reconciliations + 1 WHERE id = 1",
                (events_cursor, events_cursor, now),
            )

    def refresh(self, accounts: list[dict[str, Any]], wanted: set[str]) -> None:
        """Marked users re-read from bridge (their current state there)."""
        now = _now()
        with self.transaction() as conn:
            for account in accounts:
                _upsert_document(conn, account, now)
            # One bridge no longer has cannot be re-read: leave it as the feed left it.
            for bridge_id in wanted:
                conn.execute("UPDATE users SET needs_refresh = 0 WHERE bridge_id = ?", (bridge_id,))


def _upsert_document(conn: sqlite3.Connection, account: dict[str, Any], now: str) -> None:
    """An account of the snapshot, as bridge has it now."""
    conn.execute(
        "INSERT INTO users (bridge_id, user_name, email, given_name, family_name, display_name, status, roles,"
        " user_type, updated_at) VALUES (:id, :user_name, :email, :given_name, :family_name, :display_name,"
        " :status, :roles, :user_type, :now)"
        " ON CONFLICT (bridge_id) DO UPDATE SET user_name = excluded.user_name, email = excluded.email,"
        " given_name = excluded.given_name, family_name = excluded.family_name,"
        " display_name = excluded.display_name, status = excluded.status, roles = excluded.roles,"
        " user_type = excluded.user_type, needs_refresh = 0, updated_at = excluded.updated_at",
        {
            "id": account["id"],
            "user_name": account.get("userName") or account["id"],
            "email": account.get("email"),
            "given_name": account.get("givenName"),
            "family_name": account.get("familyName"),
            "display_name": account.get("displayName"),
            "status": account.get("status") or "no_access",
            "roles": _roles_text(account.get("roles")),
            "user_type": account.get("userType"),
            "now": now,
        },
    )


def _apply_event(conn: sqlite3.Connection, event: dict[str, Any]) -> None:
    """One feed event, at most once. Never raises on an odd event: a newer bridge may send
    types and fields this product has never heard of."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        log.warning("feed event without an id skipped: %r", event)
        return
    kind = str(event.get("type") or "")
    account = event.get("account") if isinstance(event.get("account"), dict) else None
    account_id = account.get("id") if account and isinstance(account.get("id"), str) else None
    first_time = conn.execute(
        "INSERT INTO applied_events (event_id, type, account_id, applied_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (event_id) DO NOTHING",
        (event_id, kind, account_id, _now()),
    ).rowcount
    if not first_time:
        return  # seen before: the feed brought it again
    if account is None or account_id is None:
        if kind not in TENANT_EVENTS:
            log.info("event %s of type %r names no account: nothing to apply", event_id, kind)
        return
    change = event.get("change") if isinstance(event.get("change"), dict) else {}
    after = change.get("after") if isinstance(change.get("after"), dict) else {}
    known = kind in KNOWN_ACCOUNT_EVENTS and isinstance(after.get("status"), str)
    exists = conn.execute("SELECT 1 FROM users WHERE bridge_id = ?", (account_id,)).fetchone() is not None
    now = _now()
    # `account` is who the event is about as bridge has it *now* (its userName and email are the
    # freshest there are); `change.after` is the status and roles at the time of the event, and
    # events come in commit order, so the last one applied is the current state.
    who = {
        "id": account_id,
        "user_name": account.get("userName") or account_id,
        "email": account.get("email"),
        "user_type": account.get("userType"),
        "now": now,
    }
    if not exists:
        # Never seen (created after our snapshot): what the event says, and a re-read for the rest
        # (the display name is in the snapshot, not in events).
        conn.execute(
            "INSERT INTO users (bridge_id, user_name, email, status, roles, user_type, needs_refresh,"
            " events_applied, updated_at) VALUES (:id, :user_name, :email, :status, :roles, :user_type, 1, 1, :now)",
            {**who, "status": after.get("status") if known else "no_access", "roles": _roles_text(after.get("roles"))},
        )
        return
    conn.execute(
        "UPDATE users SET user_name = :user_name, email = :email, user_type = :user_type,"
        " events_applied = events_applied + 1, updated_at = :now WHERE bridge_id = :id",
        who,
    )
    if known:
        conn.execute(
            "UPDATE users SET status = ?, roles = ? WHERE bridge_id = ?",
            (after["status"], _roles_text(after.get("roles")), account_id),
        )
    if known and kind == UPDATED:
        # userName, email and userType came with `account` above; the names are in the detail,
        # each as it was at the event (a later account.updated, applied after it, wins).
        detail = change.get("detail") if isinstance(change.get("detail"), dict) else {}
        for field, column in NAME_FIELDS.items():
            value = detail.get(field)
            if isinstance(value, dict) and "to" in value:
                conn.execute(f"UPDATE users SET {column} = ? WHERE bridge_id = ?", (value["to"], account_id))
    else:
        # A type this product does not know (a newer bridge's): what it changed is not guessed
        # from its body; the account is re-read from the snapshot.
        log.info("event %s of unknown type %r: re-reading account %s", event_id, kind, account_id)
        conn.execute("UPDATE users SET needs_refresh = 1 WHERE bridge_id = ?", (account_id,))


# ---- bridge's product API -------------------------------------------------------------------------


class CursorTooOld(Exception):
    """410 from the feed: bridge no longer keeps the events after our cursor."""


class BridgeError(Exception):
    """bridge answered something this product cannot use (wrong token, a 5xx, not JSON)."""


@dataclass(frozen=True)
class EventsPage:
    events: list[dict[str, Any]]
    next: str
    has_more: bool


class BridgeClient:
    """The three calls the product makes, with a read-only token (`bridge tokens create --read-only`)."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(timeout, 5.0), timeout)
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "User-Agent": "reference-product/1"})

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self.session.get(f"{self.base_url}{path}", params=params, timeout=self.timeout)
        if response.status_code == 410:
            raise CursorTooOld(response.text)
        if response.status_code != 200:
            raise BridgeError(f"GET {path}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise BridgeError(f"GET {path}: not JSON") from exc
        return body

    def events(self, after: str | None, limit: int) -> EventsPage:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        body = self._get("/api/v1/events", params)
        return EventsPage(list(body.get("events") or []), str(body["next"]), bool(body.get("hasMore")))

    def snapshot(self, limit: int) -> tuple[list[dict[str, Any]], str]:
        """Every page of `GET /api/v1/accounts`, and the feed cursor the snapshot stands at (the
        first page's `eventsCursor`: changes during the paging come again through the feed)."""
        accounts: list[dict[str, Any]] = []
        page_cursor: str | None = None
        events_cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if page_cursor:
                params["cursor"] = page_cursor
            body = self._get("/api/v1/accounts", params)
            accounts += body.get("accounts") or []
            events_cursor = events_cursor or str(body["eventsCursor"])
            page_cursor = body.get("next")
            if not page_cursor:
                return accounts, events_cursor

    def account(self, bridge_id: str) -> dict[str, Any] | None:
        """One account as the snapshot shows it; None when bridge has no such account (404)."""
        response = self.session.get(
            f"{self.base_url}/api/v1/accounts/{quote(bridge_id, safe='')}", timeout=self.timeout
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BridgeError(f"GET /api/v1/accounts/{bridge_id}: HTTP {response.status_code}: {response.text[:200]}")
        document: dict[str, Any] = response.json()
        return document

    def verify_password(self, login: str, password: str) -> dict[str, Any]:
        response = self.session.post(
            f"{self.base_url}/api/v1/verify-password",
            json={"userName": login, "password": password},
            timeout=self.timeout,
        )
        if response.status_code == 429:
            return {"valid": False, "reason": "too_many_attempts"}
        if response.status_code != 200:
            raise BridgeError(f"verify-password: HTTP {response.status_code}")
        body: dict[str, Any] = response.json()
        return body


# ---- the follower -------------------------------------------------------------------------------


class Follower:
    """A thread that catches up with the feed at start, whenever a webhook says something
    happened (`hint()`), and every `poll_seconds` in case webhooks were lost."""

    def __init__(self, store: Store, client: BridgeClient, *, poll_seconds: float, page_limit: int = 100) -> None:
        self.store = store
        self.client = client
        self.poll_seconds = poll_seconds
        self.page_limit = page_limit
        self.last_error: str | None = None
        self.caught_up_at: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def hint(self) -> None:
        """A webhook arrived: read the feed now (its body is not applied, only the feed is)."""
        self._wake.set()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            # Cleared before reading, so a hint that arrives during the read wakes the next one.
            self._wake.clear()
            try:
                self.catch_up()
            except Exception as exc:  # bridge down, a timeout, a bad answer: try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("could not follow bridge's feed (retrying in %.0fs): %s", backoff, self.last_error)
                self._wake.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            self.last_error = None
            self.caught_up_at = _now()
            self._wake.wait(self.poll_seconds)

    def catch_up(self) -> None:
        """Read the feed until bridge has nothing more; reconcile first when there is no cursor."""
        cursor = self.store.cursor()
        if cursor is None:
            cursor = self.reconcile()
        while True:
            try:
                page = self.client.events(cursor, self.page_limit)
            except CursorTooOld:
                log.warning("bridge no longer keeps the events after our cursor (410): reconciling")
                cursor = self.reconcile()
                continue
            if self.store.apply_page(cursor, page.events, page.next):
                cursor = page.next
            else:
                cursor = self.store.cursor()  # someone else moved it: continue from theirs
                continue
            if not page.has_more:
                break
        self.refresh_marked()

    def reconcile(self) -> str:
        accounts, events_cursor = self.client.snapshot(self.page_limit)
        self.store.replace_all(accounts, events_cursor)
        log.info("reconciled %d accounts from bridge's snapshot", len(accounts))
        return events_cursor

    def refresh_marked(self) -> None:
        """Re-read the marked users, one `GET /api/v1/accounts/<id>` each."""
        wanted = self.store.marked_for_refresh()
        if not wanted:
            return
        found = [self.client.account(bridge_id) for bridge_id in sorted(wanted)]
        self.store.refresh([a for a in found if a is not None], wanted)
