"""The SCIM guard's rules (issue 17): what deprovisions, when the window is past its limit, and
the tenant keys' checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.core.guard import allowed, deprovisions, over_limit
from bridge.core.lifecycle import Event, Status
from bridge.core.plan import AccountPlan, Archive, Change, GrantRoles, RevokeRoles, Suspend, UpdateAttributes
from bridge.errors import ConfigError


def _plan(*changes: Change, account_id: str | None = "a1") -> AccountPlan:
    return AccountPlan(
        anchor="a1",
        source="scim",
        account_id=account_id,
        user_name="alice",
        before=Status.ACTIVE,
        after=Status.ACTIVE,
        status_before_suspend=None,
        roles_after=frozenset(),
        changes=list(changes),
        granted={},
        denied={},
        user=None,
        identity_changed=True,
        seat_before=False,
        seat_after=False,
        user_type="internal",
    )


def test_suspension_archive_and_losing_every_role_deprovision() -> None:
    assert deprovisions(_plan(Suspend()))
    assert deprovisions(_plan(RevokeRoles(roles=("Admin",), event=None), Archive()))
    assert deprovisions(_plan(RevokeRoles(roles=("Admin",), event=Event.REVOKE_ALL_ROLES)))
    # Losing one role of several, a rename, a new account: not a deprovisioning.
    assert not deprovisions(_plan(RevokeRoles(roles=("Admin",), event=None)))
    assert not deprovisions(_plan(UpdateAttributes(fields={"email": ("a", "b")})))
    assert not deprovisions(_plan(GrantRoles(roles={"Admin": "r"}, event=Event.GRANT_ROLES), account_id=None))


@pytest.mark.parametrize(
    ("count", "live", "held"),
    [(10, 100, False), (11, 100, True), (5, 20, False), (6, 20, True), (5, 0, False), (6, 0, True), (10, 95, True)],
)
def test_the_window_holds_past_both_the_fraction_and_the_minimum(count: int, live: int, held: bool) -> None:
    assert over_limit(count, live, 0.10, 5) is held


def test_allowed_is_the_larger_of_the_fraction_and_the_minimum() -> None:
    assert allowed(100, 0.10, 5) == 10 and allowed(20, 0.10, 5) == 5 and allowed(1000, 0.0, 0) == 0


def _tenant(keys: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(f'[[tenants]]\nname = "t"\n{keys}')


def test_the_tenant_keys_have_defaults_and_refuse_bad_values() -> None:
    settings = parse_config(_tenant(""), Path("b.toml")).tenant_settings("t")
    assert (
        settings.scim_deprovision_limit,
        settings.scim_deprovision_minimum,
        settings.scim_deprovision_window_minutes,
    ) == (0.10, 5, 60)
    settings = parse_config(_tenant("scim_deprovision_limit = 1\n"), Path("b.toml")).tenant_settings("t")
    assert settings.scim_deprovision_limit == 1.0
    for keys, key in [
        ("scim_deprovision_limit = 1.5", "scim_deprovision_limit"),
        ('scim_deprovision_limit = "10%"', "scim_deprovision_limit"),
        ("scim_deprovision_minimum = -1", "scim_deprovision_minimum"),
        ("scim_deprovision_window_minutes = 0", "scim_deprovision_window_minutes"),
        ("scim_deprovision_window_minutes = 1.5", "scim_deprovision_window_minutes"),
    ]:
        with pytest.raises(ConfigError, match=rf"tenants\[1\]\.{key}"):
            parse_config(_tenant(keys + "\n"), Path("b.toml"))
