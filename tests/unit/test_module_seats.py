"""Seats per module (issue 19): a product billing by module. Pure, no fixtures."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bridge.core.held import account_plan_from_json, account_plan_to_json, plan_from_json, plan_header
from bridge.core.lifecycle import Status
from bridge.core.mapping import parse_mapping
from bridge.core.model import GroupRef, SourceUser
from bridge.core.plan import (
    AccountPlan,
    AccountState,
    Plan,
    Subject,
    Usage,
    archive_plan,
    build_plan,
    frees_capacity,
    identity_digest,
    is_seat_denial,
    lifts_with_capacity,
    module_seats_held,
)
from bridge.errors import ConfigError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SALES = GroupRef("g-sales", "sales", None)
SALES_LEADS = GroupRef("g-leads", "sales-leads", None)
HR = GroupRef("g-hr", "hr", None)
ADMINS = GroupRef("g-admins", "admins", None)
READERS = GroupRef("g-readers", "readers", None)
OFFICE = GroupRef("g-office", "office", None)


def mapping(crm: int | None = None, payroll: int | None = None, **roles: dict[str, object]) -> object:
    modules: dict[str, dict[str, object]] = {"crm": {"title": "CRM"}, "payroll": {"title": "Payroll"}}
    if crm is not None:
        modules["crm"]["seat_limit"] = crm
    if payroll is not None:
        modules["payroll"]["seat_limit"] = payroll
    return parse_mapping(
        {
            "modules": modules,
            "roles": {
                "crm_user": {"title": "CRM user", "module": "crm"},
                "crm_manager": {"title": "CRM manager", "module": "crm"},
                "crm_reader": {"title": "CRM reader", "module": "crm", "billable": False},
                "payroll_clerk": {"title": "Payroll clerk", "module": "payroll"},
                "administrator": {"title": "Administrator", "all_modules": True},
                "office": {"title": "Office"},  # billable, in no module: the tenant's pool only
                **roles,
            },
            "rules": [
                {"group_name": "sales", "roles": ["crm_user"]},
                {"group_name": "sales-leads", "roles": ["crm_manager"]},
                {"group_name": "readers", "roles": ["crm_reader"]},
                {"group_name": "hr", "roles": ["payroll_clerk"]},
                {"group_name": "admins", "roles": ["administrator"]},
                {"group_name": "office", "roles": ["office"]},
            ],
        },
        "mappings/test.toml",
    )


def subject(name: str, *groups: GroupRef, active: bool = True) -> Subject:
    user = SourceUser(anchor=f"a-{name}", user_name=name, email=f"{name}@example.org", active=active)
    return Subject(user=user, groups=groups)


def plan(subjects: list[Subject], m: object, accounts: dict[str, AccountState] | None = None, **kw: object) -> Plan:
    options: dict[str, object] = {"now": NOW, "seat_limit": None, "complete_scope": True}
    options.update(kw)
    return build_plan("dir", subjects, accounts or {}, m, **options)  # type: ignore[arg-type]


def applied(
    p: Plan, subjects: list[Subject], accounts: dict[str, AccountState] | None = None
) -> dict[str, AccountState]:
    """The accounts as apply leaves them."""
    out = dict(accounts or {})
    by_anchor = {s.user.anchor: s for s in subjects}
    for a in p.accounts:
        old = out.get(a.anchor)
        if a.user is None:
            assert old is not None
            out[a.anchor] = replace(old, status=a.after, roles=frozenset(), denied=dict(a.denied) or None)
            continue
        out[a.anchor] = _state(a, by_anchor[a.anchor])
    return out


def _state(a: AccountPlan, s: Subject) -> AccountState:
    return AccountState(
        id=a.account_id or f"id-{a.anchor}",
        anchor=a.anchor,
        source="dir",
        user_name=s.user.user_name,
        email=s.user.email,
        given_name=None,
        family_name=None,
        display_name=None,
        status=a.after,
        status_before_suspend=a.status_before_suspend,
        roles=a.roles_after,
        user_type=a.user_type,
        identity_digest=identity_digest(s.user),
        denied=dict(a.denied) or None,
    )


def by_name(p: Plan) -> dict[str, AccountPlan]:
    return {a.user_name: a for a in p.accounts}


# ---- the mapping ----------------------------------------------------------------------------


def test_roles_of_one_module_are_one_seat_and_an_administrator_a_seat_in_each() -> None:
    m = mapping()
    assert m.seat_modules(["crm_user", "crm_manager"]) == {"crm"}
    assert m.seat_modules(["administrator"]) == {"crm", "payroll"}
    assert m.seat_modules(["crm_reader", "office"]) == frozenset()  # not billable / in no module
    assert m.seat_modules(["crm_user", "payroll_clerk"]) == {"crm", "payroll"}


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"roles": {"r": {"module": "crm"}}}, "roles.r.module", 'module "crm" is not defined in [modules]'),
        (
            {"modules": {"crm": {}}, "roles": {"r": {"module": "erp"}}},
            "roles.r.module",
            'module "erp" is not defined',
        ),
        ({"roles": {"r": {"all_modules": True}}}, "roles.r.all_modules", "no [modules] are defined"),
        (
            {"modules": {"crm": {}}, "roles": {"r": {"module": "crm", "all_modules": True}}},
            "roles.r.all_modules",
            "not both",
        ),
        ({"modules": {"crm": {"seat_limit": -1}}, "roles": {"r": {}}}, "modules.crm.seat_limit", "negative"),
        ({"modules": {"crm": {"seat_limit": True}}, "roles": {"r": {}}}, "modules.crm.seat_limit", "boolean"),
        ({"modules": {"crm": {"seats": 3}}, "roles": {"r": {}}}, "modules.crm.seats", "unknown key"),
        ({"modules": {"c rm": {}}, "roles": {"r": {}}}, "modules.c rm", "letters, digits"),
        ({"modules": {"crm": {}}, "roles": {"r": {"all_modules": "yes"}}}, "roles.r.all_modules", "true or false"),
    ],
)
def test_a_wrong_module_is_a_config_error_naming_file_and_key(data: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mapping(data, "mappings/x.toml")
    assert info.value.origin == "mappings/x.toml" and info.value.key == key
    assert message in str(info.value)


def test_modules_without_limits_change_no_outcome() -> None:
    m = mapping()
    subjects = [subject("amy", SALES), subject("bob", ADMINS), subject("cat", HR, OFFICE)]
    p = plan(subjects, m)
    assert all(a.after is Status.PENDING and not a.denied for a in p.accounts)
    assert p.seat_delta == 3
    assert p.seat_delta_by_module == {"crm": 2, "payroll": 2}
    assert p.seat_refused == () and p.module_refused == {}


# ---- admission --------------------------------------------------------------------------------


def test_a_grant_over_a_modules_limit_is_left_out_with_the_modules_reason() -> None:
    m = mapping(crm=2)
    p = plan([subject("cat", SALES), subject("amy", SALES), subject("bob", SALES, HR)], m)
    got = by_name(p)
    # Newcomers by userName: amy and bob fit, cat waits.
    assert got["amy"].roles_after == {"crm_user"} and got["bob"].roles_after == {"crm_user", "payroll_clerk"}
    assert got["cat"].after is Status.NO_ACCESS and got["cat"].denied == {"crm_user": "seat_limit:crm"}
    assert p.module_refused == {"crm": ("cat",)} and p.seat_refused == ("cat",)
    assert p.seat_delta_by_module == {"crm": 2, "payroll": 1} and p.seat_delta == 2
    assert ("cat", "crm_user", "seat_limit:crm") in p.denials()


def test_a_person_left_out_of_one_module_keeps_the_roles_of_another() -> None:
    m = mapping(crm=0)
    (dan,) = plan([subject("dan", SALES, HR, READERS)], m).accounts
    assert dan.after is Status.PENDING
    # crm_reader is not billable: it takes no CRM seat and stays.
    assert dan.roles_after == {"payroll_clerk", "crm_reader"}
    assert dan.denied == {"crm_user": "seat_limit:crm"}
    assert dan.modules_after == {"payroll"}


def test_several_roles_of_one_module_take_one_seat() -> None:
    m = mapping(crm=1)
    p = plan([subject("amy", SALES, SALES_LEADS), subject("bob", SALES)], m)
    got = by_name(p)
    assert got["amy"].roles_after == {"crm_user", "crm_manager"} and got["amy"].modules_after == {"crm"}
    assert got["bob"].denied == {"crm_user": "seat_limit:crm"}


def test_an_all_modules_role_takes_a_seat_in_each_module() -> None:
    m = mapping(crm=1, payroll=1)
    p = plan([subject("ada", ADMINS), subject("bob", SALES), subject("cy", HR)], m)
    got = by_name(p)
    assert got["ada"].roles_after == {"administrator"} and got["ada"].modules_after == {"crm", "payroll"}
    assert got["bob"].denied == {"crm_user": "seat_limit:crm"}
    assert got["cy"].denied == {"payroll_clerk": "seat_limit:payroll"}
    assert p.seat_delta_by_module == {"crm": 1, "payroll": 1}


def test_an_all_modules_role_waits_when_any_module_is_full() -> None:
    m = mapping(payroll=1)
    p = plan([subject("bob", HR), subject("zoe", ADMINS)], m)
    got = by_name(p)
    assert got["bob"].roles_after == {"payroll_clerk"}
    assert got["zoe"].after is Status.NO_ACCESS and got["zoe"].denied == {"administrator": "seat_limit:payroll"}


def test_holders_keep_their_module_seat() -> None:
    m = mapping(crm=1)
    first = [subject("zed", SALES)]
    accounts = applied(plan(first, m), first)
    p = plan([subject("amy", SALES), subject("zed", SALES)], m, accounts)
    assert [a.user_name for a in p.accounts] == ["amy"]
    assert p.accounts[0].denied == {"crm_user": "seat_limit:crm"}


def test_a_holder_changing_profile_in_a_module_keeps_the_seat() -> None:
    m = mapping(crm=1)
    first = [subject("zed", SALES)]
    accounts = applied(plan(first, m), first)
    p = plan([subject("amy", SALES), subject("zed", SALES_LEADS)], m, accounts)
    got = by_name(p)
    assert got["zed"].roles_after == {"crm_manager"} and not got["zed"].denied
    assert got["amy"].denied == {"crm_user": "seat_limit:crm"}


def test_module_seats_held_outside_the_plan_count() -> None:
    m = mapping(crm=3)
    p = plan([subject("amy", SALES)], m, usage=Usage(module_seats={"crm": 3}), complete_scope=False)
    assert p.accounts[0].denied == {"crm_user": "seat_limit:crm"}


@pytest.mark.parametrize("reverse", [False, True])
def test_newcomers_are_admitted_by_user_name_whatever_the_read_order(reverse: bool) -> None:
    m = mapping(crm=2)
    subjects = [subject("Carl", SALES), subject("anna", SALES), subject("Bert", SALES), subject("dora", SALES)]
    if reverse:
        subjects.reverse()
    p = plan(subjects, m)
    assert {a.user_name for a in p.accounts if a.roles_after} == {"anna", "Bert"}
    assert p.module_refused == {"crm": ("Carl", "dora")}


def test_the_tenants_pool_still_holds_beside_the_modules() -> None:
    m = mapping(crm=5)
    p = plan([subject("amy", SALES), subject("bob", OFFICE), subject("cat", SALES)], m, seat_limit=2)
    got = by_name(p)
    assert got["cat"].denied == {"crm_user": "seat_limit"}  # the tenant's pool, not the module
    assert p.seat_refused == ("cat",) and p.module_refused == {"crm": ()}


def test_a_freed_module_seat_goes_to_the_next_person_waiting() -> None:
    m = mapping(crm=1)
    everyone = [subject("amy", SALES), subject("bob", SALES), subject("cat", SALES)]
    accounts = applied(plan(everyone, m), everyone)
    assert accounts["a-bob"].denied == {"crm_user": "seat_limit:crm"}
    # amy leaves sales: her plan frees a CRM seat, which wakes the waiting (replan_waiting) ...
    leaving = plan([subject("amy")], m, accounts, complete_scope=False)
    (amy,) = leaving.accounts
    assert amy.modules_before == {"crm"} and amy.modules_after == frozenset()
    assert frees_capacity(amy, m, seats_limited=False)
    assert leaving.seat_delta_by_module == {"crm": -1, "payroll": 0}
    accounts = applied(leaving, [subject("amy")], accounts)
    # ... and their denial is one a freed seat lifts (live_accounts(waiting_only=True) finds it).
    assert all(lifts_with_capacity(why) for why in accounts["a-bob"].denied.values())
    waiting = [subject("bob", SALES), subject("cat", SALES)]
    outside = Usage(module_seats={"crm": 0})  # amy holds no CRM seat now
    p = plan(waiting, m, {k: accounts[k] for k in ("a-bob", "a-cat")}, usage=outside, complete_scope=False)
    got = by_name(p)
    assert got["bob"].roles_after == {"crm_user"} and not got["bob"].denied  # next by userName
    assert "cat" not in got  # still waiting, unchanged: the denial stored is the same


def test_an_archive_frees_the_module_seats_it_held() -> None:
    m = mapping(crm=1)
    first = [subject("ada", ADMINS)]
    accounts = applied(plan(first, m), first)
    p = plan([], m, accounts)  # ada left the directory
    (ada,) = p.accounts
    assert ada.modules_before == {"crm", "payroll"} and frees_capacity(ada, m, seats_limited=False)
    assert p.seat_delta_by_module == {"crm": -1, "payroll": -1}
    # A manual archive has no modules_before; its revoked role tells.
    manual = archive_plan(accounts["a-ada"], reason="archived by hand")
    assert frees_capacity(manual, m, seats_limited=False)
    # Without any limit nobody waits.
    assert not frees_capacity(manual, mapping(), seats_limited=False)


# ---- suspended accounts ------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [True, False])
def test_a_suspended_account_holds_its_module_seats_as_it_holds_a_tenant_seat(counts: bool) -> None:
    m = mapping(crm=1)
    first = [subject("amy", SALES)]
    accounts = applied(plan(first, m), first)
    p = plan([subject("amy", SALES, active=False)], m, accounts, suspended_counts_as_seat=counts)
    (amy,) = p.accounts
    assert amy.after is Status.SUSPENDED and amy.roles_after == {"crm_user"}
    assert amy.modules_after == ({"crm"} if counts else frozenset())
    accounts = applied(p, [subject("amy", SALES, active=False)], accounts)
    assert module_seats_held(accounts["a-amy"], m, counts) == ({"crm"} if counts else frozenset())
    # bob comes: with suspended seats counted he waits; without, he takes amy's place in the count.
    p = plan([subject("amy", SALES, active=False), subject("bob", SALES)], m, accounts, suspended_counts_as_seat=counts)
    bob = by_name(p)["bob"]
    if counts:
        assert bob.denied == {"crm_user": "seat_limit:crm"}
    else:
        assert bob.roles_after == {"crm_user"} and not bob.denied


# ---- reasons and held plans ------------------------------------------------------------------


def test_module_reasons_are_seat_denials_a_freed_seat_lifts() -> None:
    assert is_seat_denial("seat_limit") and is_seat_denial("seat_limit:crm")
    assert not is_seat_denial("max_holders") and lifts_with_capacity("max_holders")
    assert not lifts_with_capacity("external_not_allowed")


def test_a_held_plan_keeps_its_module_seats() -> None:
    m = mapping(crm=1)
    p = plan([subject("amy", SALES), subject("bob", SALES)], m)
    back = plan_from_json(plan_header(p), [account_plan_to_json(a) for a in p.accounts])
    assert back.modules == p.modules and back.module_refused == p.module_refused
    assert back.seat_delta_by_module == p.seat_delta_by_module
    assert [account_plan_from_json(account_plan_to_json(a)) for a in p.accounts] == p.accounts
