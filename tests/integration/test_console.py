"""The console over HTTP against the real app (waitress on a free loopback port), with the mails
delivered to aiosmtpd, on SQLite and PostgreSQL: invitations, sign-in, the second factor,
sessions, CSRF, the tenant scope, the screens and the buttons (issue 15)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import requests
from sqlalchemy import select, update

from bridge.store.tables import AdminSession, AuditEvent, OutboxMessage
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge, mails_to
from tests.integration.test_activation_web import Site, serve

PASSWORD = "lantern orchard velvet quarry"
OPS = "ops@bridge.example"
IT = "it@example.org"
OTHER_TENANT = '\n[[tenants]]\nname = "other"\n'


@pytest.fixture
def site(deployment: Deployment, smtp_server: SmtpServer) -> Iterator[Site]:
    yield from serve(deployment, smtp_server, extra=OTHER_TENANT)


def invite(site: Site, email: str, *args: str) -> str:
    result = bridge(site.deployment, "admins", "invite", email, *args)
    assert result.exit_code == 0, result.output
    link = result.output.strip().splitlines()[-1]
    assert link.startswith(f"{site.base}/admin/setup/"), result.output
    return link


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


def set_up(site: Site, email: str, *args: str) -> requests.Session:
    """Invite, open the link, choose the password: signed in."""
    session = requests.Session()
    link = invite(site, email, *args)
    form = session.get(link, timeout=10)
    assert form.status_code == 200 and 'name="password_confirm"' in form.text
    done = session.post(
        link, data={"csrf": csrf_of(form.text), "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10
    )
    assert done.status_code == 200, done.text
    return session


def sign_in(site: Site, email: str, password: str = PASSWORD) -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    form = session.get(f"{site.base}/admin/login", timeout=10)
    response = session.post(
        f"{site.base}/admin/login",
        data={"csrf": csrf_of(form.text), "email": email, "password": password, "next": "/admin/"},
        timeout=10,
    )
    return session, response


def post(session: requests.Session, site: Site, page: str, action: str, **data: str) -> requests.Response:
    """Press a button: the CSRF value comes from the page the button is on, as in a browser."""
    html = session.get(f"{site.base}{page}", timeout=10).text
    return session.post(f"{site.base}{action}", data={"csrf": csrf_of(html), **data}, timeout=10)


def account_of(site: Site, user: str) -> dict[str, object]:
    return dict(json.loads(bridge(site.deployment, "users", "show", user, "--tenant", "example", "--json").output))


def account_id(site: Site, user: str) -> str:
    return str(account_of(site, user)["id"])


def test_an_operator_is_invited_sets_a_password_and_signs_in(site: Site) -> None:
    session = set_up(site, OPS)
    home = session.get(f"{site.base}/admin/", timeout=10)
    assert home.status_code == 200 and "Tenants" in home.text
    assert 'href="/admin/t/example/"' in home.text and 'href="/admin/t/other/"' in home.text
    csp = home.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert home.headers["Cache-Control"] == "no-store"
    cookie = next(c for c in session.cookies if c.name == "bridge_admin")
    assert cookie.path == "/admin" and cookie.has_nonstandard_attr("HttpOnly")

    listed = json.loads(bridge(site.deployment, "admins", "list", "--json").output)
    assert [(a["email"], a["role"], a["status"]) for a in listed] == [(OPS, "operator", "active")]

    signed_out = post(session, site, "/admin/", "/admin/logout")
    assert signed_out.url.endswith("/admin/login")
    assert session.get(f"{site.base}/admin/", timeout=10, allow_redirects=False).status_code == 303

    _, wrong = sign_in(site, OPS, "not the password at all")
    _, unknown = sign_in(site, "nobody@bridge.example")
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong" in wrong.text and wrong.text.count("wrong") == unknown.text.count("wrong")
    _, ok = sign_in(site, OPS)
    assert ok.status_code == 200 and ok.url == f"{site.base}/admin/"


def test_a_setup_link_works_once_and_a_weak_password_is_refused(site: Site) -> None:
    link = invite(site, OPS, "--expires-hours", "2")
    session = requests.Session()
    form = session.get(link, timeout=10)
    weak = session.post(
        link, data={"csrf": csrf_of(form.text), "password": "short", "password_confirm": "short"}, timeout=10
    )
    assert weak.status_code == 422 and 'role="alert"' in weak.text
    done = session.post(
        link, data={"csrf": csrf_of(form.text), "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10
    )
    assert done.status_code == 200
    assert requests.get(link, timeout=10).status_code == 410
    replay = requests.Session()
    assert replay.post(link, data={"password": PASSWORD, "password_confirm": PASSWORD}, timeout=10).status_code == 410


def test_a_tenant_administrator_sees_only_their_tenant(site: Site) -> None:
    session = set_up(site, IT, "--tenant", "example")
    home = session.get(f"{site.base}/admin/", timeout=10)
    assert home.url == f"{site.base}/admin/t/example/"
    assert "/admin/t/other/" not in home.text
    alice = account_id(site, "agarnier")
    for path in (
        "/admin/t/other/",
        "/admin/t/other/accounts",
        "/admin/t/other/audit",
        "/admin/t/other/tokens",
        "/admin/t/nowhere/",
    ):
        assert session.get(f"{site.base}{path}", timeout=10).status_code == 404, path
    # Another tenant's action: 404 before anything is done, even with a valid CSRF value.
    refused = post(session, site, "/admin/t/example/", f"/admin/t/other/accounts/{alice}/archive")
    assert refused.status_code == 404
    assert account_of(site, "agarnier")["status"] == "pending"
    # An account id of another tenant under this tenant's name is not found either.
    assert session.get(f"{site.base}/admin/t/example/accounts/{alice}", timeout=10).status_code == 200


def test_the_buttons_act_through_the_core_and_are_audited_as_the_administrator(site: Site) -> None:
    session = set_up(site, OPS)
    alice = account_id(site, "agarnier")
    page = f"/admin/t/example/accounts/{alice}"
    shown = session.get(f"{site.base}{page}", timeout=10)
    assert shown.status_code == 200 and "Resend activation" in shown.text and "Archive" in shown.text
    assert "agarnier" in shown.text

    before = len([r for r in _outbox(site) if r.topic == "activation"])
    resent = post(session, site, page, f"{page}/resend")
    assert resent.status_code == 200 and "new activation mail" in resent.text
    assert len([r for r in _outbox(site) if r.topic == "activation"]) == before + 1

    archived = post(session, site, page, f"{page}/archive")
    assert archived.status_code == 200 and account_of(site, "agarnier")["status"] == "archived"
    again = post(session, site, page, f"{page}/archive")
    assert again.status_code == 200 and "Not done" in again.text  # the lifecycle refuses, the page says why
    reactivated = post(session, site, page, f"{page}/reactivate")
    assert reactivated.status_code == 200 and account_of(site, "agarnier")["status"] != "archived"

    actors = {(e.action, e.actor) for e in _audit(site)}
    assert ("archive", f"admin:{OPS}") in actors and ("reactivate", f"admin:{OPS}") in actors


def test_a_post_without_the_csrf_field_is_refused(site: Site) -> None:
    session = set_up(site, OPS)
    alice = account_id(site, "agarnier")
    bare = session.post(f"{site.base}/admin/t/example/accounts/{alice}/archive", data={}, timeout=10)
    forged = session.post(f"{site.base}/admin/t/example/accounts/{alice}/archive", data={"csrf": "0" * 64}, timeout=10)
    assert bare.status_code == forged.status_code == 403
    assert account_of(site, "agarnier")["status"] == "pending"
    login = requests.post(f"{site.base}/admin/login", data={"email": OPS, "password": PASSWORD}, timeout=10)
    assert login.status_code == 403


def test_the_second_factor_once_enrolled_is_asked_at_every_sign_in(site: Site) -> None:
    session = set_up(site, OPS)
    enrol = session.get(f"{site.base}/admin/me/totp", timeout=10)
    secret = re.search(r'name="secret" value="([A-Z2-7]+)"', enrol.text)
    assert secret, enrol.text
    wrong = session.post(
        f"{site.base}/admin/me/totp",
        data={
            "csrf": csrf_of(enrol.text),
            "secret": secret.group(1),
            "seal": _field(enrol.text, "seal"),
            "code": "000000",
        },
        timeout=10,
    )
    assert wrong.status_code == 422
    forged = session.post(
        f"{site.base}/admin/me/totp",
        data={
            "csrf": csrf_of(enrol.text),
            "secret": "A" * 32,
            "seal": _field(enrol.text, "seal"),
            "code": pyotp.TOTP("A" * 32).now(),
        },
        timeout=10,
    )
    assert forged.status_code == 403  # a secret bridge did not offer
    totp = pyotp.TOTP(secret.group(1))
    on = session.post(
        f"{site.base}/admin/me/totp",
        data={
            "csrf": csrf_of(enrol.text),
            "secret": secret.group(1),
            "seal": _field(enrol.text, "seal"),
            "code": totp.now(),
        },
        timeout=10,
    )
    assert on.status_code == 200 and "Second factor on" in on.text

    second, half = sign_in(site, OPS)
    assert half.url.startswith(f"{site.base}/admin/login/totp")
    assert second.get(f"{site.base}/admin/", timeout=10, allow_redirects=False).status_code == 303
    bad = second.post(f"{site.base}/admin/login/totp", data={"csrf": csrf_of(half.text), "code": "123456"}, timeout=10)
    assert bad.status_code == 401
    good = second.post(
        f"{site.base}/admin/login/totp",
        data={"csrf": csrf_of(half.text), "code": totp.now(), "next": "/admin/"},
        timeout=10,
    )
    assert good.status_code == 200 and good.url == f"{site.base}/admin/"


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, html
    return found.group(1)


def test_an_idle_session_ends_and_removing_an_administrator_ends_theirs(site: Site) -> None:
    session = set_up(site, OPS)
    assert session.get(f"{site.base}/admin/", timeout=10, allow_redirects=False).status_code == 200
    with site.runtime.engine.begin() as conn:
        conn.execute(update(AdminSession.__table__).values(last_seen_at=datetime.now(UTC) - timedelta(hours=1)))
    idle = session.get(f"{site.base}/admin/", timeout=10, allow_redirects=False)
    assert idle.status_code == 303 and "/admin/login" in idle.headers["Location"]

    fresh, ok = sign_in(site, OPS)
    assert ok.status_code == 200
    assert bridge(site.deployment, "admins", "remove", OPS).exit_code == 0
    assert fresh.get(f"{site.base}/admin/", timeout=10, allow_redirects=False).status_code == 303
    assert bridge(site.deployment, "admins", "remove", OPS).exit_code == 1


def test_the_screens_answer_in_french_and_the_audit_exports_as_csv(site: Site) -> None:
    session = set_up(site, OPS)
    for path in (
        "/admin/t/example/",
        "/admin/t/example/accounts",
        "/admin/t/example/runs",
        "/admin/t/example/outbox",
        "/admin/t/example/audit",
        "/admin/t/example/tokens",
    ):
        shown = session.get(f"{site.base}{path}", timeout=10)
        assert shown.status_code == 200, (path, shown.text[:500])
    french = session.get(
        f"{site.base}/admin/t/example/accounts", headers={"Accept-Language": "fr-FR,fr;q=0.9"}, timeout=10
    )
    assert '<html lang="fr">' in french.text and "Comptes" in french.text and "Rechercher" in french.text
    switched = session.get(f"{site.base}/admin/t/example/?lang=fr", timeout=10)
    assert "Vue d'ensemble" in switched.text or "Vue d&#39;ensemble" in switched.text
    assert '<html lang="fr">' in session.get(f"{site.base}/admin/t/example/runs", timeout=10).text  # remembered

    found = session.get(f"{site.base}/admin/t/example/accounts", params={"q": "agar", "lang": "en"}, timeout=10)
    assert "agarnier" in found.text
    exported = session.get(f"{site.base}/admin/t/example/audit", params={"format": "csv"}, timeout=10)
    assert exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows and {"id", "actor", "action"} <= set(rows[0]) and any(r["action"] == "create" for r in rows)


def test_a_token_created_in_the_console_is_shown_once_and_works_until_revoked(site: Site) -> None:
    session = set_up(site, OPS)
    created = post(session, site, "/admin/t/example/tokens", "/admin/t/example/tokens", label="entra")
    token = re.search(r'id="new-token">([^<]+)<', created.text)
    assert created.status_code == 200 and token, created.text
    scim = f"{site.base}/scim/v2/Users"
    assert requests.get(scim, headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10).status_code == 200
    listed = session.get(f"{site.base}/admin/t/example/tokens", timeout=10).text
    assert token.group(1) not in listed and "entra" in listed
    token_id = re.search(r'action="/admin/t/example/tokens/([0-9a-f-]+)/revoke"', listed)
    assert token_id
    revoked = post(session, site, "/admin/t/example/tokens", f"/admin/t/example/tokens/{token_id.group(1)}/revoke")
    assert revoked.status_code == 200
    assert requests.get(scim, headers={"Authorization": f"Bearer {token.group(1)}"}, timeout=10).status_code == 401
    assert {("token_created", f"admin:{OPS}"), ("token_revoked", f"admin:{OPS}")} <= {
        (e.action, e.actor) for e in _audit(site)
    }


def test_invite_send_mails_the_link_instead_of_printing_it(site: Site) -> None:
    result = bridge(site.deployment, "admins", "invite", IT, "--tenant", "example", "--send")
    assert result.exit_code == 0 and "/admin/setup/" not in result.output
    mails = mails_to(site.smtp, IT)
    assert len(mails) == 1 and f"{site.base}/admin/setup/" in mails[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def _outbox(site: Site) -> list[object]:
    with site.runtime.engine.connect() as conn:
        return list(conn.execute(select(OutboxMessage.__table__)).all())


def _audit(site: Site) -> list[object]:
    with site.runtime.engine.connect() as conn:
        return list(conn.execute(select(AuditEvent.__table__)).all())


def test_the_admins_page_invites_and_a_tenant_administrator_manages_only_their_tenant(site: Site) -> None:
    operator = set_up(site, OPS)
    made = post(operator, site, "/admin/admins", "/admin/admins", email=IT, tenant="example")
    link = re.search(r'id="setup-link">([^<]+)<', made.text)
    assert made.status_code == 200 and link and link.group(1).startswith(f"{site.base}/admin/setup/")
    assert ("admin_invited", f"admin:{OPS}") in {(e.action, e.actor) for e in _audit(site)}
    bad = post(operator, site, "/admin/admins", "/admin/admins", email="not an address", tenant="")
    assert bad.status_code == 422

    it = requests.Session()
    form = it.get(link.group(1), timeout=10)
    assert it.post(
        link.group(1), data={"csrf": csrf_of(form.text), "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10
    ).ok
    listed = it.get(f"{site.base}/admin/admins", timeout=10).text
    assert IT in listed and OPS not in listed
    # The tenant field is ignored for a tenant administrator: the colleague joins their tenant.
    colleague = "colleague@example.org"
    post(it, site, "/admin/admins", "/admin/admins", email=colleague, tenant="")
    admins = {a["email"]: a for a in json.loads(bridge(site.deployment, "admins", "list", "--json").output)}
    assert admins[colleague]["tenant"] == "example" and admins[colleague]["role"] == "tenant_admin"
    assert post(it, site, "/admin/admins", "/admin/admins/remove", email=OPS).status_code == 404
    assert OPS in {a["email"] for a in json.loads(bridge(site.deployment, "admins", "list", "--json").output)}
    assert post(it, site, "/admin/admins", "/admin/admins/remove", email=colleague).status_code == 200
    assert post(it, site, "/admin/admins", "/admin/admins/remove", email=IT).status_code == 422  # not oneself


def test_the_connect_page_fills_the_guides_with_the_tenant_s_values(site: Site) -> None:
    session = set_up(site, IT, "--tenant", "example")
    page = session.get(f"{site.base}/admin/t/example/connect", timeout=10)
    assert page.status_code == 200
    for name in ("Microsoft Entra ID", "Okta", "OneLogin", "JumpCloud"):
        assert name in page.text
    assert f"{site.base}/scim/v2?aadOptscim062020" in page.text and "no active token yet" in page.text
    french = session.get(f"{site.base}/admin/t/example/connect?lang=fr", timeout=10)
    assert "Guides pas à pas" in french.text
    assert session.get(f"{site.base}/admin/t/other/connect", timeout=10).status_code == 404


def test_an_operator_tests_a_directory_source_and_a_tenant_administrator_cannot(site: Site) -> None:
    operator = set_up(site, OPS)
    page = operator.get(f"{site.base}/admin/t/example/connect", timeout=10)
    assert 'action="/admin/t/example/sources/dir/test"' in page.text
    checked = post(operator, site, "/admin/t/example/connect", "/admin/t/example/sources/dir/test")
    found = re.search(r'id="source-check">(.*?)</div>', checked.text, re.S)
    assert checked.status_code == 200 and found, checked.text
    users = re.search(r"reached: (\d+) users and (\d+) groups", found.group(1))
    assert users and int(users.group(1)) > 0 and int(users.group(2)) > 0, found.group(1)

    site.deployment.ldif.rename(site.deployment.ldif.with_suffix(".gone"))
    failed = post(operator, site, "/admin/t/example/connect", "/admin/t/example/sources/dir/test")
    assert failed.status_code == 200 and 'class="errors" role="status" id="source-check"' in failed.text
    assert "reached:" not in failed.text

    it = set_up(site, IT, "--tenant", "example")
    assert "sources/dir/test" not in it.get(f"{site.base}/admin/t/example/connect", timeout=10).text
    assert post(it, site, "/admin/t/example/connect", "/admin/t/example/sources/dir/test").status_code == 404
    assert post(operator, site, "/admin/t/example/connect", "/admin/t/other/sources/dir/test").status_code == 404


def test_the_pause_switch_holds_account_changes_until_resumed(site: Site) -> None:
    session = set_up(site, IT, "--tenant", "example")
    overview = session.get(f"{site.base}/admin/t/example/", timeout=10)
    assert ">Pause</button>" in overview.text
    assert post(session, site, "/admin/t/example/", "/admin/t/other/pause").status_code == 404
    paused = post(session, site, "/admin/t/example/", "/admin/t/example/pause")
    assert paused.status_code == 200 and "Paused since" in paused.text and ">Resume</button>" in paused.text
    assert json.loads(bridge(site.deployment, "tenants", "list", "--json").output)[0]["paused"]

    site.deployment.edit_person("agarnier", "pwdAccountLockedTime", "000001010000Z")
    ran = json.loads(bridge(site.deployment, "sync", "--json").output)
    assert ran["paused"] is True and account_of(site, "agarnier")["status"] == "pending"

    resumed = post(session, site, "/admin/t/example/", "/admin/t/example/resume")
    assert resumed.status_code == 200 and ">Pause</button>" in resumed.text
    # The resume runs beside the request: wait for its last step, the SCIM catch-up, to be recorded.
    deadline = datetime.now(UTC) + timedelta(seconds=120)
    while not any(
        r["source"] == "scim" for r in json.loads(bridge(site.deployment, "sync", "--history", "--json").output)
    ):
        assert datetime.now(UTC) < deadline, "the resume did not finish"
    assert account_of(site, "agarnier")["status"] == "suspended"
    actions = {(e.action, e.actor) for e in _audit(site)}
    assert ("tenant_paused", f"admin:{IT}") in actions and ("tenant_resumed", f"admin:{IT}") in actions


SUSPEND_OP = {"op": "replace", "path": "active", "value": False}


def _accounts(d: Deployment) -> list[dict[str, str]]:
    return list(json.loads(bridge(d, "users", "list", "--tenant", "example", "--json").output))


def test_a_held_plan_is_reviewed_and_approved_in_the_console(site: Site) -> None:
    """Held plans (issue 17): the overview says a plan waits, its review page lists each account's
    change, and Approve applies exactly that plan, audited as the administrator."""
    d = site.deployment
    people = d.people()
    leavers = sorted(people[: int(len(people) * 0.3)])
    d.remove_people(leavers)
    held = json.loads(bridge(d, "sync", "--json").output.strip().splitlines()[-1])
    assert held["aborted"] and held["held"], held
    plan_id = held["held"]
    review = f"/admin/t/example/plans/{plan_id}"

    # A tenant administrator of another tenant sees neither the plan nor its buttons.
    stranger = set_up(site, "it@other.example", "--tenant", "other")
    assert stranger.get(f"{site.base}{review}", timeout=10).status_code == 404
    assert stranger.get(f"{site.base}/admin/t/other/plans/{plan_id}", timeout=10).status_code == 404
    assert post(stranger, site, "/admin/t/other/", f"/admin/t/other/plans/{plan_id}/approve").status_code == 404
    assert json.loads(bridge(d, "plans", "show", plan_id, "--json").output)["status"] == "held"

    session = set_up(site, IT, "--tenant", "example")
    overview = session.get(f"{site.base}/admin/t/example/", timeout=10)
    assert "1 held plan(s) waiting" in overview.text and review in overview.text
    listed = session.get(f"{site.base}/admin/t/example/plans", timeout=10)
    assert listed.status_code == 200 and plan_id in listed.text
    page = session.get(f"{site.base}{review}", timeout=10)
    assert page.status_code == 200 and ">Approve</button>" in page.text and ">Reject</button>" in page.text
    assert all(name in page.text for name in leavers) and "no longer in source" in page.text
    assert session.post(f"{site.base}{review}/approve", data={}, timeout=10).status_code == 403  # no CSRF field

    approved = post(session, site, review, f"{review}/approve")
    assert approved.status_code == 200 and "The plan is approved and applied." in approved.text
    assert ">Approve</button>" not in approved.text
    statuses = {u["userName"]: u["status"] for u in _accounts(d)}
    assert sorted(u for u, s in statuses.items() if s == "archived") == leavers
    events = _audit(site)
    assert ("plan_approved", f"admin:{IT}") in {(e.action, e.actor) for e in events}
    assert {e.actor for e in events if e.action == "archive"} == {f"admin:{IT}"}
    assert "No plan is waiting" in session.get(f"{site.base}/admin/t/example/", timeout=10).text


def test_a_held_plan_is_rejected_in_the_console_and_approve_refuses_a_changed_directory(site: Site) -> None:
    d = site.deployment
    people = d.people()
    leavers = int(len(people) * 0.3)
    d.remove_people(people[:leavers])
    first = json.loads(bridge(d, "sync", "--json").output.strip().splitlines()[-1])["held"]
    assert first
    session = set_up(site, OPS)
    review = f"/admin/t/example/plans/{first}"
    d.remove_people(people[leavers : leavers + 1])  # the directory changes after the review opened
    refused = post(session, site, review, f"{review}/approve")
    assert refused.status_code == 200 and "Not done" in refused.text and "the source changed" in refused.text
    second = json.loads(bridge(d, "plans", "list", "--json").output)[0]
    assert second["status"] == "held" and second["id"] != first and f"/plans/{second['id']}" in refused.url
    assert not any(u["status"] == "archived" for u in _accounts(d))
    again = f"/admin/t/example/plans/{second['id']}"
    rejected = post(session, site, again, f"{again}/reject")
    assert rejected.status_code == 200 and "The plan is rejected" in rejected.text
    assert json.loads(bridge(d, "plans", "show", second["id"], "--json").output)["status"] == "rejected"
    assert ("plan_rejected", f"admin:{OPS}") in {(e.action, e.actor) for e in _audit(site)}


def test_the_overview_lists_the_open_alerts(site: Site) -> None:
    from bridge.store.alerts import open_alert
    from bridge.store.tenants import get_tenant

    session = set_up(site, IT, "--tenant", "example")
    assert "Needs a look" not in session.get(f"{site.base}/admin/t/example/", timeout=10).text
    with site.runtime.engine.begin() as conn:
        tenant_id = get_tenant(conn, "example").id
        open_alert(
            conn,
            tenant_id,
            "mail_stuck",
            "mail",
            "the oldest queued message has waited 90 minutes",
            "outbox",
            datetime.now(UTC),
        )
    page = session.get(f"{site.base}/admin/t/example/", timeout=10).text
    assert "Needs a look" in page and "Mail waiting in the queue" in page and "waited 90 minutes" in page
    assert 'href="/admin/t/example/outbox"' in page


def test_a_scim_guard_plan_is_reviewed_and_approved_in_the_console(site: Site) -> None:
    """The SCIM guard (issue 17): past the tenant's window, active:false pushed over SCIM is held in a
    plan of source scim; the console's review page lists those people and Approve applies them."""
    from bridge.store.accounts import status_counts
    from bridge.store.tenants import get_tenant
    from bridge.store.tokens import create_token

    with site.runtime.engine.begin() as conn:
        tenant_id = get_tenant(conn, "example").id
        _, token = create_token(conn, tenant_id, "tests", False, datetime.now(UTC))
    idp = requests.Session()
    idp.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})
    user = "urn:ietf:params:scim:schemas:core:2.0:User"
    ids = []
    for i in range(20):
        made = idp.post(
            f"{site.base}/scim/v2/Users",
            json={"schemas": [user], "userName": f"g{i:02d}", "emails": [{"value": f"g{i:02d}@example.org"}]},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    with site.runtime.engine.connect() as conn:
        counts = status_counts(conn, tenant_id)
    allowed = max((sum(counts.values()) - counts["archived"]) // 10, 5)
    assert allowed < 20
    off = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [SUSPEND_OP]}
    for user_id in ids:
        assert idp.patch(f"{site.base}/scim/v2/Users/{user_id}", json=off, timeout=10).status_code == 200
    statuses = {u["userName"]: u["status"] for u in _accounts(site.deployment)}
    held = [f"g{i:02d}" for i in range(allowed, 20)]
    assert [statuses[f"g{i:02d}"] for i in range(allowed)] == ["suspended"] * allowed
    assert {statuses[n] for n in held} == {"no_access"}
    (plan,) = [
        p for p in json.loads(bridge(site.deployment, "plans", "list", "--json").output) if p["source"] == "scim"
    ]
    review = f"/admin/t/example/plans/{plan['id']}"

    session = set_up(site, IT, "--tenant", "example")
    page = session.get(f"{site.base}{review}", timeout=10)
    assert page.status_code == 200 and ">Approve</button>" in page.text
    assert all(n in page.text for n in held) and "The identity provider was answered" in page.text
    approved = post(session, site, review, f"{review}/approve")
    assert approved.status_code == 200 and "The plan is approved and applied." in approved.text
    statuses = {u["userName"]: u["status"] for u in _accounts(site.deployment)}
    assert {statuses[n] for n in held} == {"suspended"}
    assert ("plan_approved", f"admin:{IT}") in {(e.action, e.actor) for e in _audit(site)}
