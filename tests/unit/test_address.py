"""bridge.core.address: the one rule for whether bridge can mail an address."""

import pytest

from bridge.core.address import address_problem, usable_address


@pytest.mark.parametrize(
    "value",
    ["a@example.org", "first.last+tag@mail.example.co.uk", "o'brien@example.org", "zoë@example.org", "a@example.org."],
)
def test_ordinary_and_internationalised_addresses_are_usable(value: str) -> None:
    assert address_problem(value) is None and usable_address(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "no email address"),
        ("", "no email address"),
        ("@example.org", "nothing before the @"),
        ("someone@", "no domain"),
        ("no-at-sign", "needs an @"),
        ("a@b@example.org", "exactly one @"),
        ("a@example.org\r\nBcc: x@evil.example", "line break"),
        (" a@example.org", "spaces around"),
        ("first last@example.org", "before the @"),
        ("a..b@example.org", "before the @"),
        (".a@example.org", "before the @"),
        ("a@localhost", "not a valid domain"),
        ("a@-example.org", "not a valid domain"),
        ("a@exa_mple.org", "not a valid domain"),
        ("a@10.0.0.1", "not a valid domain"),
        ("x" * 65 + "@example.org", "longer than 64"),
        ("a@" + ".".join(c * 63 for c in "bcde") + ".org", "longer than 254"),
    ],
)
def test_unusable_addresses_say_why(value: str | None, why: str) -> None:
    problem = address_problem(value)
    assert problem is not None and why in problem
    assert usable_address(value) is None


def test_a_non_ascii_domain_is_sent_in_its_idna_form() -> None:
    assert usable_address("anne@bücher.example") == "anne@xn--bcher-kva.example"
