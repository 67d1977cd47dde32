"""The outbox worker: claim due rows, deliver them, mark them.

Delivery is at least once, and at most once in practice: a row is marked sent right after the
SMTP server (or the webhook receiver) accepted it, one row at a time, so a crash can repeat at
most the one message that was in flight. Every try of a row carries the same Message-ID (mail)
or event id (webhook), so receivers can drop such a repeat, and an activation mail repeats the
same link (see bridge.notify.activation).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bridge.config import TenantConfig, read_secret
from bridge.core.address import ADDRESS_UNUSABLE, OUTSIDE_DOMAINS, address_problem, domain_problem, usable_address
from bridge.core.lifecycle import Status
from bridge.errors import BridgeError, ConfigError
from bridge.notify.activation import (
    ACTIVATION_TOPIC,
    REMINDER_TOPIC,
    LinkRequest,
    LinkState,
    derive_token,
    look_up,
    mint_links,
)
from bridge.notify.mail import (
    MailRejected,
    SmtpSender,
    SmtpUnavailable,
    build_message,
    clear_auth_warning,
    format_date,
    message_id,
    pick_language,
    render,
)
from bridge.notify.outbox import mark_failed
from bridge.notify.secret import server_secret
from bridge.notify.webhook import WebhookSender
from bridge.runtime import Runtime
from bridge.store import outbox as queue
from bridge.store.accounts import account_refs, account_statuses
from bridge.store.alerts import ALERT_TOPIC
from bridge.store.db import make_engine, transaction
from bridge.store.tenants import tenant_names
from bridge.store.webhooks import disable_endpoint, endpoint_disabled

log = logging.getLogger(__name__)

ACTOR = "outbox-worker"
# The receiver verifies HMAC-SHA256 signatures with this secret: 32 characters is 128 bits even
# for hex, the least a guessable secret should carry.
MIN_WEBHOOK_SECRET = 32


@dataclass
class DeliveryStats:
    sent: int = 0
    retried: int = 0  # failed, back in the queue for later
    dead: int = 0
    superseded: int = 0
    refused: int = 0  # status `failed`: bridge cannot make a message of the row, for good
    lost: int = 0  # our claim ran out before we could mark the row

    def __iadd__(self, other: DeliveryStats) -> DeliveryStats:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def failed(self) -> int:
        return self.retried + self.dead + self.refused


def default_worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


class OutboxWorker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        config = runtime.config
        self.runtime = runtime
        self.engine = runtime.engine
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.rng = rng or random.Random()
        settings = config.outbox
        self.batch_size = max(1, int(settings["batch_size"]))
        self.max_attempts = max(1, int(settings["max_attempts"]))
        self.poll_seconds = float(settings["poll_seconds"])
        self.retry_base = float(settings["retry_base_seconds"])
        self.retry_max = float(settings["retry_max_seconds"])
        self.email = config.email
        self.connections = max(1, int(config.email["connections"]))
        self._stats_lock = threading.Lock()
        # A claim must outlive any single delivery, or a slow send could overlap another
        # worker's try of the same row; each socket operation is bounded by these timeouts.
        self.send_bound = max(float(config.email["timeout"]), float(config.webhook["timeout"]))
        self.lease = timedelta(seconds=max(float(settings["lease_seconds"]), 2 * self.send_bound))
        self.public_url = str(config.server["public_url"]).rstrip("/")
        self.webhook_url: str | None = config.webhook.get("url")
        self.webhook_secret: bytes | None = None
        if self.webhook_url:
            secret = read_secret(config.webhook, "secret", config.origin, "webhook")
            if not secret:
                raise ConfigError(
                    config.origin, "webhook.secret_env", "webhooks are signed: set secret_env or secret_file"
                )
            if len(secret) < MIN_WEBHOOK_SECRET:
                key = "secret_env" if config.webhook.get("secret_env") else "secret_file"
                raise ConfigError(
                    config.origin,
                    f"webhook.{key}",
                    f"the secret is {len(secret)} characters; the product checks signatures with it: "
                    f"use at least {MIN_WEBHOOK_SECRET} random characters (openssl rand -hex 32)",
                )
            self.webhook_secret = secret.encode()
        if warning := clear_auth_warning(self.email):
            log.warning("%s", warning)
        self._server_secret: bytes | None = None
        self._tenant_names: dict[int, str] = {}
        self._lease_deadline = 0.0
        self._relay_reason: str | None = None
        self._relay_logged = 0.0
        self.stop_event = threading.Event()

    # -- running ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()

    def run_once(self) -> DeliveryStats:
        """Deliver everything due now, batch after batch, then return."""
        stats = DeliveryStats()
        senders: list[SmtpSender] = []
        hooks: WebhookSender | None = None
        claimed_any = False
        try:
            started = self.clock()
            while not self.stop_event.is_set():
                rows = queue.claim(
                    self.engine, self.worker_id, self.clock(), limit=self.batch_size, lease=self.lease, due_by=started
                )
                if not rows:
                    break
                claimed_any = True
                self._lease_deadline = time.monotonic() + self.lease.total_seconds()
                mails = [r for r in rows if r.channel == "email"]
                events = [r for r in rows if r.channel == "webhook"]
                for row in rows:
                    if row.channel not in ("email", "webhook"):
                        self._refuse(row, f"unknown channel {row.channel!r}", stats)
                if mails:
                    senders = senders or [
                        SmtpSender(self.email, self.runtime.config.origin) for _ in range(self.connections)
                    ]
                    self._deliver_mails(mails, senders, stats)
                if events:
                    if hooks is None and self.webhook_url and self.webhook_secret:
                        hooks = WebhookSender(
                            self.webhook_url, self.webhook_secret, float(self.runtime.config.webhook["timeout"])
                        )
                    self._deliver_events(events, hooks, stats)
        finally:
            for sender in senders:
                sender.close()
            if hooks is not None:
                hooks.close()
            if claimed_any:
                # After a stop request part of a batch may still be ours; hand it back now.
                queue.release_claims(self.engine, self.worker_id)
        if stats.sent or stats.dead or stats.refused or stats.superseded or stats.lost:
            log.info("outbox: %s", ", ".join(f"{k} {v}" for k, v in stats.as_dict().items() if v))
        elif stats.retried:
            # Retries alone: the relay's reason is logged once by _relay_down; per pass, debug.
            log.debug("outbox: retried %d", stats.retried)
        return stats

    def run_forever(self) -> None:
        """Poll until `stop()`; database or relay trouble is logged and retried, never fatal."""
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except (SQLAlchemyError, BridgeError) as exc:
                log.warning("outbox worker: %s: %s", type(exc).__name__, exc)
            except Exception:
                log.exception("outbox worker: unexpected error")
            self.stop_event.wait(self.poll_seconds)

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def server_secret(self) -> bytes:
        if self._server_secret is None:
            self._server_secret = server_secret(self.runtime.config)
        return self._server_secret

    def _held(self, row_ids: list[int]) -> set[int]:
        """The rows we may still deliver: renew the lease before it gets too short for a send."""
        if time.monotonic() + self.send_bound < self._lease_deadline:
            return set(row_ids)
        held = queue.extend_claims(self.engine, self.worker_id, row_ids, self.clock() + self.lease)
        self._lease_deadline = time.monotonic() + self.lease.total_seconds()
        return held

    def _tenant(self, tenant_id: int) -> tuple[str, TenantConfig | None]:
        if tenant_id not in self._tenant_names:
            with transaction(self.engine, write=False) as conn:
                self._tenant_names.update(tenant_names(conn))
        name = self._tenant_names.get(tenant_id, "")
        return name, self.runtime.config.tenant(name)

    def _count(self, stats: DeliveryStats, name: str) -> None:
        with self._stats_lock:  # lanes report from several threads
            setattr(stats, name, getattr(stats, name) + 1)

    def _sent(self, row: queue.Claimed, stats: DeliveryStats) -> None:
        if queue.mark_sent(self.engine, row.id, self.worker_id, self.clock()):
            self._count(stats, "sent")
        else:
            self._count(stats, "lost")
            log.warning("outbox row %d: delivered after our claim ran out; another worker may repeat it", row.id)

    def _fail(self, row: queue.Claimed, error: str, stats: DeliveryStats, *, permanent: bool = False) -> None:
        outcome = mark_failed(
            self.engine,
            row,
            self.worker_id,
            self.clock(),
            error,
            permanent=permanent,
            max_attempts=self.max_attempts,
            base=self.retry_base,
            cap=self.retry_max,
            rng=self.rng,
        )
        if outcome == "dead":
            self._count(stats, "dead")
            log.warning("outbox row %d (%s) is dead after %d tries: %s", row.id, row.topic, row.attempts + 1, error)
        elif outcome == "queued":
            self._count(stats, "retried")
        else:
            self._count(stats, "lost")

    def _refuse(self, row: queue.Claimed, reason: str, stats: DeliveryStats) -> None:
        if queue.mark_refused(self.engine, row.id, self.worker_id, reason):
            self._count(stats, "refused")
            log.warning("outbox row %d (%s) refused for good: %s", row.id, row.topic, reason)
        else:
            self._count(stats, "lost")

    def _refuse_broken(self, row: queue.Claimed, stats: DeliveryStats, exc: Exception) -> None:
        """A row whose preparation raised: whatever it is, the same data raises again on every
        pass, so it is refused for good and never holds back the rows claimed with it."""
        log.error("outbox row %d (%s): cannot prepare the message", row.id, row.topic, exc_info=exc)
        self._refuse(row, f"cannot prepare the message: {type(exc).__name__}: {exc}", stats)

    def _supersede(self, row: queue.Claimed, reason: str, stats: DeliveryStats) -> None:
        if queue.mark_superseded(self.engine, row.id, self.worker_id, reason):
            self._count(stats, "superseded")

    # -- mail ------------------------------------------------------------------------------------

    def _deliver_mails(self, rows: list[queue.Claimed], senders: list[SmtpSender], stats: DeliveryStats) -> None:
        """Send over up to len(senders) connections at once: the relay's round trips, not our
        CPU, bound one connection (MAIL, RCPT, DATA and the reply to each), so lanes overlap
        them. Each lane sends one message at a time and marks it as soon as it is accepted."""
        jobs = deque(self._prepare_mails(rows, stats))
        lock = threading.Lock()
        outage: list[str] = []

        def take() -> tuple[queue.Claimed, str, Callable[[], Any]] | None:
            with lock:
                while jobs and not outage and not self.stop_event.is_set():
                    job = jobs.popleft()
                    if job[0].id in self._held([job[0].id, *(r.id for r, _, _ in jobs)]):
                        return job
                    self._count(stats, "lost")
                return None

        def lane(smtp: SmtpSender) -> None:
            while (job := take()) is not None:
                row, to, build = job
                try:
                    smtp.send(to, build())
                except SmtpUnavailable as exc:
                    # The relay is down or refuses us: stop every lane, the rest waits too.
                    with lock:
                        outage.append(str(exc))
                    self._fail(row, str(exc), stats)
                    return
                except MailRejected as exc:
                    self._fail(row, str(exc), stats, permanent=exc.permanent)
                    continue
                except Exception as exc:  # a template or data problem must not stop the batch
                    self._refuse_broken(row, stats, exc)
                    continue
                self._sent(row, stats)

        lanes = senders[: max(1, min(len(senders), len(jobs)))]
        if len(lanes) == 1:
            lane(lanes[0])
        else:
            threads = [threading.Thread(target=lane, args=(s,), name="bridge-outbox-smtp") for s in lanes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if outage:
            for row, _, _ in jobs:
                self._fail(row, outage[0], stats)
            self._relay_down(outage[0])
        elif stats.sent:
            self._relay_up()

    # While the relay is down every pass retries the rows that came due (their backoff is
    # jittered, so a few come due at nearly every poll): say why once, and again only when the
    # reason changes or every RELAY_LOG_EVERY seconds, not "retried 3" every two seconds.
    RELAY_LOG_EVERY = 300.0

    def _relay_down(self, reason: str) -> None:
        now = time.monotonic()
        if reason != self._relay_reason or now - self._relay_logged > self.RELAY_LOG_EVERY:
            log.warning("outbox: mail relay unavailable, mail waits and is retried with backoff: %s", reason)
            self._relay_logged = now
        self._relay_reason = reason

    def _relay_up(self) -> None:
        if self._relay_reason is not None:
            log.warning("outbox: mail relay reachable again")
            self._relay_reason = None

    def _prepare_mails(
        self, rows: list[queue.Claimed], stats: DeliveryStats
    ) -> list[tuple[queue.Claimed, str, Callable[[], Any]]]:
        """Check each mail still makes sense, mint the links, and return what to send.

        Each row is prepared under its own guard: a row that cannot be made into a message is
        refused (status `failed`, with the reason) and the others go on. Without it one bad
        row failed the whole claimed batch on every pass, and everything queued behind it (other
        tenants' mail, webhooks) waited for ever."""
        now = self.clock()
        account_ids = {r.account_id for r in rows if r.account_id}
        with transaction(self.engine, write=False) as conn:
            status = account_statuses(conn, account_ids)
        jobs: list[tuple[queue.Claimed, str, Callable[[], Any]]] = []
        activations: list[tuple[queue.Claimed, str]] = []
        for row in rows:
            try:
                ready = self._check_mail(row, status, now, stats)
            except Exception as exc:
                self._refuse_broken(row, stats, exc)
                continue
            if ready is None:
                continue
            to, reminder = ready
            if reminder is None:
                activations.append((row, to))
            else:
                jobs.append((row, to, reminder))
        if activations:
            jobs.extend(self._mint(activations, now, stats))
        jobs.sort(key=lambda job: job[0].id)
        return jobs

    def _check_mail(
        self, row: queue.Claimed, status: dict[str, str], now: datetime, stats: DeliveryStats
    ) -> tuple[str, Callable[[], Any] | None] | None:
        """(address, None) for an activation to mint, (address, builder) for a reminder, or None
        when the row was marked here (refused or superseded)."""
        raw = row.payload.get("to")
        if row.topic == ALERT_TOPIC:  # to an administrator, about no account
            to = usable_address(raw if isinstance(raw, str) else None)
            if to is None:
                self._refuse(
                    row, f"{ADDRESS_UNUSABLE}: {address_problem(raw if isinstance(raw, str) else None)}", stats
                )
                return None
            return to, self._alert_builder(row, now, to)
        if row.topic not in (ACTIVATION_TOPIC, REMINDER_TOPIC):
            self._refuse(row, f"no template for mail topic {row.topic!r}", stats)
            return None
        if status.get(row.account_id or "") != Status.PENDING.value:
            # Activated, archived or gone since the mail was queued: a link would be useless.
            self._supersede(row, f"account is {status.get(row.account_id or '', 'gone')}, not pending", stats)
            return None
        to = usable_address(raw if isinstance(raw, str) else None)
        if to is None:
            problem = address_problem(raw if isinstance(raw, str) else None)
            self._refuse(row, f"{ADDRESS_UNUSABLE}: {problem}", stats)
            return None
        _, tenant_cfg = self._tenant(row.tenant_id)
        outside = domain_problem(to, tenant_cfg.email_domains) if tenant_cfg else None
        if outside is not None:
            # For good: a new address in the source queues a new activation row of its own.
            self._refuse(row, f"{OUTSIDE_DOMAINS}: {outside}", stats)
            return None
        if row.topic == ACTIVATION_TOPIC:
            return to, None
        key = str(row.payload.get("activationKey", ""))
        token = derive_token(self.server_secret, key)
        with transaction(self.engine, write=False) as conn:
            info = look_up(conn, token, now)
        if info.state is not LinkState.VALID or info.expires_at is None:
            self._supersede(row, f"the link it reminds of is {info.state.value}", stats)
            return None
        return to, self._builder(row, REMINDER_TOPIC, token, info.expires_at, now, to)

    def _mint(
        self, activations: list[tuple[queue.Claimed, str]], now: datetime, stats: DeliveryStats
    ) -> list[tuple[queue.Claimed, str, Callable[[], Any]]]:
        """The activation links, in one transaction; if that fails, row by row, so the row that
        breaks it is refused and the others still get their link."""
        requests = {row.id: self._link_request(row) for row, _ in activations}
        try:
            with transaction(self.engine) as conn:
                minted = mint_links(conn, list(requests.values()), secret=self.server_secret, now=now)
        except Exception as exc:
            minted = {}
            if len(activations) == 1:
                self._refuse_broken(activations[0][0], stats, exc)
            else:
                log.warning("minting %d activation links failed; retrying one by one", len(activations))
                for row, _ in activations:
                    try:
                        with transaction(self.engine) as conn:
                            minted.update(mint_links(conn, [requests[row.id]], secret=self.server_secret, now=now))
                    except Exception as exc:
                        self._refuse_broken(row, stats, exc)
        jobs = []
        for row, to in activations:
            link = minted.get(row.id)
            if link is not None:
                jobs.append((row, to, self._builder(row, ACTIVATION_TOPIC, link.token, link.expires_at, now, to)))
        return jobs

    def _link_request(self, row: queue.Claimed) -> LinkRequest:
        _, tenant_cfg = self._tenant(row.tenant_id)
        return LinkRequest(
            outbox_id=row.id,
            idempotency_key=row.idempotency_key,
            tenant_id=row.tenant_id,
            account_id=str(row.account_id),
            email=row.payload.get("to"),
            expires_days=tenant_cfg.activation_expires_days if tenant_cfg else 7,
        )

    def _builder(
        self, row: queue.Claimed, kind: str, token: str, expires_at: datetime, now: datetime, to: str
    ) -> Callable[[], Any]:
        def context(tenant: str, tenant_cfg: TenantConfig | None, language: str, from_header: str) -> dict[str, Any]:
            return {
                "tenant": tenant,
                "given_name": row.payload.get("givenName"),
                "user_name": row.payload.get("userName") or "",
                "link": f"{self.public_url}/activate/{token}",
                "new_link_url": f"{self.public_url}/activate/new-link?lang={language}",
                "expires": format_date(expires_at, language),
                "mode": tenant_cfg.activation if tenant_cfg else "password",
                "contact": (tenant_cfg.support_contact if tenant_cfg else None) or from_header,
            }

        return self._message_builder(row, kind, now, to, context)

    def _alert_builder(self, row: queue.Claimed, now: datetime, to: str) -> Callable[[], Any]:
        def context(tenant: str, _cfg: TenantConfig | None, _language: str, _from: str) -> dict[str, Any]:
            return {
                "tenant": tenant,
                "kind": row.payload.get("kind") or "",
                "summary": row.payload.get("summary") or "",
                "link": row.payload.get("link") or "",
            }

        return self._message_builder(row, ALERT_TOPIC, now, to, context)

    def _message_builder(
        self,
        row: queue.Claimed,
        kind: str,
        now: datetime,
        to: str,
        context: Callable[[str, TenantConfig | None, str, str], dict[str, Any]],
    ) -> Callable[[], Any]:
        """The message of `row` rendered from the `kind` templates, built when it is sent: in the
        row's language, else the tenant's, with the row's idempotency key as its Message-ID."""

        def build() -> Any:
            tenant, tenant_cfg = self._tenant(row.tenant_id)
            language = pick_language(row.payload.get("language"), tenant_cfg.default_language if tenant_cfg else None)
            from_header = str(self.email["from"])
            rendered = render(kind, language, context(tenant, tenant_cfg, language, from_header))
            return build_message(
                rendered,
                to=to,
                from_header=from_header,
                msg_id=message_id(row.idempotency_key, from_header),
                now=now,
                language=language,
            )

        return build

    # -- webhooks --------------------------------------------------------------------------------

    def _deliver_events(self, rows: list[queue.Claimed], hooks: WebhookSender | None, stats: DeliveryStats) -> None:
        if hooks is None or not self.webhook_url:
            for row in rows:
                self._fail(row, "no [webhook] url configured", stats)
            return
        with transaction(self.engine, write=False) as conn:
            disabled = endpoint_disabled(conn, self.webhook_url)
            identity = account_refs(conn, (r.account_id for r in rows))
        for i, row in enumerate(rows):
            if disabled:
                self._fail(row, f"webhook endpoint disabled: {disabled}", stats, permanent=True)
                continue
            if self.stop_event.is_set():
                return
            if row.id not in self._held([r.id for r in rows[i:]]):
                self._count(stats, "lost")
                continue
            try:
                payload = dict(row.payload)
                if row.account_id:  # an event about the tenant (plan.held) has no account
                    payload["account"] = {**(payload.get("account") or {}), **identity.get(row.account_id, {})}
                outcome = hooks.post(payload, int(time.time()))
            except Exception as exc:  # a payload that cannot be sent must not stop the others
                self._refuse_broken(row, stats, exc)
                continue
            if outcome.ok:
                self._sent(row, stats)
            elif outcome.gone:
                disabled = outcome.error or "410 Gone"
                with transaction(self.engine) as conn:
                    disable_endpoint(
                        conn, self.webhook_url, disabled, self.clock(), tenant_id=row.tenant_id, actor=ACTOR
                    )
                log.warning(
                    "webhook endpoint disabled by the receiver (410); `bridge outbox enable-webhook` re-enables it"
                )
                self._fail(row, disabled, stats, permanent=True)
            else:
                self._fail(row, outcome.error or "failed", stats)


# ---- inside `bridge serve` -------------------------------------------------------------------


def start_service(runtime: Runtime, scheduler: bool) -> Callable[[], None] | None:
    """The worker as a thread of `bridge serve` (not with --no-scheduler: jobs run elsewhere)."""
    if not scheduler:
        return None
    engine = make_engine(runtime.config.database_url, origin=runtime.config.origin, create=False)
    worker = OutboxWorker(Runtime(config=runtime.config, engine=engine))
    thread = threading.Thread(target=worker.run_forever, name="bridge-outbox", daemon=True)
    thread.start()
    _stop_on_sigterm()

    def stop() -> None:
        worker.stop()
        # Bounded by one delivery in flight; the daemon thread cannot hold the process longer.
        thread.join(timeout=worker.send_bound + 5)
        engine.dispose()

    return stop


def _stop_on_sigterm() -> None:
    """systemd and container runtimes stop services with SIGTERM. Turned into KeyboardInterrupt,
    which waitress treats as a shutdown, so `serve` returns and stops its services cleanly.
    Only when nobody else handles SIGTERM already."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
