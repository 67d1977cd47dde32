"""The sync engine end to end on a real store (SQLite and PostgreSQL), driven through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, text

from bridge.cli import main
from bridge.store.db import make_engine
from bridge.store.tables import Account, AuditEvent, Identity, OutboxMessage, RoleGrant, SyncRun
from tests.conftest import Deployment, stale_held_roles


@pytest.fixture(params=["groups after the plan", "groups beside the plan"])
def group_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a full sync writes groups (bridge/engine/sync.py): the small directory here stays under
    the member count that moves the member rows beside the plan, unless the limit is lowered."""
    if request.param == "groups beside the plan":
        monkeypatch.setattr("bridge.engine.sync._OVERLAP_MIN_MEMBERS", 0)
    return str(request.param)


def feed(d: Deployment) -> list[tuple[int, str, str]]:
    """(position, type, account id) of every feed event, in position order."""
    from bridge.store.tables import AccountEventRow

    engine = make_engine(d.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(AccountEventRow.position, AccountEventRow.payload).order_by("position"))
            return [(p, e["type"], (e.get("account") or {}).get("id", "")) for p, e in rows]
    finally:
        engine.dispose()


def bridge(d: Deployment, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(d.config), *args], catch_exceptions=False)


def sync_json(d: Deployment, *args: str) -> dict[str, Any]:
    result = bridge(d, "sync", "--json", *args)
    return {"exit": result.exit_code, **json.loads(result.stdout.strip().splitlines()[-1])}


def users(d: Deployment) -> dict[str, dict[str, Any]]:
    result = bridge(d, "users", "list", "--json")
    assert result.exit_code == 0, result.output
    return {u["userName"]: u for u in json.loads(result.stdout)}


def table_counts(d: Deployment) -> dict[str, int]:
    engine = make_engine(d.db_url)
    try:
        with engine.connect() as conn:
            assert stale_held_roles(conn) == []  # every sync keeps the seat count's copy right
            return {
                t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (Account, AuditEvent, Identity, OutboxMessage, RoleGrant)
            }
    finally:
        engine.dispose()


def group_state(d: Deployment) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]]]:
    """Stored groups (anchor, name, digest) and memberships (group, member)."""
    from bridge.store.tables import Membership

    engine = make_engine(d.db_url)
    try:
        with engine.connect() as conn:
            groups = conn.execute(
                select(Identity.anchor, Identity.name, Identity.digest).where(Identity.kind == "group")
            )
            members = conn.execute(select(Membership.group_anchor, Membership.member_anchor))
            return {tuple(r) for r in groups}, {tuple(r) for r in members}  # type: ignore[misc]
    finally:
        engine.dispose()


def activation_mails(d: Deployment, user_name: str) -> list[tuple[str, str]]:
    engine = make_engine(d.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(OutboxMessage.status, OutboxMessage.payload)
                .join(Account, Account.id == OutboxMessage.account_id)
                .where(Account.user_name == user_name, OutboxMessage.topic == "activation")
                .order_by(OutboxMessage.id)
            ).all()
            return [(status, payload["to"]) for status, payload in rows]
    finally:
        engine.dispose()


def test_first_sync_creates_pending_accounts_and_collaborators(deployment: Deployment) -> None:
    out = sync_json(deployment)
    assert out["exit"] == 0 and not out["aborted"]
    people = deployment.people()
    assert out["created"] == len(people) == len(users(deployment))
    accounts = users(deployment)
    assert accounts["zbrun"]["status"] == "no_access" and accounts["zbrun"]["roles"] == []
    admin = next(u for u in accounts.values() if "administration" in u["roles"])
    assert admin["status"] == "pending"
    # Nested: admins is a member of managers, so administrators get the managers' role too.
    assert "financial_reports" in admin["roles"] and "managers" in admin["groups"]
    contractors = [u for u in accounts.values() if u["userType"] == "external"]
    assert contractors and all(u["roles"] == ["external_technician"] for u in contractors)
    assert all(u["expires"] for u in contractors)
    locked = [u for u in accounts.values() if u["status"] == "suspended"]
    assert len(locked) == 1
    # One activation mail for each pending account, none for the others.
    counts = table_counts(deployment)
    pending = [u for u in accounts.values() if u["status"] == "pending"]
    assert counts["outbox"] == len(pending)
    # The feed: every account's events, at positions without a gap.
    events = feed(deployment)
    assert [p for p, _, _ in events] == list(range(1, len(events) + 1))
    created = {a for _, t, a in events if t == "account.created"}
    assert created == {u["id"] for u in accounts.values()}
    assert {a for _, t, a in events if t == "account.pending"} == {u["id"] for u in pending}


