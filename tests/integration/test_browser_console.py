"""The console at /admin/ as an administrator uses it: Debian's Chromium (Playwright) against a
real `bridge serve` process on the example deployment, the mails delivered to aiosmtpd.

One server per module (SQLite; the same screens over HTTP on SQLite and PostgreSQL are in
test_console.py): each test signs in in its own browser context, and the tests touch different
people of the example directory. Screenshots of every screen go to the test's tmp_path, for a
person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from bridge.web.i18n import CONSOLE
from tests.fixtures.browser import OpenPage, screenshot
from tests.integration.browser_support import Site, example_site

PASSWORD = "lantern orchard velvet quarry"
OPS = "ops@bridge.example"
IT = "it@example.org"
ALICE = "alice.garnier@example.org"
OTHER_TENANT = '\n[[tenants]]\nname = "other"\n'


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    with example_site(request, "bridge-browser-console-", extra=OTHER_TENANT) as site:
        yield site


# ---- signing in ------------------------------------------------------------------------------


def invite(site: Site, email: str, *args: str) -> str:
    """`bridge admins invite`: the setup link is the last line it prints."""
    link = site.cli("admins", "invite", email, *args).strip().splitlines()[-1]
    assert link.startswith(f"{site.url}/admin/setup/"), link
    return link


def set_up(page: Page, link: str, password: str = PASSWORD) -> None:
    page.goto(link)
    page.fill("input[name=password]", password)
    page.fill("input[name=password_confirm]", password)
    page.locator("form button[type=submit]").click()


def sign_in(page: Page, site: Site, email: str, lang: str = "en") -> None:
    page.goto(f"{site.url}/admin/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name=CONSOLE[lang]["sign_in"]).click()
    expect(page.get_by_role("button", name=CONSOLE[lang]["sign_out"])).to_be_visible()


def signed_in(
    site: Site, open_page: OpenPage, email: str, *args: str, locale: str = "en-US", **context: object
) -> Page:
    """A fresh browser context (`context`: Playwright's options) signed in as `email`, invited
    (with `args`) on first use."""
    if email not in site.admins:
        setup = open_page()
        set_up(setup, invite(site, email, *args))
        expect(setup.get_by_role("button", name="Sign out")).to_be_visible()
        setup.context.close()
        site.admins.add(email)
    page = open_page(locale=locale, **context)
    sign_in(page, site, email, locale[:2])
    return page


def field(page: Page, label: str) -> str:
    """The value next to a label in the account page's table."""
    return page.locator("tr", has=page.locator("th", has_text=label)).locator("td").first.inner_text().strip()


# Pictures (the inline SVG charts) wider than the box they are drawn in: clipped or spilling out.
OVERFLOWING = """() => [...document.querySelectorAll("main svg")].filter(svg => {
  const box = (svg.closest("section, .card") || document.querySelector("main")).getBoundingClientRect();
  const r = svg.getBoundingClientRect();
  return r.width > 0 && (r.right > box.right + 1 || r.right > window.innerWidth + 1);
}).map(svg => (svg.querySelector("title") || {}).textContent || svg.outerHTML.slice(0, 80))"""


def overflowing(page: Page) -> list[str]:
    return list(page.evaluate(OVERFLOWING))


# ---- the tests -----------------------------------------------------------------------------------


def test_an_operator_is_invited_signs_in_finds_a_person_and_acts_on_the_account(
    site: Site, open_page: OpenPage, tmp_path: Path
) -> None:
    page = open_page()
    page.goto(invite(site, OPS))
    screenshot(page, tmp_path, "01-setup")
    set_up(page, page.url)
    # The setup signs the operator in; signing out and in again is the daily way.
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    site.admins.add(OPS)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("input[name=email]")).to_be_visible()
    screenshot(page, tmp_path, "02-login")
    sign_in(page, site, OPS)

    # Tenant list: both configured tenants, the example one with its synced accounts.
    assert page.url == f"{site.url}/admin/"
    expect(page.get_by_role("link", name="other", exact=True)).to_be_visible()
    screenshot(page, tmp_path, "03-tenants")
    page.get_by_role("link", name="example", exact=True).first.click()
    expect(page).to_have_url(f"{site.url}/admin/t/example/")
    screenshot(page, tmp_path, "04-overview")
    assert overflowing(page) == []

    # Accounts: the search finds Alice by her family name.
    page.get_by_role("navigation").get_by_role("link", name=CONSOLE["en"]["nav_accounts"]).click()
    expect(page).to_have_url(f"{site.url}/admin/t/example/accounts")
    screenshot(page, tmp_path, "05-accounts")
    page.get_by_role("searchbox").fill("Garnier")
    page.get_by_role("button", name=CONSOLE["en"]["filter"]).click()
    expect(page).to_have_url(re.compile(r"/accounts\?q=Garnier(&|$)"))
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(1)
    screenshot(page, tmp_path, "06-accounts-search")
    rows.get_by_role("link", name="agarnier").click()
    expect(page.locator("h1")).to_have_text("agarnier")
    assert field(page, CONSOLE["en"]["email"]) == ALICE
    assert field(page, CONSOLE["en"]["status"]) == CONSOLE["en"]["status_pending"]
    screenshot(page, tmp_path, "07-account")

    # Resend activation: a new mail (with a new link) reaches the SMTP server.
    before, old_link = site.mails_to(ALICE), site.link_for(ALICE)
    page.get_by_role("button", name="Resend activation").click()
    expect(page.get_by_role("status")).to_have_text(CONSOLE["en"]["done_resend"])
    site.deliver()
    site.smtp.wait_for(len(site.smtp.messages))
    assert site.mails_to(ALICE) == before + 1
    assert site.link_for(ALICE) != old_link

    # Archive, then reactivate: the status follows, on the page and in the store.
    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_role("status")).to_have_text(CONSOLE["en"]["done_archive"])
    assert field(page, CONSOLE["en"]["status"]) == CONSOLE["en"]["status_archived"]
    assert site.status("agarnier") == "archived"
    screenshot(page, tmp_path, "08-account-archived")
    page.get_by_role("button", name="Reactivate").click()
    expect(page.get_by_role("status")).to_have_text(CONSOLE["en"]["done_reactivate"])
    assert field(page, CONSOLE["en"]["status"]) != CONSOLE["en"]["status_archived"]
    assert site.status("agarnier") != "archived"
    expect(page.get_by_role("button", name="Archive")).to_be_visible()
    screenshot(page, tmp_path, "09-account-reactivated")

    # Every other screen opens from the navigation, and the audit log names the operator.
    nav = page.get_by_role("navigation")
    for key, name in (("nav_runs", "10-runs"), ("nav_outbox", "11-mail"), ("nav_audit", "12-audit")):
        nav.get_by_role("link", name=CONSOLE["en"][key]).click()
        expect(nav.locator("[aria-current=page]")).to_have_text(CONSOLE["en"][key])
        screenshot(page, tmp_path, name)
        assert overflowing(page) == [], name
    expect(page.locator("main").get_by_text(f"admin:{OPS}").first).to_be_visible()
    runs = f"{site.url}/admin/t/example/runs"
    page.goto(runs)
    run_links = page.locator("main table a[href*='/runs/']")
    if run_links.count():  # one run's plan, when the runs screen links to it
        run_links.first.click()
        expect(page).to_have_url(re.compile(r"/admin/t/example/runs/\d+$"))
        screenshot(page, tmp_path, "13-run")


