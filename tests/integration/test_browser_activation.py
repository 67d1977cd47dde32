"""The activation pages as a person sees them: Debian's Chromium (Playwright) against a real
`bridge serve` process, the links taken from the mails the outbox worker delivered to aiosmtpd.

One server per module (SQLite): every test uses the link of a different person of the example
directory, so they do not interfere. The same pages over HTTP on SQLite and PostgreSQL are
tested in test_activation_web.py; this module is about what the browser renders and submits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.web.i18n import MESSAGES
from tests.conftest import Deployment
from tests.fixtures.browser import OpenPage, screenshot
from tests.fixtures.scim import ScimServer, bridge_cli, new_server
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import link_in, mails_to, notify_config, run_worker

PASSWORD = "correct horse battery staple"
ALICE = "alice.garnier@example.org"  # preferredLanguage: fr
DAVID = "david.leroy@example.org"  # preferredLanguage: en


@dataclass
class Site:
    server: ScimServer
    deployment: Deployment
    smtp: SmtpServer

    def link_for(self, address: str) -> str:
        mails = mails_to(self.smtp, address)
        assert mails, f"no activation mail to {address}"
        return link_in(mails[-1])[0]

    def status(self, user_name: str) -> str:
        import json

        return str(json.loads(bridge_cli(self.deployment.config, "users", "show", user_name, "--json"))["status"])


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    smtp = SmtpServer().start()
    try:
        with new_server(request, "sqlite", "bridge-browser-") as server:
            deployment = Deployment(server.root, server.db_url)
            deployment.write_config(seat_limit=None, extra=notify_config(smtp=smtp, public_url=server.url))
            bridge_cli(server.config, "db", "upgrade")
            bridge_cli(server.config, "sync")
            run_worker(deployment)
            server.start()
            yield Site(server, deployment, smtp)
    finally:
        smtp.stop()


def test_a_person_sets_the_password_in_the_browser(site: Site, open_page: OpenPage, tmp_path: Path) -> None:
    page = open_page()
    url = site.link_for(ALICE)
    assert url.startswith(site.server.url + "/activate/")
    response = page.goto(url)
    assert response is not None and response.status == 200
    fr = MESSAGES["fr"]
    assert page.locator("html").get_attribute("lang") == "fr"  # Alice's preferredLanguage
    # The labels name the fields (a screen reader reads them), and the fields are what the form posts.
    page.get_by_label(fr["password"], exact=True).fill(PASSWORD)
    page.get_by_label(fr["password_confirm"], exact=True).fill(PASSWORD)
    screenshot(page, tmp_path, "activation-form")
    page.get_by_role("button", name=fr["activate_button"]).click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == fr["done_title"]
    screenshot(page, tmp_path, "activation-done")
    assert site.status("agarnier") == "active"
    # The page loaded nothing from outside and ran no script: the CSP allows neither.
    assert page.evaluate("document.scripts.length") == 0


def test_a_short_password_shows_the_error_and_keeps_the_account_pending(
    site: Site, open_page: OpenPage, tmp_path: Path
) -> None:
    page = open_page()
    page.goto(site.link_for(DAVID))
    en = MESSAGES["en"]
    assert page.locator("html").get_attribute("lang") == "en"
    page.get_by_label(en["password"], exact=True).fill("short")
    page.get_by_label(en["password_confirm"], exact=True).fill("short")
    page.get_by_role("button", name=en["activate_button"]).click()
    page.wait_for_load_state()
    alert = page.get_by_role("alert")
    assert en["too_short"] in alert.inner_text()
    # The form is shown again, marked invalid, for a second try.
    assert page.locator("#password").get_attribute("aria-invalid") == "true"
    screenshot(page, tmp_path, "activation-too-short")
    assert site.status("dleroy") == "pending"
