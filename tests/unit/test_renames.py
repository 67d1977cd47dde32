"""Renames under `user_name_changes = "recreate"` (issue 19): the planner's side, pure."""

from dataclasses import replace

from bridge.core.held import account_plan_from_json, account_plan_to_json, main_change
from bridge.core.lifecycle import Status
from bridge.core.plan import Create, Recreate
from tests.unit.test_plan import STAFF, converge, plan, subject


def renamed(name: str, new_name: str) -> tuple:
    first = subject(name, STAFF)
    _, accounts = converge([first])
    moved = replace(first, user=replace(first.user, user_name=new_name))
    return accounts, moved


def test_a_rename_under_recreate_plans_the_old_account_archived_and_a_new_one() -> None:
    accounts, moved = renamed("bob", "robert")
    old = accounts["a-bob"]
    result = plan([moved], accounts, recreate_renamed=True)
    [account] = result.accounts
    assert [c.kind for c in account.changes] == ["recreate", "create", "grant_roles"]
    recreate = account.changes[0]
    assert isinstance(recreate, Recreate)
    assert (recreate.replaces, recreate.old_user_name, recreate.old_status) == (old.id, "bob", old.status)
    assert recreate.old_roles == ("staff",) and recreate.reason == "renamed"
    assert isinstance(account.changes[1], Create) and account.changes[1].reason == "renamed from bob"
    assert account.account_id is None and account.before is None and account.after is Status.PENDING
    counts = result.counts()
    assert (counts["created"], counts["archived"], counts["updated"]) == (1, 1, 0)
    assert result.archives == 1  # the deletion threshold counts it
    assert result.seat_delta == 0  # one seat freed, one taken
    assert main_change(account) == ("recreate", "renamed")


def test_by_default_a_rename_is_an_update() -> None:
    accounts, moved = renamed("bob", "robert")
    [account] = plan([moved], accounts).accounts
    assert [c.kind for c in account.changes] == ["update"]
    assert account.account_id == accounts["a-bob"].id


def test_a_change_of_case_is_no_rename() -> None:
    accounts, moved = renamed("bob", "Bob")
    [account] = plan([moved], accounts, recreate_renamed=True).accounts
    assert [c.kind for c in account.changes] == ["update"]


def test_the_renamed_person_is_admitted_as_a_newcomer() -> None:
    # The seat of "bob" is given up; "robert" waits behind "amy", who comes first by userName.
    accounts, moved = renamed("bob", "robert")
    amy = subject("amy", STAFF)
    result = plan([moved, amy], accounts, recreate_renamed=True, seat_limit=1)
    by_name = {a.user_name: a for a in result.accounts}
    assert by_name["amy"].after is Status.PENDING
    robert = by_name["robert"]
    assert robert.after is Status.NO_ACCESS and robert.denied == {"staff": "seat_limit"}
    assert robert.seat_before and not robert.seat_after


def test_an_archived_account_renamed_on_return_is_replaced_without_a_second_archive() -> None:
    accounts, moved = renamed("bob", "robert")
    gone = plan([], accounts)
    _, accounts = converge([], accounts)
    assert gone.archives == 1 and accounts["a-bob"].status is Status.ARCHIVED
    result = plan([moved], accounts, recreate_renamed=True)
    [account] = result.accounts
    assert [c.kind for c in account.changes] == ["recreate", "create", "grant_roles"]
    counts = result.counts()
    assert result.archives == 0 and (counts["archived"], counts["created"], counts["reactivated"]) == (0, 1, 0)


def test_a_held_rename_round_trips() -> None:
    accounts, moved = renamed("bob", "robert")
    [account] = plan([moved], accounts, recreate_renamed=True).accounts
    assert account_plan_from_json(account_plan_to_json(account)) == account