def test_second_sync_with_no_change_writes_nothing(deployment: Deployment) -> None:
    assert sync_json(deployment)["exit"] == 0
    before = table_counts(deployment)
    again = sync_json(deployment)
    assert again["unchanged"] == len(deployment.people())
    assert all(again[k] == 0 for k in ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated"))
    assert table_counts(deployment) == before


def test_dry_run_prints_the_plan_and_writes_nothing(deployment: Deployment) -> None:
    result = bridge(deployment, "sync", "--dry-run")
    assert result.exit_code == 0
    assert "would change: created" in result.output and "seat delta +" in result.output
    assert "create, grant_roles" in result.output
    assert table_counts(deployment)["accounts"] == 0


def test_leaver_is_archived_and_returns_as_no_access_then_pending_with_a_new_mail(deployment: Deployment) -> None:
    sync_json(deployment)
    person = next(u for u in users(deployment).values() if u["status"] == "pending")["userName"]
    records = deployment.records()
    deployment.remove_people([person])
    out = sync_json(deployment)
    assert out["archived"] == 1
    gone = users(deployment)[person]
    assert gone["status"] == "archived" and gone["roles"] == []
    deployment.write_records(records)
    out = sync_json(deployment)
    assert out["reactivated"] == 1
    back = users(deployment)[person]
    assert back["status"] == "pending" and back["roles"]
    assert len(activation_mails(deployment, person)) == 2
    history = json.loads(bridge(deployment, "users", "show", person, "--json").stdout)["history"]
    assert [h["action"] for h in history][-2:] == ["reactivate", "grant_roles"]
    assert history[-2]["to"] == "no_access" and history[-1]["to"] == "pending"


def test_changed_email_while_pending_supersedes_the_old_activation_mail(deployment: Deployment) -> None:
    sync_json(deployment)
    account = next(u for u in users(deployment).values() if u["status"] == "pending")
    person, old_email = account["userName"], account["email"]
    deployment.edit_person(person, "mail", f"{person}.new@example.org")
    out = sync_json(deployment)
    assert out["updated"] == 1
    assert activation_mails(deployment, person) == [
        ("superseded", old_email),
        ("queued", f"{person}.new@example.org"),
    ]


def test_deletion_threshold_aborts_without_force_and_writes_nothing(deployment: Deployment, group_path: str) -> None:
    sync_json(deployment)
    before = table_counts(deployment)
    groups_before = group_state(deployment)
    people = deployment.people()
    deployment.remove_people(people[: int(len(people) * 0.3)])
    # A group gone too: the aborted run must not remove it (groups are written while the plan is
    # computed, in a transaction that commits only after the checks).
    deployment.write_records([r for r in deployment.records() if not r.startswith("dn: cn=admins,")])
    out = sync_json(deployment)
    assert out["exit"] == 1 and out["aborted"] and "deletion threshold" in out["reason"]
    # Nothing but the held plan and its one audit event (`plan_held`, about no account).
    assert out["held"] and table_counts(deployment) == {**before, "audit_events": before["audit_events"] + 1}
    assert group_state(deployment) == groups_before
    forced = sync_json(deployment, "--force")
    assert forced["exit"] == 0 and forced["archived"] == int(len(people) * 0.3)


def test_aborted_run_says_would_have_and_records_nothing_as_applied(deployment: Deployment) -> None:
    sync_json(deployment)
    people = deployment.people()
    leavers = int(len(people) * 0.3)
    deployment.remove_people(people[:leavers])
    text = bridge(deployment, "sync")
    assert text.exit_code == 1
    assert "nothing written; would have changed: created 0," in text.stdout
    assert f", archived {leavers}," in text.stdout
    assert "): changed:" not in text.stdout
    out = sync_json(deployment)
    assert out["exit"] == 1 and out["aborted"]
    assert out["archived"] == 0 and out["seatDelta"] == 0 and out["planned"]["archived"] == leavers
    last = json.loads(bridge(deployment, "sync", "--history", "--json").stdout)[0]
    assert last["outcome"] == "aborted" and last["counts"].get("archived", 0) == 0
    assert last["planned"]["archived"] == leavers
    table = bridge(deployment, "sync", "--history").stdout.splitlines()[2]
    assert f"0 (would {leavers})" in table
    assert sync_json(deployment, "--force")["archived"] == leavers


def test_forced_run_records_who_overrode_the_threshold_in_the_history_and_the_audit(deployment: Deployment) -> None:
    import getpass

    sync_json(deployment)
    people = deployment.people()
    leavers = int(len(people) * 0.3)
    deployment.remove_people(people[:leavers])
    forced = sync_json(deployment, "--force")
    actor = f"cli:{getpass.getuser()}"
    assert forced["exit"] == 0 and forced["forced"]["actor"] == actor
    last = json.loads(bridge(deployment, "sync", "--history", "--json").stdout)[0]
    assert last["outcome"] == "ok" and last["forced"] == {
        "actor": actor,
        "check": "deletion_threshold",
        "threshold": 0.10,
        "minimum": last["forced"]["minimum"],
        "archives": leavers,
        "accounts": len(people),
    }
    assert f"forced by {actor} (deletion_threshold)" in bridge(deployment, "sync", "--history").stdout
    events = [e for e in json.loads(bridge(deployment, "audit", "--json").stdout) if e["action"] == "sync_forced"]
    assert len(events) == 1 and events[0]["actor"] == actor and events[0]["account"] is None
    assert events[0]["after"]["threshold"] == 0.10 and events[0]["after"]["archives"] == leavers
    assert events[0]["correlationId"] == last["correlationId"]
    assert "deletion threshold overridden" in events[0]["reason"]
    # A --force that overrides nothing leaves no trace of an override.
    assert sync_json(deployment, "--force")["forced"] is None
    assert json.loads(bridge(deployment, "sync", "--history", "--json").stdout)[0]["forced"] is None


def test_empty_directory_read_aborts(deployment: Deployment, group_path: str) -> None:
    sync_json(deployment)
    before = table_counts(deployment)
    groups_before = group_state(deployment)
    live = sum(1 for u in users(deployment).values() if u["status"] != "archived")
    deployment.write_records([r for r in deployment.records() if ",ou=people," not in deployment.dn_of(r)])
    out = sync_json(deployment)
    assert out["exit"] == 1 and "no users" in out["reason"]
    assert out["held"] and table_counts(deployment) == {**before, "audit_events": before["audit_events"] + 1}
    shown = json.loads(bridge(deployment, "plans", "show", out["held"], "--json").stdout)
    assert shown["reason"] == "empty_read" and shown["archived"] == live
    assert group_state(deployment) == groups_before


def test_seat_limit_leaves_latecomers_no_access_with_reason_in_audit(deployment: Deployment) -> None:
    deployment.write_config(seat_limit=5)
    sync_json(deployment)
    accounts = users(deployment).values()
    billable = {"administration", "front_desk", "point_of_sale", "financial_reports", "external_technician"}
    seats = [u for u in accounts if u["status"] in ("pending", "active", "suspended") and billable & set(u["roles"])]
    assert len(seats) == 5
    refused = [u for u in accounts if "seat_limit" in u["leftOut"].values()]
    assert refused
    # They keep the non-billable role and get no paid one.
    assert all(not (billable & set(u["roles"])) for u in refused)
    audit = json.loads(bridge(deployment, "audit", "--json").stdout)
    assert any("seat_limit" in json.dumps(e["after"]) or "seat_limit" in (e["reason"] or "") for e in audit) or refused
    explained = bridge(deployment, "explain", refused[0]["userName"]).output
    assert "seat limit" in explained


def test_seat_limit_refusals_are_counted_in_the_summary_and_named_in_a_dry_run(deployment: Deployment) -> None:
    deployment.write_config(seat_limit=5)
    dry = bridge(deployment, "sync", "--dry-run")
    assert dry.exit_code == 0
    named = next(line for line in dry.stdout.splitlines() if line.startswith("left out by the seat limit: "))
    refused = named.removeprefix("left out by the seat limit: ").split(", ")
    assert refused and refused == sorted(refused, key=str.casefold)
    assert f"seat limit refused {len(refused)};" in dry.stdout
    out = sync_json(deployment)
    assert out["exit"] == 0 and out["seatRefused"] == len(refused)
    left_out = {u["userName"] for u in users(deployment).values() if "seat_limit" in u["leftOut"].values()}
    assert left_out == set(refused)
    # Still refused on the next run, though nothing changes for them: still counted.
    again = sync_json(deployment)
    assert again["seatRefused"] == len(refused) and again["unchanged"] == len(deployment.people())
    assert f"seat limit refused {len(refused)};" in bridge(deployment, "sync").stdout
    last = json.loads(bridge(deployment, "sync", "--history", "--json").stdout)[0]
    assert last["counts"]["seatRefused"] == len(refused)


def test_sync_runs_are_recorded(deployment: Deployment) -> None:
    sync_json(deployment)
    deployment.remove_people(deployment.people()[:20])
    sync_json(deployment)
    history = json.loads(bridge(deployment, "sync", "--history", "--json").stdout)
    assert [h["outcome"] for h in history] == ["aborted", "ok"]
    assert history[1]["counts"]["created"] == 60
    engine = make_engine(deployment.db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(SyncRun)).scalar_one() == 2
    engine.dispose()


def test_entry_that_cannot_be_read_archives_nobody(deployment: Deployment) -> None:
    sync_json(deployment)
    person = deployment.people()[0]
    # The person is still in the directory, but their entry lost its anchor (a broken export).
    deployment.edit_person(person, "entryUUID", None)
    out = sync_json(deployment)
    assert out["exit"] == 0 and out["archived"] == 0
    assert any("nobody is archived" in e for e in out["errors"])
    assert users(deployment)[person]["status"] != "archived"


def test_a_group_gone_from_the_directory_is_removed_on_both_sides_of_its_memberships(
    deployment: Deployment, group_path: str
) -> None:
    from bridge.store.tables import Membership

    sync_json(deployment)
    engine = make_engine(deployment.db_url)
    try:
        with engine.connect() as conn:
            admins = conn.execute(
                select(Identity.anchor).where(Identity.kind == "group", Identity.name == "admins")
            ).scalar_one()
            # Nested: admins is itself a member of managers before it goes.
            assert conn.execute(select(func.count()).where(Membership.member_anchor == admins)).scalar_one() == 1
        records = deployment.records()
        deployment.write_records([r for r in records if not r.startswith("dn: cn=admins,")])
        assert sync_json(deployment)["exit"] == 0
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).where(Identity.anchor == admins)).scalar_one() == 0
            linked = select(func.count()).where(
                (Membership.group_anchor == admins) | (Membership.member_anchor == admins)
            )
            assert conn.execute(linked).scalar_one() == 0
            removed = (
                conn.execute(select(AuditEvent.reason).where(AuditEvent.action == "group_removed")).scalars().all()
            )
            assert removed == ["no longer in source"]
    finally:
        engine.dispose()


