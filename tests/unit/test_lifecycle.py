import itertools

import pytest

from bridge.core.lifecycle import TRANSITIONS, Event, InvalidTransition, Status, apply_event, is_seat

ALLOWED = {
    (Status.NO_ACCESS, Event.GRANT_ROLES): (Status.PENDING, True),
    (Status.NO_ACCESS, Event.SUSPEND): (Status.SUSPENDED, False),
    (Status.NO_ACCESS, Event.ARCHIVE): (Status.ARCHIVED, False),
    (Status.PENDING, Event.ACTIVATE): (Status.ACTIVE, False),
    (Status.PENDING, Event.REVOKE_ALL_ROLES): (Status.NO_ACCESS, False),
    (Status.PENDING, Event.RESEND_ACTIVATION): (Status.PENDING, True),
    (Status.PENDING, Event.SUSPEND): (Status.SUSPENDED, False),
    (Status.PENDING, Event.ARCHIVE): (Status.ARCHIVED, False),
    (Status.ACTIVE, Event.REVOKE_ALL_ROLES): (Status.NO_ACCESS, False),
    (Status.ACTIVE, Event.SUSPEND): (Status.SUSPENDED, False),
    (Status.ACTIVE, Event.ARCHIVE): (Status.ARCHIVED, False),
    (Status.SUSPENDED, Event.ARCHIVE): (Status.ARCHIVED, False),
    (Status.ARCHIVED, Event.REACTIVATE): (Status.NO_ACCESS, False),
}


@pytest.mark.parametrize(("state", "event"), sorted(ALLOWED, key=str))
def test_allowed_transition(state: Status, event: Event) -> None:
    assert apply_event(state, event) == ALLOWED[(state, event)]


REFUSED = [
    (s, e)
    for s, e in itertools.product(Status, Event)
    if (s, e) not in ALLOWED and (s, e) != (Status.SUSPENDED, Event.RESUME)
]


@pytest.mark.parametrize(("state", "event"), REFUSED, ids=[f"{s.value}-{e.value}" for s, e in REFUSED])
def test_refused_transition_raises(state: Status, event: Event) -> None:
    with pytest.raises(InvalidTransition):
        apply_event(state, event)


def test_table_has_exactly_the_documented_transitions() -> None:
    assert set(TRANSITIONS) == set(ALLOWED) | {(Status.SUSPENDED, Event.RESUME)}


@pytest.mark.parametrize("previous", [Status.NO_ACCESS, Status.PENDING, Status.ACTIVE])
def test_resume_returns_to_the_state_before_suspension(previous: Status) -> None:
    assert apply_event(Status.SUSPENDED, Event.RESUME, previous) == (previous, False)


def test_resume_without_a_known_previous_state_grants_nothing() -> None:
    assert apply_event(Status.SUSPENDED, Event.RESUME, None) == (Status.NO_ACCESS, False)


def test_archived_person_cannot_be_activated_directly() -> None:
    with pytest.raises(InvalidTransition, match="archived"):
        apply_event(Status.ARCHIVED, Event.ACTIVATE)


def test_seats() -> None:
    assert is_seat(Status.PENDING, True)
    assert is_seat(Status.ACTIVE, True)
    assert is_seat(Status.SUSPENDED, True)
    assert not is_seat(Status.SUSPENDED, True, suspended_counts=False)
    assert not is_seat(Status.ACTIVE, False)
    assert not is_seat(Status.NO_ACCESS, True)
    assert not is_seat(Status.ARCHIVED, True)
