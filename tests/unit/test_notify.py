"""Pure pieces of the notify and web packages: no server, no database."""

from __future__ import annotations

import time
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest
from argon2 import PasswordHasher

from bridge.notify.activation import derive_token, token_hash
from bridge.notify.mail import build_message, format_date, message_id, pick_language, render, valid_address
from bridge.notify.webhook import signature, verify_signature
from bridge.web.passwords import Verified, check_password, hash_password, password_problems, verify
from bridge.web.ratelimit import RateLimiter

SECRET = b"s" * 32


def test_activation_token_is_32_bytes_stable_per_outbox_row_and_distinct_across_rows() -> None:
    first = derive_token(SECRET, "activation:a:1")
    assert first == derive_token(SECRET, "activation:a:1")
    assert first != derive_token(SECRET, "activation:a:2") != derive_token(b"t" * 32, "activation:a:1")
    assert len(first) == 43 and "=" not in first  # base64url of 32 bytes
    assert token_hash(first) != first and len(token_hash(first)) == 64


def test_message_id_is_stable_per_row_and_uses_the_sender_domain() -> None:
    one = message_id("activation:x:1", "Bridge <no-reply@mail.example.org>")
    assert one == message_id("activation:x:1", "Bridge <no-reply@mail.example.org>")
    assert one != message_id("activation:x:2", "Bridge <no-reply@mail.example.org>")
    assert one.startswith("<") and one.endswith("@mail.example.org>")


def test_language_comes_from_the_account_then_the_tenant_then_english() -> None:
    assert pick_language("fr-CA", "en") == "fr"
    assert pick_language("fr_FR") == "fr"
    assert pick_language("de", "fr") == "fr"
    assert pick_language(None, None) == "en"


def test_both_languages_render_the_activation_mail_with_link_expiry_and_contact() -> None:
    expires = datetime(2027, 1, 7, 14, 5, tzinfo=UTC)
    for language, expected_date in (("en", "7 January 2027, 14:05 UTC"), ("fr", "7 janvier 2027 à 14:05 UTC")):
        for mode in ("password", "sso"):
            rendered = render(
                "activation",
                language,
                {
                    "tenant": "Acme",
                    "given_name": "Zoé",
                    "user_name": "zoe",
                    "link": "https://b/activate/T",
                    "new_link_url": "https://b/activate/new-link",
                    "expires": format_date(expires, language),
                    "mode": mode,
                    "contact": "help@acme.example",
                },
            )
            assert "https://b/activate/T" in rendered.text and "https://b/activate/T" in rendered.html
            assert expected_date in rendered.text and "help@acme.example" in rendered.text
            assert "\n" not in rendered.subject
    html = render(
        "activation",
        "en",
        {
            "tenant": "<script>",
            "given_name": None,
            "user_name": "x",
            "link": "l",
            "new_link_url": "n",
            "expires": "e",
            "mode": "password",
            "contact": "c",
        },
    ).html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_built_message_has_both_parts_and_the_headers() -> None:
    rendered = render(
        "activation_reminder",
        "fr",
        {
            "tenant": "Acme",
            "given_name": "Zoé",
            "user_name": "zoe",
            "link": "https://b/activate/T",
            "new_link_url": "n",
            "expires": "e",
            "mode": "password",
            "contact": "c",
        },
    )
    raw = build_message(
        rendered,
        to="zoe@acme.example",
        from_header="Bridge <b@acme.example>",
        msg_id="<x@acme.example>",
        now=datetime.now(UTC),
        language="fr",
    )
    msg = message_from_bytes(raw, policy=default)
    assert msg["Message-ID"] == "<x@acme.example>" and msg["Content-Language"] == "fr"
    assert str(msg["Subject"]).startswith("Rappel : votre lien d'activation")  # non-ASCII, encoded
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    assert "https://b/activate/T" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_addresses_with_line_breaks_are_refused() -> None:
    assert valid_address("a@example.org")
    assert not valid_address("a@example.org\r\nBcc: x@evil.example")
    assert not valid_address("no-at-sign") and not valid_address(None)


