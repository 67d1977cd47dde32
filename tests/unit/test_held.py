"""Held plans' pure part: a plan written down and read back is the same plan, and the digest of
what a plan was computed from changes with each thing it depends on."""

from dataclasses import replace

from bridge.core.held import account_plan_to_json, inputs_digest, main_change, plan_from_json, plan_header
from bridge.core.lifecycle import Status
from bridge.core.model import SourceUser
from bridge.core.plan import AccountState, Subject, Usage, build_plan
from tests.unit.test_plan import ADMINS, EXTERNAL, MAPPING, NOW, STAFF, subject


def account(name: str, status: Status, roles: frozenset[str], **extra: object) -> AccountState:
    return AccountState(
        id=f"id-{name}",
        anchor=f"a-{name}",
        source="dir",
        user_name=name,
        email=f"{name}@example.org",
        given_name=None,
        family_name=None,
        display_name=None,
        status=status,
        status_before_suspend=None,
        roles=roles,
        user_type="internal",
        **extra,  # type: ignore[arg-type]
    )


def sample() -> tuple[list[Subject], dict[str, AccountState]]:
    renamed = SourceUser(
        anchor="a-bob",
        user_name="bob",
        email="bob.new@example.org",
        attributes={"department": ("Finance",)},
        groups=("g-staff",),
    )
    subjects = [
        subject("alice", STAFF, ADMINS),
        Subject(user=renamed, groups=(STAFF,)),
        subject("carol", STAFF, active=False),
        subject("xena", EXTERNAL),
    ]
    accounts = {
        "a-bob": account("bob", Status.PENDING, frozenset({"staff"})),
        "a-carol": account("carol", Status.ACTIVE, frozenset({"staff"})),
        "a-dan": account("dan", Status.ACTIVE, frozenset({"staff", "admin"})),
        "a-erin": account("erin", Status.SUSPENDED, frozenset()),
    }
    return subjects, accounts


def test_a_plan_read_back_is_the_same_plan() -> None:
    subjects, accounts = sample()
    plan = build_plan("dir", subjects, accounts, MAPPING, now=NOW, seat_limit=None, complete_scope=True)
    kinds = {c.kind for a in plan.accounts for c in a.changes}
    assert {"create", "update", "grant_roles", "revoke_roles", "suspend", "archive"} <= kinds
    again = plan_from_json(plan_header(plan), [account_plan_to_json(a) for a in plan.accounts])
    assert again == plan
    assert again.counts() == plan.counts() and again.seat_delta == plan.seat_delta


def test_the_review_names_the_archive_of_a_leaver() -> None:
    subjects, accounts = sample()
    plan = build_plan("dir", subjects, accounts, MAPPING, now=NOW, seat_limit=None, complete_scope=True)
    dan = next(a for a in plan.accounts if a.user_name == "dan")
    assert main_change(dan) == ("archive", "no longer in source")


def test_the_inputs_digest_follows_the_source_the_accounts_and_the_mapping() -> None:
    subjects, accounts = sample()
    digest = inputs_digest(subjects, accounts, Usage(), "m1")
    assert digest == inputs_digest(list(reversed(subjects)), dict(reversed(accounts.items())), Usage(), "m1")
    moved = [subjects[0], replace(subjects[1], groups=(ADMINS,)), *subjects[2:]]
    assert inputs_digest(moved, accounts, Usage(), "m1") != digest
    assert inputs_digest(subjects[1:], accounts, Usage(), "m1") != digest
    archived = {**accounts, "a-dan": replace(accounts["a-dan"], status=Status.ARCHIVED)}
    assert inputs_digest(subjects, archived, Usage(), "m1") != digest
    assert inputs_digest(subjects, accounts, Usage(seats=3), "m1") != digest
    assert inputs_digest(subjects, accounts, Usage(), "m2") != digest
