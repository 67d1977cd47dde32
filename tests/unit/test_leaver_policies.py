"""`email_domains` and `archive_after_suspended_days`: the rule and the config checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.core.address import domain_problem
from bridge.errors import ConfigError


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("a@example.org", True),
        ("a@EXAMPLE.org", True),
        ("a@mail.example.org", True),
        ("a@example.org.", True),
        ("a@badexample.org", False),
        ("a@example.com", False),
        ("a@fixit-services.example", False),
    ],
)
def test_an_address_is_inside_a_domain_or_below_it(address: str, inside: bool) -> None:
    assert (domain_problem(address, ("example.org",)) is None) is inside


def test_no_domains_means_no_restriction() -> None:
    assert domain_problem("a@anything.example", ()) is None


def _tenant(keys: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(f'[[tenants]]\nname = "t"\n{keys}')


def test_the_config_folds_the_domains_and_refuses_bad_values() -> None:
    config = parse_config(
        _tenant('email_domains = ["Example.ORG"]\narchive_after_suspended_days = 30\n'), Path("b.toml")
    )
    settings = config.tenant_settings("t")
    assert settings.email_domains == ("example.org",) and settings.archive_after_suspended_days == 30
    with pytest.raises(ConfigError, match=r"tenants\[1\]\.email_domains\[1\]"):
        parse_config(_tenant('email_domains = ["it@example.org"]\n'), Path("b.toml"))
    with pytest.raises(ConfigError, match=r"archive_after_suspended_days"):
        parse_config(_tenant("archive_after_suspended_days = 0\n"), Path("b.toml"))