def test_webhook_signature_verifies_and_rejects_tampering_and_old_timestamps() -> None:
    body = b'{"id":"1"}'
    now = int(time.time())
    header = signature(SECRET, now, body)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature(SECRET, header, body, now)
    assert not verify_signature(SECRET, header, body + b" ", now)
    assert not verify_signature(b"x" * 32, header, body, now)
    assert not verify_signature(SECRET, header, body, now + 3600)
    assert not verify_signature(SECRET, "garbage", body, now)


def test_rate_limiter_allows_the_limit_then_refuses_until_the_window_moves() -> None:
    clock = [0.0]
    limiter = RateLimiter(3, 60, clock=lambda: clock[0])
    assert [limiter.allow("k") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("other")
    clock[0] = 61
    assert limiter.allow("k")


def test_password_rules_and_argon2id_hashes() -> None:
    assert password_problems("short", "short", user_name="u", email=None) == ["too_short"]
    assert password_problems("a" * 12, "b" * 12, user_name="u", email=None) == ["mismatch"]
    assert password_problems("Me@Example.org", "Me@Example.org", user_name="u", email="me@example.org") == [
        "is_identity"
    ]
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert check_password(stored, "correct horse battery")
    assert not check_password(stored, "wrong")
    assert not check_password(None, "correct horse battery")  # unknown user: still one verification


@pytest.mark.parametrize(
    "password",
    [
        " " * 12,  # blank
        "\t \u00a0 \u3000" * 4,  # blank in other spaces
        "me@example.org ",  # the address with a space
        " Me@Example.org  ",
        "agarnier 2024!!",  # contains the user name
        "passwordpassword",  # common
        "123456789012",  # sequence
        "aaaaaaaaaaaaaaaa",  # repeat
        "qwertyuiop[]",  # keyboard walk
        "Password1234",  # a common word with digits
    ],
)
def test_a_weak_new_password_is_refused(password: str) -> None:
    assert password_problems(password, password, user_name="agarnier", email="me@example.org")


@pytest.mark.parametrize("password", ["correct horse battery staple", "kX9#mQ2vLp7w", "Tr0ub4dor&3xyz"])
def test_a_strong_new_password_is_accepted(password: str) -> None:
    assert password_problems(password, password, user_name="agarnier", email="me@example.org") == []


def test_the_problem_named_for_a_blank_or_common_password() -> None:
    assert password_problems(" " * 12, " " * 12, user_name="u", email=None) == ["blank"]
    assert password_problems("passwordpassword", "passwordpassword", user_name="u", email=None) == ["too_common"]
    assert password_problems("me@example.org ", "me@example.org ", user_name="u", email="me@example.org") == [
        "is_identity"
    ]


def test_nfc_and_nfd_of_one_password_verify_alike() -> None:
    nfc, nfd = "Crème brûlée à l'été", "Cre\u0300me bru\u0302le\u0301e a\u0300 l'e\u0301te\u0301"
    assert nfc != nfd and unicodedata.normalize("NFC", nfd) == nfc
    assert password_problems(nfc, nfd, user_name="u", email=None) == []  # the confirmation matches
    stored = hash_password(nfd)
    assert verify(stored, nfc) == Verified(valid=True, rehash=False)
    assert verify(stored, nfd) == Verified(valid=True, rehash=False)
    assert check_password(hash_password("ﬁnancial report 2019"), "financial report 2019")  # NFKC: the ligature


def test_a_hash_written_before_normalisation_still_verifies_and_asks_to_be_rewritten() -> None:
    nfd = "Cre\u0300me bru\u0302le\u0301e a\u0300 l'e\u0301te\u0301"
    legacy = PasswordHasher().hash(nfd)  # as bridge hashed before: the password as typed
    assert verify(legacy, nfd) == Verified(valid=True, rehash=True)
    assert not verify(legacy, "Crème brûlée à l'été").valid  # the other form never matched it
    assert verify(legacy, nfd + "x") == Verified(valid=False, rehash=False)
    assert not verify(None, nfd).valid
