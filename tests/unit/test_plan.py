"""The planner: pure, no fixtures. Scenarios read like what an administrator would see."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bridge.core.lifecycle import Status
from bridge.core.mapping import parse_mapping
from bridge.core.model import GroupRef, SourceUser
from bridge.core.plan import (
    AccountPlan,
    AccountState,
    Plan,
    Subject,
    Usage,
    build_plan,
    frees_capacity,
    identity_digest,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STAFF = GroupRef("g-staff", "staff", "cn=staff,ou=groups,dc=example,dc=org")
ADMINS = GroupRef("g-admins", "admins", "cn=admins,ou=groups,dc=example,dc=org")
FREE = GroupRef("g-free", "viewers", "cn=viewers,ou=groups,dc=example,dc=org")
EXTERNAL = GroupRef("g-ext", "contractors", "cn=contractors,ou=groups,dc=example,dc=org")

MAPPING = parse_mapping(
    {
        "roles": {
            "staff": {"title": "Staff"},
            "admin": {"title": "Admin", "max_holders": 2},
            "viewer": {"title": "Viewer", "billable": False, "external_allowed": True},
            "tech": {"title": "Tech", "external_allowed": True},
        },
        "user_type": {"external_groups": ["contractors"], "external_expires_after_days": 7},
        "rules": [
            {"group_name": "staff", "roles": ["staff"]},
            {"group_name": "admins", "roles": ["admin"]},
            {"group_name": "viewers", "roles": ["viewer"]},
            {"group_name": "contractors", "roles": ["tech", "staff"]},
        ],
    },
    "test",
)


def subject(name: str, *groups: GroupRef, active: bool = True, email: str | None = None) -> Subject:
    user = SourceUser(anchor=f"a-{name}", user_name=name, email=email or f"{name}@example.org", active=active)
    return Subject(user=user, groups=groups)


def state_from(account_plan: AccountPlan, subject_: Subject) -> AccountState:
    return AccountState(
        id=account_plan.account_id or f"id-{account_plan.anchor}",
        anchor=account_plan.anchor,
        source="dir",
        user_name=subject_.user.user_name,
        email=subject_.user.email,
        given_name=None,
        family_name=None,
        display_name=None,
        status=account_plan.after,
        status_before_suspend=account_plan.status_before_suspend,
        roles=account_plan.roles_after,
        user_type=account_plan.user_type,
        identity_digest=identity_digest(subject_.user),
        denied=dict(account_plan.denied) or None,
    )


def plan(subjects: list[Subject], accounts: dict[str, AccountState] | None = None, **kw: object) -> Plan:
    options: dict[str, object] = {"now": NOW, "seat_limit": None, "complete_scope": True}
    options.update(kw)
    return build_plan("dir", subjects, accounts or {}, MAPPING, **options)  # type: ignore[arg-type]


def converge(
    subjects: list[Subject], accounts: dict[str, AccountState] | None = None, **kw: object
) -> tuple[Plan, dict[str, AccountState]]:
    """Plan, then 'apply' by rebuilding states from the plan (what apply writes)."""
    accounts = dict(accounts or {})
    result = plan(subjects, accounts, **kw)
    by_anchor = {s.user.anchor: s for s in subjects}
    for account_plan in result.accounts:
        if account_plan.user is None:  # a leaver: only status and roles change
            old = accounts[account_plan.anchor]
            accounts[account_plan.anchor] = replace(old, status=account_plan.after, roles=frozenset())
        else:
            accounts[account_plan.anchor] = state_from(account_plan, by_anchor[account_plan.anchor])
    return result, accounts


def kinds(p: Plan, name: str) -> list[str]:
    return [c.kind for a in p.accounts if a.user_name == name for c in a.changes]


def test_new_person_with_roles_is_created_pending_with_activation() -> None:
    p = plan([subject("alice", STAFF)])
    (account,) = p.accounts
    assert kinds(p, "alice") == ["create", "grant_roles"]
    assert account.after is Status.PENDING and account.roles_after == {"staff"}
    assert account.changes[1].event is not None  # the GRANT_ROLES event that queues the mail
    assert p.counts()["created"] == 1 and p.seat_delta == 1


def test_person_matching_no_rule_is_a_no_access_collaborator() -> None:
    p = plan([subject("bob")])
    assert kinds(p, "bob") == ["create"]
    assert p.accounts[0].after is Status.NO_ACCESS and p.seat_delta == 0


def test_applying_the_same_plan_twice_changes_nothing() -> None:
    subjects = [subject("alice", STAFF), subject("bob"), subject("carol", ADMINS, STAFF)]
    _, accounts = converge(subjects)
    again = plan(subjects, accounts)
    assert again.accounts == []
    assert again.counts()["unchanged"] == 3


def test_leaver_is_archived_with_roles_revoked() -> None:
    _, accounts = converge([subject("alice", STAFF), subject("bob", STAFF)])
    p = plan([subject("alice", STAFF)], accounts)
    assert kinds(p, "bob") == ["revoke_roles", "archive"]
    assert p.counts()["archived"] == 1 and p.seat_delta == -1


def test_partial_read_archives_nobody() -> None:
    _, accounts = converge([subject("alice", STAFF), subject("bob", STAFF)])
    p = plan([subject("alice", STAFF)], accounts, complete_scope=False)
    assert p.accounts == []


def test_archived_person_returning_is_no_access_then_pending_again() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    _, accounts = converge([], accounts)
    assert accounts["a-alice"].status is Status.ARCHIVED
    p = plan([subject("alice", STAFF)], accounts)
    assert kinds(p, "alice") == ["reactivate", "grant_roles"]
    assert p.accounts[0].after is Status.PENDING
    assert p.counts()["reactivated"] == 1


def test_archived_by_an_administrator_stays_archived_while_in_source() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    accounts["a-alice"] = replace(accounts["a-alice"], status=Status.ARCHIVED, roles=frozenset(), admin_hold=True)
    p = plan([subject("alice", STAFF)], accounts)
    assert p.accounts == [] and p.counts()["unchanged"] == 1


def test_disabled_upstream_suspends_and_enabling_resumes_previous_state() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    accounts["a-alice"] = replace(accounts["a-alice"], status=Status.ACTIVE)
    p, accounts = converge([subject("alice", STAFF, active=False)], accounts)
    assert kinds(p, "alice") == ["suspend"]
    assert accounts["a-alice"].status is Status.SUSPENDED
    assert accounts["a-alice"].status_before_suspend is Status.ACTIVE
    p, accounts = converge([subject("alice", STAFF)], accounts)
    assert kinds(p, "alice") == ["resume"] and accounts["a-alice"].status is Status.ACTIVE


def test_roles_lost_while_suspended_resume_to_no_access() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    accounts["a-alice"] = replace(accounts["a-alice"], status=Status.ACTIVE)
    _, accounts = converge([subject("alice", active=False)], accounts)
    assert accounts["a-alice"].status_before_suspend is Status.NO_ACCESS
    p, accounts = converge([subject("alice")], accounts)
    assert accounts["a-alice"].status is Status.NO_ACCESS and kinds(p, "alice") == ["resume"]


def test_all_roles_revoked_goes_back_to_no_access() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    p = plan([subject("alice")], accounts)
    assert kinds(p, "alice") == ["revoke_roles"] and p.accounts[0].after is Status.NO_ACCESS


def test_changed_email_while_pending_resends_activation() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    p = plan([subject("alice", STAFF, email="alice.new@example.org")], accounts)
    assert kinds(p, "alice") == ["update", "resend_activation"]


def test_changed_email_while_active_does_not_resend() -> None:
    _, accounts = converge([subject("alice", STAFF)])
    accounts["a-alice"] = replace(accounts["a-alice"], status=Status.ACTIVE)
    assert kinds(plan([subject("alice", STAFF, email="new@example.org")], accounts), "alice") == ["update"]


def test_max_holders_admits_newcomers_in_user_name_order() -> None:
    p = plan([subject("zoe", ADMINS), subject("bob", ADMINS), subject("amy", ADMINS)])
    by_name = {a.user_name: a for a in p.accounts}
    assert "admin" in by_name["amy"].roles_after and "admin" in by_name["bob"].roles_after
    assert by_name["zoe"].denied == {"admin": "max_holders"} and by_name["zoe"].after is Status.NO_ACCESS


def test_max_holders_existing_holders_keep_their_role() -> None:
    _, accounts = converge([subject("yan", ADMINS), subject("zoe", ADMINS)])
    p = plan([subject("amy", ADMINS), subject("yan", ADMINS), subject("zoe", ADMINS)], accounts)
    by_name = {a.user_name: a for a in p.accounts}
    assert by_name["amy"].denied == {"admin": "max_holders"}
    assert "yan" not in by_name and "zoe" not in by_name  # unchanged


def test_max_holders_counts_holders_outside_the_plan() -> None:
    p = plan([subject("amy", ADMINS)], usage=Usage(holders={"admin": 2}), complete_scope=False)
    assert p.accounts[0].denied == {"admin": "max_holders"}


def test_seat_limit_leaves_the_extra_person_no_access_with_reason() -> None:
    p = plan([subject("carl", STAFF), subject("anna", STAFF), subject("bert", STAFF)], seat_limit=2)
    by_name = {a.user_name: a for a in p.accounts}
    assert by_name["anna"].after is Status.PENDING and by_name["bert"].after is Status.PENDING
    assert by_name["carl"].after is Status.NO_ACCESS and by_name["carl"].denied == {"staff": "seat_limit"}
    assert p.seat_delta == 2
    assert ("carl", "staff", "seat_limit") in p.denials()


def test_seat_limit_never_takes_a_seat_from_its_holder() -> None:
    _, accounts = converge([subject("zed", STAFF)])
    p = plan([subject("amy", STAFF), subject("zed", STAFF)], accounts, seat_limit=1)
    assert [a.user_name for a in p.accounts] == ["amy"]
    assert p.accounts[0].denied == {"staff": "seat_limit"}


def test_seat_limit_still_grants_non_billable_roles() -> None:
    p = plan([subject("amy", STAFF, FREE)], seat_limit=0)
    (account,) = p.accounts
    assert account.roles_after == {"viewer"} and account.denied == {"staff": "seat_limit"}
    assert account.seat_after is False


def test_seats_used_outside_the_plan_count() -> None:
    p = plan([subject("amy", STAFF)], seat_limit=3, usage=Usage(seats=3), complete_scope=False)
    assert p.accounts[0].denied == {"staff": "seat_limit"}


def test_external_account_gets_allowed_roles_and_an_expiry() -> None:
    p = plan([subject("ext", EXTERNAL)])
    (account,) = p.accounts
    assert account.user_type == "external" and account.roles_after == {"tech"}
    assert account.denied == {"staff": "external_not_allowed"}
    create = account.changes[0]
    assert create.kind == "create" and create.expires_at == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("order", [0, 1])
def test_outcome_does_not_depend_on_source_order(order: int) -> None:
    subjects = [subject("b", STAFF), subject("a", STAFF), subject("c", STAFF)]
    if order:
        subjects.reverse()
    p = plan(subjects, seat_limit=1)
    assert {a.user_name for a in p.accounts if a.after is Status.PENDING} == {"a"}


def test_a_new_denial_is_planned_even_when_nothing_else_changes() -> None:
    # A known person joins the admins while both slots are taken (over SCIM: a group PATCH):
    # no role, no status change, but the denial must be stored for explain and for the day a
    # slot frees up.
    _, accounts = converge([subject("amy", STAFF)])
    p = plan([subject("amy", STAFF, ADMINS)], accounts, usage=Usage(holders={"admin": 2}), complete_scope=False)
    (amy,) = p.accounts
    assert amy.changes == [] and amy.denied == {"admin": "max_holders"} and amy.denied_changed
    assert p.counts()["unchanged"] == 1
    # Stored, it is no change any more; lifted, it is one again.
    _, accounts = converge([subject("amy", STAFF, ADMINS)], accounts, usage=Usage(holders={"admin": 2}))
    assert plan([subject("amy", STAFF, ADMINS)], accounts, usage=Usage(holders={"admin": 2})).accounts == []
    lifted = plan([subject("amy", STAFF, ADMINS)], accounts, usage=Usage(holders={"admin": 1}))
    assert lifted.accounts[0].denied == {} and [c.kind for c in lifted.accounts[0].changes] == ["grant_roles"]


def test_seat_limit_denial_of_an_unchanged_person_is_planned() -> None:
    _, accounts = converge([subject("bert", FREE)])
    p = plan([subject("bert", FREE, STAFF)], accounts, seat_limit=0)
    (bert,) = p.accounts
    assert bert.denied == {"staff": "seat_limit"} and bert.denied_changed
    assert [c.kind for c in bert.changes] == [] and p.seat_refused == ("bert",)


def test_frees_capacity_when_a_limited_or_billable_role_or_a_seat_goes() -> None:
    _, accounts = converge([subject("amy", ADMINS), subject("bob", FREE)])
    gone = plan([subject("bob", FREE)], accounts)
    by_name = {a.user_name: a for a in gone.accounts}
    assert frees_capacity(by_name["amy"], MAPPING)  # archived: admin and staff-less seat given up
    viewer_only = plan([subject("amy", ADMINS), subject("bob")], accounts)
    assert not frees_capacity({a.user_name: a for a in viewer_only.accounts}["bob"], MAPPING)
