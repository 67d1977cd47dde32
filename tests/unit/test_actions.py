"""core/actions: the person's activation is a plan refused through the lifecycle table."""

from __future__ import annotations

import pytest

from bridge.core import actions
from bridge.core.lifecycle import Status
from bridge.core.plan import AccountState


def account(status: Status, roles: frozenset[str] = frozenset({"front_desk"})) -> AccountState:
    return AccountState(
        id="a1",
        anchor="anchor-1",
        source="scim",
        user_name="alice",
        email="alice@acme.example",
        given_name="Alice",
        family_name=None,
        display_name=None,
        status=status,
        status_before_suspend=None,
        roles=roles,
        user_type="employee",
        denied={"admin": "seat limit reached"},
    )


def test_activate_moves_pending_to_active_keeping_roles_and_denials() -> None:
    plan = actions.activate(account(Status.PENDING), password=True)
    assert (plan.before, plan.after) == (Status.PENDING, Status.ACTIVE)
    assert [(c.kind, c.reason) for c in plan.changes] == [("activate", "activation link")]
    assert plan.roles_after == frozenset({"front_desk"})
    assert plan.denied == {"admin": "seat limit reached"}


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.PENDING])
def test_activate_is_refused_unless_pending(status: Status) -> None:
    with pytest.raises(actions.ActionRefused, match=f"alice is {status.value}"):
        actions.activate(account(status), password=False)