def test_an_operator_creates_a_scim_token_shown_once_and_revokes_it(
    site: Site, open_page: OpenPage, tmp_path: Path
) -> None:
    page = signed_in(site, open_page, OPS)
    page.goto(f"{site.url}/admin/t/example/tokens")
    page.fill("input[name=label]", "browser test")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token")
    expect(secret).to_be_visible()
    token = secret.inner_text().strip()
    assert len(token) >= 32
    screenshot(page, tmp_path, "14-token-created")
    scim = page.request.get(f"{site.url}/scim/v2/Users?count=1", headers={"Authorization": f"Bearer {token}"})
    assert scim.status == 200
    # Shown once: the list never shows it again.
    page.goto(f"{site.url}/admin/t/example/tokens")
    assert token not in page.content()
    row = page.locator("main table tbody tr", has_text="browser test")
    row.get_by_role("button", name="Revoke").click()
    expect(
        page.locator("main table tbody tr", has_text="browser test").get_by_role("button", name="Revoke")
    ).to_have_count(0)
    screenshot(page, tmp_path, "15-tokens")
    scim = page.request.get(f"{site.url}/scim/v2/Users?count=1", headers={"Authorization": f"Bearer {token}"})
    assert scim.status == 401


def test_a_tenant_administrator_gets_404_for_another_tenants_pages(
    site: Site, open_page: OpenPage, tmp_path: Path
) -> None:
    page = signed_in(site, open_page, IT, "--tenant", "example")
    # Their home is their tenant; the operators' tenant list is not theirs.
    page.goto(f"{site.url}/admin/")
    expect(page).to_have_url(f"{site.url}/admin/t/example/")
    expect(page.get_by_role("navigation").get_by_role("link", name="other")).to_have_count(0)
    for path in ("/", "/accounts", "/runs", "/outbox", "/audit", "/tokens"):
        response = page.goto(f"{site.url}/admin/t/other{path}")
        assert response is not None and response.status == 404, path
    screenshot(page, tmp_path, "16-other-tenant-404")
    # The same answer as a tenant that does not exist: nothing tells them "other" is there.
    missing = page.goto(f"{site.url}/admin/t/nowhere/")
    assert missing is not None and missing.status == 404


