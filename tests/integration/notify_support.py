"""Helpers shared by the outbox, activation and crash tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import select

from bridge.cli import main
from bridge.notify.worker import OutboxWorker
from bridge.runtime import Runtime, open_runtime
from bridge.store.tables import OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.smtp import ReceivedMessage, SmtpServer

WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"
LINK = re.compile(r"(https?://[^\s<>\"]+/activate/([A-Za-z0-9_-]{43}))")


def notify_config(
    *,
    smtp: SmtpServer | None = None,
    port: int | None = None,
    starttls: bool = False,
    webhook_url: str | None = None,
    public_url: str = "http://127.0.0.1:8080",
    outbox: str = "",
    email: str = "",
) -> str:
    smtp_port = port if port is not None else (smtp.port if smtp else 1)
    text = (
        f'\n[server]\npublic_url = "{public_url}"\n'
        f'\n[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp_port}\ntimeout = 5\n'
        'from = "Bridge <no-reply@bridge.example>"\n'
    )
    if starttls and smtp is not None:
        text += f'starttls = true\nca_file = "{smtp.cafile}"\n'
    text += email
    text += f"\n[outbox]\npoll_seconds = 0.1\nretry_base_seconds = 1\nretry_max_seconds = 2\n{outbox}\n"
    if webhook_url:
        text += f'\n[webhook]\nurl = "{webhook_url}"\nsecret_env = "BRIDGE_TEST_WEBHOOK_SECRET"\ntimeout = 5\n'
    return text


def bridge(d: Deployment, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(d.config), *args], catch_exceptions=False)


@contextmanager
def runtime_of(d: Deployment) -> Iterator[Runtime]:
    runtime = open_runtime(Path(d.config))
    try:
        yield runtime
    finally:
        runtime.engine.dispose()


def run_worker(d: Deployment, *, at: datetime | None = None, worker_id: str | None = None) -> Any:
    with runtime_of(d) as runtime:
        worker = OutboxWorker(runtime, worker_id=worker_id, clock=(lambda: at) if at else None)
        return worker.run_once()


def later(minutes: float = 10) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def outbox_rows(d: Deployment, **where: Any) -> list[Any]:
    with runtime_of(d) as runtime, runtime.engine.connect() as conn:
        query = select(OutboxMessage.__table__)
        for key, value in where.items():
            query = query.where(OutboxMessage.__table__.c[key] == value)
        return list(conn.execute(query.order_by(OutboxMessage.__table__.c.id)).all())


def link_in(message: ReceivedMessage) -> tuple[str, str]:
    body = message.message.get_body(("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found, "no activation link in the mail"
    return found.group(1), found.group(2)


def mails_to(smtp: SmtpServer, address: str) -> list[ReceivedMessage]:
    return [m for m in smtp.messages if address in m.rcpt_tos]
