"""`bridge outbox ...`: run the worker, inspect and retry undelivered messages."""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from typing import Any

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table


@click.group()
def outbox() -> None:
    """Queued mails and webhooks: deliver, inspect, retry."""


@outbox.command("run")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit (for cron).")
@pass_state
def outbox_run(state: State, once: bool) -> None:
    """Deliver queued mails and webhooks (until SIGTERM/Ctrl-C, or once)."""
    from bridge.notify.worker import OutboxWorker

    worker = OutboxWorker(state.runtime)
    if once:
        stats = worker.run_once()
        click.echo(", ".join(f"{k} {v}" for k, v in stats.as_dict().items()))
        if stats.failed:
            sys.exit(1)
        return

    def stop(_signum: int, _frame: Any) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"outbox worker {worker.worker_id} running; SIGTERM or Ctrl-C stops it", err=True)
    worker.run_forever()


@outbox.command("list")
@click.option(
    "--dead",
    "dead_only",
    is_flag=True,
    help="Only those that will not go out by themselves: dead (gave up) and failed (refused).",
)
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def outbox_list(state: State, dead_only: bool, limit: int, as_json: bool) -> None:
    """Undelivered messages: queued (with their last error), dead and failed (with the reason)."""
    from bridge.store.db import transaction
    from bridge.store.outbox import list_messages

    with transaction(state.runtime.engine, write=False) as conn:
        data = list_messages(conn, dead_only=dead_only, limit=limit)
    if as_json:
        print_json(data)
        return
    table(
        ["ID", "TENANT", "CHANNEL", "TOPIC", "STATUS", "TRIES", "TO", "NEXT TRY", "LAST ERROR"],
        [
            [
                d["id"],
                d["tenant"],
                d["channel"],
                d["topic"],
                d["status"],
                d["attempts"],
                d["to"] or "",
                d["nextAttemptAt"] or "",
                (d["lastError"] or "")[:80],
            ]
            for d in data
        ],
    )


@outbox.command("retry")
@click.argument("message_id", type=int)
@pass_state
def outbox_retry(state: State, message_id: int) -> None:
    """Queue a dead or failed message again, due now, with a fresh attempt count."""
    from bridge.provision.manual import retry_outbox_message

    done = retry_outbox_message(state.runtime, message_id, actor=cli_actor(), now=datetime.now(UTC))
    click.echo(f"outbox message {message_id}: {done.before} -> queued")


@outbox.command("enable-webhook")
@pass_state
def outbox_enable_webhook(state: State) -> None:
    """Re-enable the configured webhook URL after the receiver answered 410 Gone."""
    from bridge.errors import ConfigError
    from bridge.store.db import transaction
    from bridge.store.webhooks import enable_endpoint

    url = state.runtime.config.webhook.get("url")
    if not url:
        raise ConfigError(state.runtime.config.origin, "webhook.url", "no webhook configured")
    with transaction(state.runtime.engine) as conn:
        changed = enable_endpoint(conn, url, datetime.now(UTC))
    click.echo("webhook endpoint enabled" if changed else "webhook endpoint was not disabled")
