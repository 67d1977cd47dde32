"""What the browser tests share: a real `bridge serve` process on the example deployment (the
example directory synced, its activation mails delivered to aiosmtpd), one per test module."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import Deployment
from tests.fixtures.scim import ScimServer, bridge_cli, new_server
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import link_in, mails_to, notify_config, run_worker


@dataclass
class Site:
    server: ScimServer
    deployment: Deployment
    smtp: SmtpServer
    #: console administrators already invited and set up (their password is the test's)
    admins: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args: str) -> str:
        return bridge_cli(self.deployment.config, *args)

    def deliver(self) -> None:
        """One pass of the outbox worker, as `bridge serve`'s scheduler would run it."""
        run_worker(self.deployment)

    def mails_to(self, address: str) -> int:
        return len(mails_to(self.smtp, address))

    def link_for(self, address: str) -> str:
        mails = mails_to(self.smtp, address)
        assert mails, f"no activation mail to {address}"
        return link_in(mails[-1])[0]

    def status(self, user_name: str, tenant: str = "example") -> str:
        return str(json.loads(self.cli("users", "show", user_name, "--tenant", tenant, "--json"))["status"])


@contextlib.contextmanager
def example_site(request: pytest.FixtureRequest, prefix: str, extra: str = "") -> Iterator[Site]:
    """`bridge serve --no-scheduler` on SQLite with the example tenant synced and its first
    activation mails delivered; `extra` is appended to the config (more tenants, settings)."""
    smtp = SmtpServer().start()
    try:
        with new_server(request, "sqlite", prefix) as server:
            deployment = Deployment(server.root, server.db_url)
            deployment.write_config(seat_limit=None, extra=notify_config(smtp=smtp, public_url=server.url) + extra)
            bridge_cli(server.config, "db", "upgrade")
            bridge_cli(server.config, "sync")
            run_worker(deployment)
            server.start()
            yield Site(server, deployment, smtp)
    finally:
        smtp.stop()