def test_a_post_without_the_csrf_field_is_refused(site: Site, open_page: OpenPage, tmp_path: Path) -> None:
    page = signed_in(site, open_page, OPS)
    page.goto(f"{site.url}/admin/t/example/accounts?q=Martin")
    page.locator("main table tbody").get_by_role("link", name="bmartin").click()
    expect(page.locator("h1")).to_have_text("bmartin")
    account_url = page.url
    # The browser's own form, with its hidden csrf input taken out.
    form = page.locator("form", has=page.get_by_role("button", name="Archive"))
    form.locator("input[name=csrf]").evaluate("input => input.remove()")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        form.get_by_role("button", name="Archive").click()
    assert posted.value.status == 403
    expect(page.locator("h1")).to_have_text(CONSOLE["en"]["csrf_title"])
    screenshot(page, tmp_path, "17-csrf-refused")
    # A request from the signed-in context (the session cookie goes along) without the field.
    bare = page.request.post(f"{account_url}/archive", form={}, max_redirects=0)
    wrong = page.request.post(f"{account_url}/archive", form={"csrf": "0" * 64}, max_redirects=0)
    assert bare.status == wrong.status == 403
    assert site.status("bmartin") != "archived"


def test_the_console_speaks_french(site: Site, open_page: OpenPage, tmp_path: Path) -> None:
    fr = CONSOLE["fr"]
    page = signed_in(site, open_page, OPS, locale="fr-FR")  # Accept-Language: fr-FR
    assert page.locator("html").get_attribute("lang") == "fr"
    expect(page.locator("h1")).to_have_text(fr["tenants_title"])
    screenshot(page, tmp_path, "18-tenants-fr")
    page.goto(f"{site.url}/admin/t/example/accounts")
    expect(page.locator("h1")).to_have_text(fr["accounts_title"])
    expect(page.get_by_role("navigation").get_by_role("link", name=fr["nav_accounts"])).to_be_visible()
    expect(page.get_by_role("button", name=fr["filter"])).to_be_visible()
    screenshot(page, tmp_path, "19-accounts-fr")
    # The switch changes the language, and the choice sticks to the next page.
    page.get_by_role("link", name=fr["language"]).click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.goto(f"{site.url}/admin/t/example/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    # And an English browser asking for French with the switch gets French.
    english = signed_in(site, open_page, OPS)
    english.goto(f"{site.url}/admin/t/example/?lang=fr")
    expect(english.locator("html")).to_have_attribute("lang", "fr")
    expect(english.get_by_role("navigation").get_by_role("link", name=fr["nav_accounts"])).to_be_visible()
    screenshot(english, tmp_path, "20-overview-fr")


PHONE = {"width": 390, "height": 844}  # a current phone's CSS viewport


def test_the_screens_fit_a_phone_without_scrolling_sideways(site: Site, open_page: OpenPage, tmp_path: Path) -> None:
    page = signed_in(site, open_page, OPS, viewport=PHONE, is_mobile=True, has_touch=True)
    wider = []
    for path in (
        "/",
        "/t/example/",
        "/t/example/accounts",
        "/t/example/runs",
        "/t/example/audit",
        "/t/example/tokens",
        "/t/example/connect",
        "/t/example/requests",
        "/t/example/preview",
        "/t/example/access?role=front_desk",
    ):
        page.goto(f"{site.url}/admin{path}")
        expect(page.locator("h1")).to_be_visible()
        screenshot(page, tmp_path, "phone" + path.replace("/", "-").rstrip("-"))
        # Wide tables may scroll inside their card; the page itself must fit the screen.
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            wider.append(f"{path}: {width}px")
        wider += [f"{path}: chart {title!r} wider than its box" for title in overflowing(page)]
    assert not wider, f"wider than a {PHONE['width']}px phone: {wider}"


def _rows(site: Site) -> dict[str, int]:
    """How many rows the tables a plan writes hold, read straight from the database."""
    from sqlalchemy import create_engine, func, select

    from bridge.store.tables import Account, AuditEvent, OutboxMessage, RoleGrant

    engine = create_engine(site.server.db_url)
    try:
        with engine.connect() as conn:
            return {
                t.__tablename__: conn.execute(select(func.count()).select_from(t.__table__)).scalar_one()
                for t in (Account, RoleGrant, AuditEvent, OutboxMessage)
            }
    finally:
        engine.dispose()


def test_a_tenant_administrator_previews_a_mapping_change_and_nothing_is_applied(
    site: Site, open_page: OpenPage, tmp_path: Path
) -> None:
    page = signed_in(site, open_page, IT, "--tenant", "example")
    page.get_by_role("navigation").get_by_role("link", name=CONSOLE["en"]["nav_preview"]).click()
    box = page.get_by_label(CONSOLE["en"]["preview_mapping"])
    current = box.input_value()
    assert current == site.deployment.mapping.read_text()  # prefilled with the tenant's file
    edited = current.replace(
        'group_pattern = "^pos-"\nroles = ["point_of_sale"]', 'group_pattern = "^pos-"\nroles = ["front_desk"]'
    )
    assert edited != current
    before = _rows(site)
    box.fill(edited)
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#gains tr", has_text="achevalier")).to_contain_text("front_desk")
    expect(page.locator("#losses tr", has_text="achevalier")).to_contain_text("point_of_sale")
    expect(page.get_by_role("status")).to_contain_text(CONSOLE["en"]["preview_nothing_applied"])
    screenshot(page, tmp_path, "30-preview")
    assert _rows(site) == before
    shown = site.cli("users", "show", "achevalier", "--tenant", "example", "--json")
    assert '"point_of_sale"' in shown and '"front_desk"' not in shown


# ---- what the identity provider did (issue 16) ------------------------------------------------

ENTRA_AGENT = "Azure Active Directory SCIM Client"  # what the test's client sends as Entra's
EVE = "eve.entra@example.org"


def _replay_entra(site: Site, token: str) -> tuple[str, str]:
    """Entra ID's provisioning of one person (shared/reference/scim-clients.md 2.1, the documented
    bodies): look up, create, update, create a group, add the person to it. (user id, group id)"""
    import requests

    scim = requests.Session()
    scim.headers.update(
        {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json", "User-Agent": ENTRA_AGENT}
    )
    base = f"{site.url}/scim/v2"
    patch_op = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    found = scim.get(f"{base}/Users", params={"filter": f'userName eq "{EVE}"'}, timeout=10)
    assert found.status_code == 200 and found.json()["totalResults"] == 0, found.text
    created = scim.post(
        f"{base}/Users",
        json={
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            ],
            "externalId": "5f1c9a4e-8e0b-4a55-9d1e-3f1f6f0b7a21",
            "userName": EVE,
            "active": True,
            "emails": [{"primary": True, "type": "work", "value": EVE}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Eve Entra", "familyName": "Entra", "givenName": "Eve"},
            "roles": [],
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    uid = created.json()["id"]
    updated = scim.patch(
        f"{base}/Users/{uid}",
        json={
            "schemas": [patch_op],
            "Operations": [
                {"op": "Replace", "path": "displayName", "value": "Eve Entra (Front desk)"},
                {"op": "Replace", "path": "active", "value": "True"},
            ],
        },
        timeout=10,
    )
    assert updated.status_code in (200, 204), updated.text
    group = scim.post(
        f"{base}/Groups",
        json={
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:Group",
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
            ],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "front-desk",
            "meta": {"resourceType": "Group"},
        },
        timeout=10,
    )
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    added = scim.patch(
        f"{base}/Groups/{gid}",
        json={
            "schemas": [patch_op],
            "Operations": [{"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}],
        },
        timeout=10,
    )
    assert added.status_code in (200, 204), added.text
    return uid, gid


def test_an_it_administrator_connects_entra_and_finds_each_request_and_its_accounts(
    site: Site, open_page: OpenPage, tmp_path: Path
) -> None:
    # From the setup link to a signed-in session of their own.
    admin = "it-entra@example.org"
    page = open_page()
    set_up(page, invite(site, admin, "--tenant", "example"))
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, site, admin)
    site.admins.add(admin)

    # A token from the Connect page.
    page.get_by_role("navigation").get_by_role("link", name=CONSOLE["en"]["nav_connect"]).click()
    page.get_by_role("link", name="Create token").click()
    page.fill("input[name=label]", "Entra ID")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text().strip()
    page.goto(f"{site.url}/admin/t/example/connect")
    status = page.locator("#connection-status tr", has_text="Entra ID")
    expect(status).to_contain_text(CONSOLE["en"]["no_request_yet"])

    uid, gid = _replay_entra(site, token)

    # The Connect page shows the client at work.
    for _ in range(100):  # the log is written just after each answer: reload until it is there
        page.reload()
        if page.locator("#connection-status tr", has_text="Entra ID").locator("td.requests").inner_text() == "5":
            break
        page.wait_for_timeout(100)
    expect(status).to_contain_text(ENTRA_AGENT)
    expect(status.locator("td.requests")).to_have_text("5")
    expect(status.locator("td.errors-24h")).to_have_text("0")
    screenshot(page, tmp_path, "40-connection-status")

    # Every request of the token in the log, newest first.
    status.locator("td.requests a").click()
    expect(page.locator("select#token option[selected]")).to_have_text("Entra ID")
    rows = page.locator("#requests tbody tr")
    expect(rows).to_have_count(5)
    shapes = [
        ("PATCH", f"/scim/v2/Groups/{gid}"),
        ("POST", "/scim/v2/Groups"),
        ("PATCH", f"/scim/v2/Users/{uid}"),
        ("POST", "/scim/v2/Users"),
        ("GET", "/scim/v2/Users?filter=userName"),
    ]
    for i, (method, path) in enumerate(shapes):
        expect(rows.nth(i).locator("td").nth(1)).to_have_text(method)
        expect(rows.nth(i).locator("td.path")).to_contain_text(path)
    screenshot(page, tmp_path, "41-request-log")

    # The creation: its body and the account it made.
    rows.nth(3).locator("td.path a").click()
    expect(page.locator("#request-status")).to_have_text("201")
    expect(page.locator("#request-body")).to_contain_text(EVE)
    expect(page.locator("#changes")).to_contain_text(EVE)
    screenshot(page, tmp_path, "42-request-create")

    # The membership: the role it granted, and the account page from there.
    page.go_back()
    rows.nth(0).locator("td.path a").click()
    expect(page.locator("#request-body")).to_contain_text(uid)
    changes = page.locator("#changes tbody tr")
    expect(changes.first).to_contain_text(EVE)
    screenshot(page, tmp_path, "43-request-membership")
    changes.first.get_by_role("link", name=EVE).click()
    expect(page).to_have_url(re.compile(rf"/admin/t/example/accounts/{uid}$"))
    expect(page.locator("main")).to_contain_text("front_desk")
    screenshot(page, tmp_path, "44-account-from-request")