def test_a_failure_writing_group_members_writes_nothing(
    deployment: Deployment, group_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.store import identities

    # One member per statement, and the second statement fails: rows were written before it.
    monkeypatch.setattr(identities, "_MEMBERS_PER_STATEMENT", 1)
    real_insert = identities.GroupChanges._insert
    calls = []

    def failing(self: identities.GroupChanges, conn: Any, statement: Any, chunk: dict[str, list[str]]) -> None:
        calls.append(chunk)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        real_insert(self, conn, statement, chunk)

    monkeypatch.setattr(identities.GroupChanges, "_insert", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        bridge(deployment, "sync")
    assert len(calls) == 2
    assert group_state(deployment) == (set(), set())
    assert table_counts(deployment) == dict.fromkeys(table_counts(deployment), 0)
    monkeypatch.setattr(identities.GroupChanges, "_insert", real_insert)
    assert sync_json(deployment)["exit"] == 0  # and the next run converges
    assert len(group_state(deployment)[1]) > 0


def test_planning_holds_the_write_lock_only_beside_many_member_rows(
    tmp_path: Any, group_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCIM writes go on while a nightly full sync plans; only the member rows of a first sync
    (many rows) are written beside the plan, under the write lock. SQLite: one lock per file."""
    import sqlite3

    import bridge.engine.sync

    d = Deployment(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}")
    seen: list[bool] = []
    real_plan = bridge.engine.sync.build_plan

    def plan_and_try_a_write(*args: Any, **kwargs: Any) -> Any:
        probe = sqlite3.connect(tmp_path / "bridge.db", timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            seen.append(True)
        except sqlite3.OperationalError:  # database is locked
            seen.append(False)
        finally:
            probe.close()
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(bridge.engine.sync, "build_plan", plan_and_try_a_write)
    assert sync_json(d)["exit"] == 0
    assert seen == [group_path == "groups after the plan"]


def test_a_run_that_fails_is_recorded_as_failed_not_left_running(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_plan(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("planner bug")

    monkeypatch.setattr("bridge.engine.sync.build_plan", broken_plan)
    with pytest.raises(RuntimeError, match="planner bug"):
        bridge(deployment, "sync")
    history = json.loads(bridge(deployment, "sync", "--history", "--json").stdout)
    assert [h["outcome"] for h in history] == ["failed"]
    assert "RuntimeError: planner bug" in history[0]["reason"]
    assert table_counts(deployment)["accounts"] == 0


def test_a_sync_that_writes_many_accounts_refreshes_postgresql_statistics(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.engine.sync

    deployment = Deployment(tmp_path, pg_url)
    deployment.write_config()
    # The example directory stands in for a first sync of thousands of people.
    monkeypatch.setattr(bridge.engine.sync, "STATISTICS_AFTER_ACCOUNTS", 5)
    engine = make_engine(pg_url)

    def analyzed() -> dict[str, Any]:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT relname, last_analyze FROM pg_stat_user_tables")).all()
        return {name: when for name, when in rows if name in ("accounts", "role_grants", "account_events")}

    try:
        assert sync_json(deployment)["exit"] == 0  # the migrations run first: nothing analyzed by hand yet
        first = analyzed()
        assert set(first) == {"accounts", "role_grants", "account_events"} and all(first.values()), first
        # A run that writes nothing (below the threshold) leaves the statistics to autovacuum.
        assert sync_json(deployment)["exit"] == 0
        assert analyzed() == first
    finally:
        engine.dispose()
