"""The account changes that no source's read asks for: an administrator's archive, reactivation
and resend, an expiry, a SCIM DELETE, and the person's own activation. Each is an `AccountPlan`
for `provision/apply`, and each is refused through the lifecycle table (`core/lifecycle.py`),
never by an `if` of its own: an action the table has no transition for is an `ActionRefused`
naming the account and its state.
"""

from __future__ import annotations

from bridge.core.lifecycle import TRANSITIONS, Event, Status
from bridge.core.plan import (
    AccountPlan,
    AccountState,
    Activate,
    Change,
    Reactivate,
    ResendActivation,
    archive_plan,
    plan_without_source,
    was_replaced,
)
from bridge.errors import BridgeError

SCIM_DELETE_REASON = "deleted by the SCIM client"


class ActionRefused(BridgeError):
    """The account's state has no transition for the action asked (archive an archived account)."""


def _refuse_unless(account: AccountState, event: Event, why: str) -> None:
    if (account.status, event) not in TRANSITIONS:
        raise ActionRefused(f"{account.user_name} {why}")


def archive(account: AccountState, *, actor: str, reason: str | None = None, seat_before: bool = False) -> AccountPlan:
    """Archive by hand or by expiry: every role revoked, the denials kept (the account may come
    back). The caller sets the admin hold that keeps a source from bringing it back."""
    _refuse_unless(account, Event.ARCHIVE, "is already archived")
    return archive_plan(
        account, reason=reason or f"archived by {actor}", denied=account.denied, seat_before=seat_before
    )


def scim_delete(account: AccountState, *, seat_before: bool = False) -> AccountPlan | None:
    """SCIM DELETE archives like a directory leaver (no admin hold: the person is gone from the
    source). An account archived already is left as it is: DELETE is idempotent for the client."""
    if (account.status, Event.ARCHIVE) not in TRANSITIONS:
        return None
    return archive_plan(account, reason=SCIM_DELETE_REASON, denied=account.denied, seat_before=seat_before)


def _manual(account: AccountState, change: Change, after: Status) -> AccountPlan:
    return plan_without_source(account, [change], after, denied=account.denied)


def reactivate(account: AccountState, *, actor: str) -> AccountPlan:
    """archived -> no_access; the rules then apply again (the caller re-plans the person)."""
    _refuse_unless(account, Event.REACTIVATE, f"is {account.status.value}, not archived")
    if was_replaced(account):
        # Not a state the table knows: the account has no identity left (a rename under
        # `recreate` gave it to the new account), so back to life it would be nobody's.
        raise ActionRefused(f"{account.user_name} was replaced by a new account when renamed; act on that one")
    target = TRANSITIONS[(account.status, Event.REACTIVATE)].target
    return _manual(account, Reactivate(reason=f"reactivated by {actor}"), Status(target))


def resend_activation(account: AccountState, *, actor: str) -> AccountPlan:
    """A new activation mail (a new link, the older ones dead at once)."""
    _refuse_unless(
        account,
        Event.RESEND_ACTIVATION,
        f"is {account.status.value}; only pending accounts have an activation to resend",
    )
    return _manual(account, ResendActivation(reason=f"resent by {actor}"), account.status)


def activate(account: AccountState, *, password: bool) -> AccountPlan:
    """pending -> active: the person used their activation link (and set a password, unless the
    tenant signs in by SSO). The roles stay as they are; so does the seat (pending holds one)."""
    _refuse_unless(account, Event.ACTIVATE, f"is {account.status.value}, not waiting for activation")
    target = Status(TRANSITIONS[(account.status, Event.ACTIVATE)].target)
    plan = _manual(account, Activate(password=password), target)
    plan.roles_after = account.roles
    plan.status_before_suspend = account.status_before_suspend
    return plan
