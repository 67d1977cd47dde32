"""The activation pages as a person sees them: Debian's Chromium (Playwright) against a real
`bridge serve` process, the links taken from the mails the outbox worker delivered to aiosmtpd.

One server per module (SQLite): every test uses the link of a different person of the example
directory, so they do not interfere. The same pages over HTTP on SQLite and PostgreSQL are
tested in test_activation_web.py; this module is about what the browser renders and submits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.web.i18n import MESSAGES
from tests.fixtures.browser import OpenPage, screenshot
from tests.integration.browser_support import Site, example_site

PASSWORD = "correct horse battery staple"
ALICE = "alice.garnier@example.org"  # preferredLanguage: fr
DAVID = "david.leroy@example.org"  # preferredLanguage: en


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    with example_site(request, "bridge-browser-") as site:
        yield site


def test_a_person_sets_the_password_in_the_browser(site: Site, open_page: OpenPage, tmp_path: Path) -> None:
    page = open_page()
    url = site.link_for(ALICE)
    assert url.startswith(site.url + "/activate/")
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
