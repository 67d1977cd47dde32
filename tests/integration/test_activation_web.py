"""Activation links opened over HTTP against the real app (waitress on a free loopback port),
with the mails delivered by the worker to aiosmtpd; on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from markupsafe import escape
from sqlalchemy import select, update
from waitress import wasyncore
from waitress.server import create_server

from bridge.app import create_app
from bridge.runtime import Runtime, open_runtime
from bridge.store.tables import Account, ActivationToken, AuditEvent, Credential, OutboxMessage
from bridge.web.i18n import MESSAGES
from tests.conftest import Deployment
from tests.fixtures.postgres import free_port
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.webhook import WebhookReceiver
from tests.integration.notify_support import (
    WEBHOOK_SECRET,
    bridge,
    link_in,
    mails_to,
    notify_config,
    outbox_rows,
    run_worker,
)

PASSWORD = "correct horse battery staple"
ALICE = "alice.garnier@example.org"


@dataclass
class Site:
    base: str
    deployment: Deployment
    smtp: SmtpServer
    runtime: Runtime

    def deliver(self) -> None:
        run_worker(self.deployment)

    def link_for(self, address: str, index: int = -1) -> tuple[str, str]:
        return link_in(mails_to(self.smtp, address)[index])

    def account(self, user_name: str) -> dict[str, object]:
        return dict(json.loads(bridge(self.deployment, "users", "show", user_name, "--json").output))


def open_form(session: requests.Session, url: str) -> tuple[requests.Response, str]:
    page = session.get(url, timeout=10)
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    return page, found.group(1) if found else ""


def serve(deployment: Deployment, smtp: SmtpServer, *, tenant: str = "", extra: str = "") -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    deployment.write_config(seat_limit=None, extra=notify_config(smtp=smtp, public_url=base) + extra)
    if tenant:
        text = deployment.config.read_text().replace(
            'mappings = "mapping.toml"\n', f'mappings = "mapping.toml"\n{tenant}', 1
        )
        deployment.config.write_text(text)
    assert bridge(deployment, "sync").exit_code == 0
    runtime = open_runtime(Path(deployment.config))
    server = create_server(create_app(runtime), host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop() -> None:
        # Runs in the server's own loop (a trigger thunk): closing its sockets from the test
        # thread would break the select() under it. Keep-alive channels are closed too, or the
        # loop would keep waiting on them.
        server.close()
        wasyncore.close_all(server._map, ignore_all=True)

    try:
        yield Site(base, deployment, smtp, runtime)
    finally:
        # The loop may have ended on its own already (it closes the trigger when it does, and the
        # write then fails with EBADF, seen once in a full run): then there is nothing to stop.
        if thread.is_alive():
            with contextlib.suppress(OSError):
                server.trigger.pull_trigger(stop)
        thread.join(timeout=5)
        assert not thread.is_alive(), "the activation server did not stop"
        runtime.engine.dispose()


@pytest.fixture
def site(deployment: Deployment, smtp_server: SmtpServer) -> Iterator[Site]:
    yield from serve(deployment, smtp_server)


@pytest.fixture
def sso_site(deployment: Deployment, smtp_server: SmtpServer) -> Iterator[Site]:
    yield from serve(
        deployment, smtp_server, tenant='activation = "sso"\nlogin_url = "https://login.example.org/start"\n'
    )


def test_the_link_in_the_mail_activates_the_account(site: Site) -> None:
    site.deliver()
    assert len(mails_to(site.smtp, ALICE)) == 1
    url, _ = site.link_for(ALICE)
    assert url.startswith(site.base + "/activate/")
    session = requests.Session()
    page, csrf = open_form(session, url)
    assert page.status_code == 200 and '<html lang="fr">' in page.text  # Alice's preferredLanguage
    assert '<label for="password">' in page.text and '<label for="password_confirm">' in page.text
    assert "http" not in re.sub(r'(action|href)="[^"]*"', "", page.text.split("<body>")[1])  # no external asset
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"

    mismatch = session.post(
        url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD + "!"}, timeout=10
    )
    assert mismatch.status_code == 422 and 'role="alert"' in mismatch.text
    assert site.account("agarnier")["status"] == "pending"

    done = session.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10)
    assert done.status_code == 200 and "Votre compte est actif" in done.text
    account = site.account("agarnier")
    assert account["status"] == "active"
    assert [h["action"] for h in account["history"]][-1] == "activate"  # type: ignore[index]
    with site.runtime.engine.connect() as conn:
        stored = conn.execute(select(Credential.__table__.c.password_hash)).scalars().all()
        activated_at = conn.execute(
            select(Account.__table__.c.activated_at).where(Account.__table__.c.user_name == "agarnier")
        ).scalar_one()
        event = conn.execute(select(AuditEvent.__table__).where(AuditEvent.__table__.c.action == "activate")).one()
    assert len(stored) == 1 and stored[0].startswith("$argon2id$") and PASSWORD not in stored[0]
    assert activated_at is not None
    assert event.before["status"] == "pending" and event.after["status"] == "active" and event.actor == "web:activation"


def test_a_used_link_is_refused_with_an_offer_of_a_new_one(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    session = requests.Session()
    _, csrf = open_form(session, url)
    assert session.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10).ok
    again, _ = open_form(session, url)
    assert again.status_code == 410 and "déjà servi" in again.text and 'name="email"' in again.text
    reuse = session.post(
        url, data={"csrf": csrf, "password": "another password!", "password_confirm": "another password!"}, timeout=10
    )
    assert reuse.status_code == 410


def test_resend_kills_the_old_link_and_the_new_one_works(site: Site) -> None:
    site.deliver()
    old_url, _ = site.link_for(ALICE)
    assert bridge(site.deployment, "users", "resend-activation", "agarnier").exit_code == 0
    # Dead at once, before the new mail is even delivered.
    assert requests.get(old_url + "?lang=en", timeout=10).status_code == 410
    site.deliver()
    assert len(mails_to(site.smtp, ALICE)) == 2
    new_url, _ = site.link_for(ALICE)
    assert new_url != old_url
    session = requests.Session()
    page, csrf = open_form(session, old_url + "?lang=en")
    assert page.status_code == 410 and "no longer valid" in page.text
    _, csrf = open_form(session, new_url)
    assert session.post(new_url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10).ok
    assert site.account("agarnier")["status"] == "active"


def test_an_expired_link_is_refused(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    with site.runtime.engine.begin() as conn:
        conn.execute(update(ActivationToken.__table__).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    session = requests.Session()
    page, csrf = open_form(session, url + "?lang=en")
    assert page.status_code == 410 and "This link has expired" in page.text and 'name="email"' in page.text
    post = session.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10)
    assert post.status_code == 410 and site.account("agarnier")["status"] == "pending"


def test_an_unknown_link_is_not_found(site: Site) -> None:
    response = requests.get(f"{site.base}/activate/{'x' * 43}", headers={"Accept-Language": "en"}, timeout=10)
    assert response.status_code == 404 and "This link is not valid" in response.text


def test_a_post_without_the_csrf_token_changes_nothing(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    forged = requests.post(url, data={"password": PASSWORD, "password_confirm": PASSWORD}, timeout=10)
    assert forged.status_code == 403
    # A token from another browser (another cookie) does not pass either.
    _, csrf = open_form(requests.Session(), url)
    other = requests.Session()
    other.get(url, timeout=10)
    assert (
        other.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10).status_code
        == 403
    )
    assert site.account("agarnier")["status"] == "pending"


def test_posts_on_one_link_are_rate_limited(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    session = requests.Session()
    _, csrf = open_form(session, url)
    codes = [
        session.post(url, data={"csrf": csrf, "password": "short", "password_confirm": "short"}, timeout=10).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [422] * 10 and codes[10] == 429


def test_a_new_link_request_answers_alike_for_known_and_unknown_addresses(site: Site) -> None:
    site.deliver()
    session = requests.Session()
    answers = []
    for address in (ALICE, "nobody@example.org"):
        _, csrf = open_form(session, f"{site.base}/activate/new-link?lang=en")
        answers.append(
            session.post(
                f"{site.base}/activate/new-link", data={"csrf": csrf, "email": address, "lang": "en"}, timeout=10
            )
        )
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].text == answers[1].text and "If an account is waiting" in answers[0].text
    site.deliver()
    assert len(mails_to(site.smtp, ALICE)) == 2 and not mails_to(site.smtp, "nobody@example.org")
    # The new mail's link works, the first one does not any more.
    assert requests.get(site.link_for(ALICE, 0)[0], timeout=10).status_code == 410
    assert requests.get(site.link_for(ALICE)[0], timeout=10).status_code == 200


def test_a_new_link_request_for_a_malformed_address_answers_like_any_other(site: Site) -> None:
    """'@example.org' made the page answer 500 (HeaderParseError from the address parser)."""
    session = requests.Session()
    answers = []
    for address in ("@example.org", "a@b@example.org", "someone@", "first last@example.org", "nobody@example.org"):
        _, csrf = open_form(session, f"{site.base}/activate/new-link?lang=en")
        answers.append(
            session.post(
                f"{site.base}/activate/new-link", data={"csrf": csrf, "email": address, "lang": "en"}, timeout=10
            )
        )
    assert [a.status_code for a in answers] == [200] * 5
    assert len({a.text for a in answers}) == 1 and "If an account is waiting" in answers[0].text


def test_sso_tenant_confirms_the_address_then_redirects_to_the_login_page(sso_site: Site) -> None:
    sso_site.deliver()
    mail = mails_to(sso_site.smtp, ALICE)[0]
    assert "Confirmez votre adresse" in mail.subject
    url, _ = sso_site.link_for(ALICE)
    session = requests.Session()
    page, csrf = open_form(session, url)
    assert page.status_code == 200 and 'type="password"' not in page.text and "Confirmer mon adresse" in page.text
    assert "https://login.example.org" in page.headers["Content-Security-Policy"]
    assert sso_site.account("agarnier")["status"] == "pending"  # opening the link changes nothing
    done = session.post(url, data={"csrf": csrf}, allow_redirects=False, timeout=10)
    assert done.status_code == 303 and done.headers["Location"] == "https://login.example.org/start"
    assert sso_site.account("agarnier")["status"] == "active"
    with sso_site.runtime.engine.connect() as conn:
        assert conn.execute(select(Credential.__table__)).all() == []


def test_activation_sends_one_signed_account_activated_webhook(
    deployment: Deployment, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    for site in serve(
        deployment,
        smtp_server,
        extra=f'\n[webhook]\nurl = "{webhook_receiver.url}"\nsecret_env = "BRIDGE_TEST_WEBHOOK_SECRET"\n',
    ):
        site.deliver()
        url, _ = site.link_for(ALICE)
        session = requests.Session()
        _, csrf = open_form(session, url)
        assert session.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10).ok
        site.deliver()
        site.deliver()
        activated = [d for d in webhook_receiver.accepted() if d.event["type"] == "account.activated"]
        assert len(activated) == 1
        event = activated[0].event
        assert event["account"]["userName"] == "agarnier" and event["change"]["after"]["status"] == "active"
        from bridge.notify.webhook import SIGNATURE_HEADER, verify_signature

        assert verify_signature(
            WEBHOOK_SECRET.encode(), activated[0].headers[SIGNATURE_HEADER], activated[0].body, time.time()
        )
        assert [r.status for r in outbox_rows(site.deployment, topic="account.activated")] == ["sent"]


# ---- verify-password ---------------------------------------------------------------------------


def activate_alice(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    session = requests.Session()
    _, csrf = open_form(session, url)
    assert session.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=10).ok


def product_token(site: Site, *flags: str) -> str:
    result = bridge(site.deployment, "tokens", "create", "--tenant", "example", *flags)
    return result.output.strip().splitlines()[-1]


def check(site: Site, token: str | None, user: str, password: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(
        f"{site.base}/api/v1/verify-password",
        json={"userName": user, "password": password},
        headers=headers,
        timeout=10,
    )


def test_verify_password_answers_valid_or_invalid_only(site: Site) -> None:
    activate_alice(site)
    token = product_token(site, "--read-only")
    assert check(site, token, "agarnier", PASSWORD).json() == {"valid": True}
    assert check(site, token, ALICE.upper(), PASSWORD).json() == {"valid": True}  # email, any case
    assert check(site, token, "agarnier", PASSWORD + "x").json() == {"valid": False}
    assert check(site, token, "nobody", PASSWORD).json() == {"valid": False}
    assert check(site, token, "bmartin", PASSWORD).json() == {"valid": False}  # pending: no password yet
    assert check(site, None, "agarnier", PASSWORD).status_code == 401
    assert check(site, "brg_not-a-token", "agarnier", PASSWORD).status_code == 401
    assert check(site, product_token(site), "agarnier", PASSWORD).status_code == 403  # read-write token
    assert bridge(site.deployment, "users", "archive", "agarnier").exit_code == 0
    assert check(site, token, "agarnier", PASSWORD).json() == {"valid": False}


def test_verify_password_is_rate_limited_per_user(site: Site) -> None:
    token = product_token(site, "--read-only")
    codes = [check(site, token, "someone", "guess").status_code for _ in range(11)]
    assert codes[:10] == [200] * 10 and codes[10] == 429
    assert check(site, token, "someone-else", "guess").status_code == 200


def test_verify_password_takes_as_long_for_an_unknown_user(site: Site) -> None:
    activate_alice(site)
    token = product_token(site, "--read-only")

    def timed(user: str) -> float:
        start = time.perf_counter()
        assert check(site, token, user, "wrong password").status_code == 200
        return time.perf_counter() - start

    known, unknown = [], []
    for i in range(5):
        known.append(timed("agarnier"))
        unknown.append(timed(f"ghost{i}"))
    # Both paths are one argon2 verification (tens of milliseconds); a skipped hash would make
    # the unknown user several times faster. Wide bounds: the machine is shared.
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


def activate_latest(site: Site, address: str, password: str) -> None:
    site.deliver()
    url, _ = site.link_for(address)
    session = requests.Session()
    _, csrf = open_form(session, url)
    page = session.post(url, data={"csrf": csrf, "password": password, "password_confirm": password}, timeout=10)
    assert page.ok, page.text


def test_verify_password_signs_in_a_rehired_person_by_address(site: Site) -> None:
    activate_alice(site)
    token = product_token(site, "--read-only")
    # Alice leaves and comes back as a new directory entry (a new anchor) with the same name and
    # address: the old account is archived, the new one is hers.
    site.deployment.edit_person("agarnier", "entryUUID", "0f0e0d0c-0b0a-4908-8706-050403020100")
    assert bridge(site.deployment, "sync", "--force").exit_code == 0
    rows = json.loads(bridge(site.deployment, "users", "list", "--json").output)
    assert sorted(r["status"] for r in rows if r["userName"] == "agarnier") == ["archived", "pending"]
    second = "a new sentence for the second job"
    activate_latest(site, ALICE, second)
    assert check(site, token, ALICE, second).json() == {"valid": True}
    assert check(site, token, "agarnier", second).json() == {"valid": True}
    assert check(site, token, ALICE, PASSWORD).json() == {"valid": False}  # the archived account's


def test_verify_password_limits_the_account_whatever_name_is_asked(site: Site) -> None:
    activate_alice(site)
    token = product_token(site, "--read-only")
    codes = [check(site, token, name, "guess").status_code for name in ["agarnier", ALICE, ALICE.upper()] * 4]
    assert codes[:10] == [200] * 10 and codes[10:] == [429, 429], codes
    assert check(site, token, "bmartin", "guess").status_code == 200  # someone else's budget


def test_a_password_typed_in_another_unicode_form_signs_in(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    nfd = "Cre\u0300me bru\u0302le\u0301e a\u0300 l'e\u0301te\u0301"
    session = requests.Session()
    _, csrf = open_form(session, url)
    assert session.post(url, data={"csrf": csrf, "password": nfd, "password_confirm": nfd}, timeout=10).ok
    token = product_token(site, "--read-only")
    assert check(site, token, "agarnier", "Crème brûlée à l'été").json() == {"valid": True}
    assert check(site, token, "agarnier", nfd).json() == {"valid": True}


def test_a_weak_password_is_refused_on_the_activation_page(site: Site) -> None:
    site.deliver()
    url, _ = site.link_for(ALICE)
    session = requests.Session()
    for weak, message in [
        (" " * 12, "blank"),
        (ALICE + " ", "is_identity"),
        ("passwordpassword", "too_common"),
    ]:
        message = str(escape(MESSAGES["fr"][message]))  # Alice reads French, as Jinja escapes it
        _, csrf = open_form(session, url)
        page = session.post(url, data={"csrf": csrf, "password": weak, "password_confirm": weak}, timeout=10)
        assert page.status_code == 422 and message in page.text, (weak, page.status_code)
    assert site.account("agarnier")["status"] == "pending"


def test_outbox_rows_never_hold_a_link(site: Site) -> None:
    site.deliver()
    _, token = site.link_for(ALICE)
    with site.runtime.engine.connect() as conn:
        payloads = conn.execute(select(OutboxMessage.__table__.c.payload)).scalars().all()
    assert token not in json.dumps(payloads)
