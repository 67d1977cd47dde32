"""The account lifecycle as one table.

Read it top to bottom: (state, event) -> new state, and whether an activation mail goes out.
Anything not in the table is refused with `InvalidTransition`; a product event (webhook) is
emitted for every transition, so it is not repeated in each row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    NO_ACCESS = "no_access"
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    ARCHIVED = "archived"


class Event(StrEnum):
    GRANT_ROLES = "grant_roles"  # first roles for someone who has none
    REVOKE_ALL_ROLES = "revoke_all_roles"
    ACTIVATE = "activate"  # the person confirmed the activation link
    SUSPEND = "suspend"  # disabled upstream
    RESUME = "resume"  # enabled upstream again: back to the state before suspension
    ARCHIVE = "archive"  # left: out of scope, SCIM DELETE, expiry, or an administrator
    REACTIVATE = "reactivate"  # back in scope after archiving
    RESEND_ACTIVATION = "resend_activation"  # new link (manual, or the address changed)


# Marker for RESUME: the target is whatever state the account had before it was suspended.
PREVIOUS = "previous"


@dataclass(frozen=True, slots=True)
class Transition:
    target: Status | str
    activation_mail: bool = False


TRANSITIONS: dict[tuple[Status, Event], Transition] = {
    # state               event                         -> target            mail
    (Status.NO_ACCESS, Event.GRANT_ROLES): Transition(Status.PENDING, activation_mail=True),
    (Status.NO_ACCESS, Event.SUSPEND): Transition(Status.SUSPENDED),
    (Status.NO_ACCESS, Event.ARCHIVE): Transition(Status.ARCHIVED),
    (Status.PENDING, Event.ACTIVATE): Transition(Status.ACTIVE),
    (Status.PENDING, Event.REVOKE_ALL_ROLES): Transition(Status.NO_ACCESS),
    (Status.PENDING, Event.RESEND_ACTIVATION): Transition(Status.PENDING, activation_mail=True),
    (Status.PENDING, Event.SUSPEND): Transition(Status.SUSPENDED),
    (Status.PENDING, Event.ARCHIVE): Transition(Status.ARCHIVED),
    (Status.ACTIVE, Event.REVOKE_ALL_ROLES): Transition(Status.NO_ACCESS),
    (Status.ACTIVE, Event.SUSPEND): Transition(Status.SUSPENDED),
    (Status.ACTIVE, Event.ARCHIVE): Transition(Status.ARCHIVED),
    (Status.SUSPENDED, Event.RESUME): Transition(PREVIOUS),
    (Status.SUSPENDED, Event.ARCHIVE): Transition(Status.ARCHIVED),
    (Status.ARCHIVED, Event.REACTIVATE): Transition(Status.NO_ACCESS),
}

# States that hold a paid seat when the account has at least one billable role.
SEAT_STATES = frozenset({Status.PENDING, Status.ACTIVE, Status.SUSPENDED})


class InvalidTransition(ValueError):
    def __init__(self, status: Status, event: Event) -> None:
        super().__init__(f"cannot {event.value.replace('_', ' ')} an account that is {status.value}")
        self.status = status
        self.event = event


def apply_event(status: Status, event: Event, previous: Status | None = None) -> tuple[Status, bool]:
    """The state after `event`, and whether an activation mail must be queued.

    `previous` is the state recorded when the account was suspended; RESUME needs it.
    """
    transition = TRANSITIONS.get((status, event))
    if transition is None:
        raise InvalidTransition(status, event)
    if transition.target == PREVIOUS:
        # A suspended account whose previous state was lost resumes as no_access: it never
        # gains access without the planner re-granting roles.
        return (previous or Status.NO_ACCESS), transition.activation_mail
    return Status(transition.target), transition.activation_mail


def is_seat(status: Status, has_billable_role: bool, suspended_counts: bool = True) -> bool:
    if not has_billable_role or status not in SEAT_STATES:
        return False
    return suspended_counts or status is not Status.SUSPENDED
