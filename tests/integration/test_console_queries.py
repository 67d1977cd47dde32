"""The console's reads (bridge/store: accounts, audit, runs, outbox, tenants), on SQLite and
PostgreSQL: filters, paging boundaries, and tenant isolation (tenant A's query never returns
tenant B's rows). Rows are written with the store's own tables; one test goes through a real sync
to check that apply fills what the reads need (folded names, the run's correlation id)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, insert, select, text, update

from bridge.cli import main
from bridge.core.mapping import load_mapping
from bridge.store import accounts as store_accounts
from bridge.store import audit as store_audit
from bridge.store.accounts import BadCursor, held_roles_text, search_accounts, status_counts, usage_outside
from bridge.store.audit import audit_page, audit_rows, list_audit, seat_history
from bridge.store.db import _alembic_config, make_engine, transaction, upgrade
from bridge.store.ids import fold, new_id
from bridge.store.outbox import mail_health, problem_rows
from bridge.store.runs import get_run, last_runs, run_changes, runs_page
from bridge.store.tables import Account, AuditEvent, Identity, OutboxMessage, RoleGrant, SyncRun, Tenant
from bridge.store.tenants import get_tenant, tenant_summaries
from tests.conftest import ROOT, Deployment, stale_held_roles

NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)
A, B = 1, 2
_seq = itertools.count()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    with transaction(engine) as conn:
        conn.execute(insert(Tenant.__table__).values(id=A, name="alpha", created_at=NOW))
        conn.execute(insert(Tenant.__table__).values(id=B, name="beta", created_at=NOW))
    yield engine
    engine.dispose()


def add_account(
    conn: Connection,
    tenant_id: int,
    user_name: str,
    *,
    email: str | None = None,
    given: str | None = None,
    family: str | None = None,
    status: str = "active",
    roles: tuple[str, ...] = (),
    source: str = "dir",
    user_type: str = "internal",
    held: bool = True,
) -> str:
    """One account with its grants; `held`: with the seat count's copy of them, as apply writes
    it (False: null, a row from before migration 0017)."""
    account_id = new_id()
    anchor = f"anchor-{next(_seq)}"
    conn.execute(
        insert(Identity.__table__).values(
            id=account_id,
            tenant_id=tenant_id,
            source=source,
            kind="user",
            anchor=anchor,
            name=user_name,
            name_norm=fold(user_name),
            created_at=NOW,
            updated_at=NOW,
        )
    )
    conn.execute(
        insert(Account.__table__).values(
            id=account_id,
            tenant_id=tenant_id,
            identity_id=account_id,
            source=source,
            anchor=anchor,
            user_name=user_name,
            user_name_norm=fold(user_name),
            email=email,
            email_norm=fold(email),
            given_name=given,
            family_name=family,
            given_name_norm=fold(given),
            family_name_norm=fold(family),
            user_type=user_type,
            status=status,
            held_roles=held_roles_text(roles) if held else None,
            created_at=NOW,
            updated_at=NOW,
        )
    )
    for role in roles:
        conn.execute(
            insert(RoleGrant.__table__).values(
                account_id=account_id, role=role, tenant_id=tenant_id, rule="r", granted_at=NOW
            )
        )
    return account_id


def names(page: Any) -> list[str]:
    return [r.user_name for r in page.rows]


# ---- accounts ---------------------------------------------------------------------------------


@pytest.fixture(params=[0, 10_000], ids=["walk", "union"])
def dense(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways a text search runs: walking the userName order (many matches), and the union of
    the four prefix ranges (few)."""
    monkeypatch.setattr(store_accounts, "_DENSE", request.param)


def test_search_matches_a_prefix_of_each_folded_column_and_only_in_its_tenant(engine: Engine, dense: None) -> None:
    with transaction(engine) as conn:
        add_account(conn, A, "anna.smith", email="a.smith@x.org", given="Anna", family="Smith")
        add_account(conn, A, "bob", email="Annex.Bob@x.org", given="Bob", family="Jones")
        add_account(conn, A, "joanna", email="jo@x.org", given="Joanna", family="Annaud")
        add_account(conn, A, "zoe", email="z@x.org", given="ZOË", family="Ångström")
        add_account(conn, A, "a_b", email="ab1@x.org")
        add_account(conn, A, "axb", email="ab2@x.org")
        add_account(conn, B, "anna.other", email="anna@b.org", given="Anna", family="Other")
    with transaction(engine, write=False) as conn:
        # userName, email, family name; "joanna" holds "ann" inside, not as a prefix.
        assert names(search_accounts(conn, A, text="ANN")) == ["anna.smith", "bob", "joanna"]
        assert names(search_accounts(conn, A, text="zoë")) == ["zoe"]  # given name, folded
        assert names(search_accounts(conn, A, text="ångs")) == ["zoe"]  # family name, folded
        assert names(search_accounts(conn, A, text="jones")) == ["bob"]
        assert names(search_accounts(conn, A, text="a_")) == ["a_b"]  # "_" is no wildcard
        assert names(search_accounts(conn, A, text="%")) == []
        assert names(search_accounts(conn, A, text="nobody")) == []
        assert names(search_accounts(conn, A, text="  ")) == ["a_b", "anna.smith", "axb", "bob", "joanna", "zoe"]
        assert names(search_accounts(conn, B, text="ann")) == ["anna.other"]
        row = search_accounts(conn, A, text="anna.s").rows[0]
        assert (row.email, row.given_name, row.family_name, row.status, row.user_type, row.source) == (
            "a.smith@x.org",
            "Anna",
            "Smith",
            "active",
            "internal",
            "dir",
        )


@pytest.mark.parametrize("dense_role", [0, 10_000], ids=["walk", "from-holders"])
def test_search_filters_combine(engine: Engine, dense_role: int, dense: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both ways a role filter runs: walking the userName order, and driving from its holders.
    monkeypatch.setattr(store_accounts, "_DENSE_ROLE", dense_role)
    with transaction(engine) as conn:
        add_account(conn, A, "amy", status="active", roles=("front_desk", "viewer"))
        add_account(conn, A, "ben", status="pending", roles=("front_desk",))
        add_account(conn, A, "cat", status="suspended", roles=("viewer",), user_type="external")
        add_account(conn, A, "dan", status="archived", source="scim")
        add_account(conn, A, "eve", status="active", roles=("front_desk",), source="scim")
        add_account(conn, B, "amber", status="active", roles=("front_desk",))
    with transaction(engine, write=False) as conn:
        assert names(search_accounts(conn, A, role="front_desk")) == ["amy", "ben", "eve"]
        assert names(search_accounts(conn, A, role="front_desk", status="active")) == ["amy", "eve"]
        assert names(search_accounts(conn, A, role="front_desk", source="scim")) == ["eve"]
        assert names(search_accounts(conn, A, role="front_desk", text="a")) == ["amy"]
        assert names(search_accounts(conn, A, role="nobody_has_it")) == []
        assert names(search_accounts(conn, A, status="archived")) == ["dan"]
        assert names(search_accounts(conn, A, user_type="external")) == ["cat"]
        assert names(search_accounts(conn, A, source="scim")) == ["dan", "eve"]
        assert names(search_accounts(conn, B, role="front_desk")) == ["amber"]
        roles = {r.user_name: r.roles for r in search_accounts(conn, A).rows}
        assert roles["amy"] == [("front_desk", "r"), ("viewer", "r")] and roles["dan"] == []


@pytest.mark.parametrize("text", [None, "u"], ids=["all", "search"])
def test_search_pages_cover_every_row_once_in_user_name_order(engine: Engine, text: str | None, dense: None) -> None:
    with transaction(engine) as conn:
        for i in range(7):
            add_account(conn, A, f"u{i}")
        # The same userName twice (two sources): the id breaks the tie, across a page boundary.
        add_account(conn, A, "u2", source="scim")
        add_account(conn, B, "u9")
    with transaction(engine, write=False) as conn:
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            page = search_accounts(conn, A, text=text, after=after, limit=3)
            pages += 1
            seen += [r.id for r in page.rows]
            assert len(page.rows) == 3 or page.next_after is None
            if page.next_after is None:
                break
            after = page.next_after
        assert pages == 3
        everyone = search_accounts(conn, A, text=text, limit=100)
        assert everyone.next_after is None and len(everyone.rows) == 8
        assert seen == [r.id for r in everyone.rows]  # no row twice, none left out
        assert names(everyone) == ["u0", "u1", "u2", "u2", "u3", "u4", "u5", "u6"]
        exact = search_accounts(conn, A, text=text, limit=8)
        assert exact.next_after is None  # a full last page has no next page
        with pytest.raises(BadCursor):
            search_accounts(conn, A, after="not-a-cursor")


def test_status_counts_name_every_status(engine: Engine) -> None:
    with transaction(engine) as conn:
        add_account(conn, A, "a", status="active")
        add_account(conn, A, "b", status="active")
        add_account(conn, A, "c", status="pending")
        add_account(conn, B, "d", status="archived")
    with transaction(engine, write=False) as conn:
        assert status_counts(conn, A) == {
            "no_access": 0,
            "pending": 1,
            "active": 2,
            "suspended": 0,
            "archived": 0,
        }
        assert status_counts(conn, B)["archived"] == 1 and sum(status_counts(conn, B).values()) == 1


# ---- audit ------------------------------------------------------------------------------------


def add_event(
    conn: Connection,
    tenant_id: int,
    *,
    account_id: str | None = "x",
    actor: str = "sync",
    action: str = "update",
    at: datetime = NOW,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    correlation_id: str | None = None,
) -> int:
    return int(
        conn.execute(
            insert(AuditEvent.__table__).values(
                tenant_id=tenant_id,
                account_id=account_id,
                actor=actor,
                action=action,
                before=before,
                after=after,
                reason=None,
                correlation_id=correlation_id,
                occurred_at=at,
            )
        ).inserted_primary_key[0]
    )


def test_audit_page_filters_and_pages_newest_first(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with transaction(engine) as conn:
        ids = [
            add_event(
                conn, A, actor="sync" if i % 2 else "admin:x@y", account_id=f"acc{i % 3}", at=NOW - timedelta(hours=i)
            )
            for i in range(10)
        ]
        add_event(conn, A, action="archive", account_id="acc0", actor="admin:x@y", at=NOW)
        add_event(conn, B, actor="sync", account_id="acc0")
    with transaction(engine, write=False) as conn:
        rows, before = audit_page(conn, A, limit=4)
        assert [r.id for r in rows] == sorted([*ids, rows[0].id], reverse=True)[:4] and before == rows[-1].id
        everything: list[int] = []
        before = None
        while True:
            rows, before = audit_page(conn, A, before_id=before, limit=4)
            everything += [r.id for r in rows]
            if before is None:
                break
        assert len(everything) == 11 and everything == sorted(everything, reverse=True)
        assert all(r.tenant_id == A for r in audit_page(conn, A, limit=100)[0])
        sync_rows, _ = audit_page(conn, A, actor="sync")
        assert len(sync_rows) == 5 and {r.actor for r in sync_rows} == {"sync"}
        assert {r.account_id for r in audit_page(conn, A, account_id="acc1")[0]} == {"acc1"}
        assert [r.action for r in audit_page(conn, A, action="archive")[0]] == ["archive"]
        window, _ = audit_page(conn, A, since=NOW - timedelta(hours=3), until=NOW - timedelta(hours=1))
        assert sorted(r.occurred_at for r in window) == [NOW - timedelta(hours=3), NOW - timedelta(hours=2)]
        assert audit_page(conn, A, limit=11)[1] is None  # exactly one full page: no next page
        monkeypatch.setattr(store_audit, "AUDIT_CHUNK", 3)
        streamed = [r.id for r in audit_rows(conn, A)]
        assert streamed == everything
        # A window's chunks stop at its first id; the ids here run against the time (i hours ago).
        recent = [r.id for r in audit_rows(conn, A, since=NOW - timedelta(hours=5))]
        assert recent == [i for i in everything if i == everything[0] or i in ids[:6]] and len(recent) == 7
        assert [r.actor for r in audit_rows(conn, A, actor="admin:x@y", account_id="acc0")] == ["admin:x@y"] * 3
        # An account's status history is list_audit's (oldest first), as `bridge users show` reads it.
        assert [r.id for r in list_audit(conn, A, account_id="acc1")] == sorted(
            r.id for r in audit_page(conn, A, account_id="acc1")[0]
        )


def snap(status: str | None, *roles: str) -> dict[str, Any]:
    return {"status": status, "roles": list(roles)}


def seat_event(conn: Connection, tenant_id: int, **values: Any) -> int:
    """An account event with the action its snapshots imply, as apply writes it."""
    before, after = values.get("before"), values["after"]
    action = "create" if before is None else {"archived": "archive", "suspended": "suspend"}.get(after["status"])
    return add_event(conn, tenant_id, action=action or "grant_roles", **values)


def test_seat_history_walks_back_from_todays_count(engine: Engine) -> None:
    mapping = load_mapping(ROOT / "mappings" / "example.toml")  # schedule_viewer is not billable
    day = NOW.replace(hour=9)
    with transaction(engine) as conn:
        kept = add_account(conn, A, "kept", status="active", roles=("front_desk",))
        add_account(conn, A, "viewer", status="active", roles=("schedule_viewer",))
        add_account(conn, A, "gone", status="archived")
        add_account(conn, A, "away", status="suspended", roles=("front_desk",))
        add_account(conn, B, "other", status="active", roles=("front_desk",))
        # Before the window: must not count (the history starts from what followed).
        seat_event(conn, A, at=day - timedelta(days=30), before=snap("no_access"), after=snap("pending", "front_desk"))
        # 4 days ago "kept" and "gone" take a seat; "viewer" a non-billable role: no seat.
        for who in (kept, "gone"):
            seat_event(
                conn,
                A,
                account_id=who,
                at=day - timedelta(days=4),
                before=snap("no_access"),
                after=snap("pending", "front_desk"),
            )
        seat_event(
            conn, A, at=day - timedelta(days=4), before=snap("no_access"), after=snap("pending", "schedule_viewer")
        )
        seat_event(conn, A, at=day - timedelta(days=4), before=None, after=snap("no_access"))  # a create
        add_event(conn, A, at=day - timedelta(days=3), account_id=None, after={"source": "dir"})  # tenant event
        # 2 days ago "away" is suspended (still a seat by default); yesterday "gone" is archived.
        seat_event(
            conn,
            A,
            at=day - timedelta(days=2),
            before=snap("active", "front_desk"),
            after=snap("suspended", "front_desk"),
        )
        seat_event(conn, A, at=day - timedelta(days=1), before=snap("active", "front_desk"), after=snap("archived"))
        seat_event(conn, B, at=day - timedelta(days=1), before=snap("no_access"), after=snap("active", "front_desk"))
    with transaction(engine, write=False) as conn:
        history = seat_history(conn, A, mapping=mapping, now=NOW, days=6)
        today = NOW.date()
        assert [d for d, _ in history] == [today - timedelta(days=n) for n in range(5, -1, -1)]
        assert [n for _, n in history] == [1, 3, 3, 3, 2, 2]
        assert history[-1] == (today, 2)  # kept and away: today's count
        given = seat_history(conn, A, mapping=mapping, now=NOW, days=6, current=5)
        assert [n for _, n in given] == [4, 6, 6, 6, 5, 5]  # the caller's count, walked back alike
        # Suspended accounts not counted: "away" drops out of today, and its suspension 2 days
        # ago freed its seat.
        strict = seat_history(conn, A, mapping=mapping, now=NOW, days=6, suspended_counts_as_seat=False)
        assert [n for _, n in strict] == [1, 3, 3, 2, 1, 1]
        assert seat_history(conn, B, mapping=mapping, now=NOW, days=3) == [
            (today - timedelta(days=2), 0),
            (today - timedelta(days=1), 1),
            (today, 1),
        ]
        assert isinstance(history[0][0], date) and len(seat_history(conn, A, mapping=mapping, now=NOW)) == 90


def test_seat_count_from_held_roles_is_the_count_of_the_grants(engine: Engine) -> None:
    """usage_outside counts seats from accounts.held_roles; the same seats as joining the grants
    (what it did before migration 0017, and still does for a null held_roles), whatever the
    exclusions and the suspended setting, on accounts that hold several, free or no roles."""
    mapping = load_mapping(ROOT / "mappings" / "example.toml")  # schedule_viewer is free
    people = [  # (user name, status, roles, source, tenant)
        ("desk", "active", ("front_desk",), "dir", A),
        ("both", "active", ("administration", "front_desk", "schedule_viewer"), "dir", A),  # one seat
        ("viewer", "active", ("schedule_viewer",), "dir", A),
        ("waiting", "pending", ("administration",), "dir", A),
        ("away", "suspended", ("front_desk",), "dir", A),
        ("away.viewer", "suspended", ("schedule_viewer",), "dir", A),
        ("nobody", "no_access", (), "dir", A),
        ("left", "archived", ("front_desk",), "dir", A),  # a grant left behind: still no seat
        ("pushed", "active", ("front_desk",), "scim", A),
        ("pushed.admin", "pending", ("administration", "front_desk"), "scim", A),
        ("elsewhere", "active", ("front_desk",), "dir", B),
    ]
    with transaction(engine) as conn:
        ids = {
            name: add_account(conn, tenant, name, status=status, roles=roles, source=source)
            for name, status, roles, source, tenant in people
        }

    def expected(*, source: str | None, excluded: set[str], suspended: bool) -> int:
        states = {"pending", "active"} | ({"suspended"} if suspended else set())
        return sum(
            1
            for name, status, roles, src, tenant in people
            if tenant == A
            and src != source
            and ids[name] not in excluded
            and status in states
            and any(mapping.roles[r].billable for r in roles)
        )

    cases = [
        (source, excluded, suspended)
        for source in (None, "scim")
        for excluded in (set(), {ids["both"], ids["away"], ids["viewer"], ids["pushed"], ids["elsewhere"], "none"})
        for suspended in (True, False)
    ]

    def counts() -> list[tuple[int, dict[str, int]]]:
        with transaction(engine, write=False) as conn:
            out = []
            for source, excluded, suspended in cases:
                usage = usage_outside(
                    conn,
                    A,
                    mapping,
                    exclude_source=source,
                    exclude_ids=sorted(excluded),
                    suspended_counts_as_seat=suspended,
                )
                seats = store_accounts.seats_outside(
                    conn,
                    A,
                    mapping,
                    exclude_source=source,
                    exclude_ids=sorted(excluded),
                    suspended_counts_as_seat=suspended,
                )
                assert seats == usage.seats  # the overview's read, without the holders
                out.append((usage.seats, dict(usage.holders)))
            return out

    held = counts()
    assert [seats for seats, _ in held] == [expected(source=s, excluded=e, suspended=x) for s, e, x in cases]
    assert held[0] == (6, {"administration": 3})  # desk, both, waiting, away, pushed, pushed.admin
    accounts = Account.__table__
    with transaction(engine) as conn:  # half the accounts from before the copy: the join counts them
        conn.execute(
            update(accounts).where(accounts.c.user_name.in_(["both", "away", "pushed"])).values(held_roles=None)
        )
    assert counts() == held
    with transaction(engine) as conn:
        conn.execute(update(accounts).values(held_roles=None))
    assert counts() == held


# ---- runs -------------------------------------------------------------------------------------


def add_run(conn: Connection, tenant_id: int, source: str, outcome: str = "ok", correlation_id: str = "") -> int:
    return int(
        conn.execute(
            insert(SyncRun.__table__).values(
                tenant_id=tenant_id,
                source=source,
                mode="full",
                correlation_id=correlation_id or f"sync-{next(_seq)}",
                started_at=NOW,
                finished_at=NOW,
                outcome=outcome,
                counts={"created": 1},
            )
        ).inserted_primary_key[0]
    )


def test_runs_newest_per_source_pages_and_tenant_guard(engine: Engine) -> None:
    with transaction(engine) as conn:
        first = add_run(conn, A, "dir", "failed")
        newest_dir = add_run(conn, A, "dir", "ok")
        scim = add_run(conn, A, "scim", "aborted")
        others = [add_run(conn, A, "dir") for _ in range(3)]
        b_run = add_run(conn, B, "dir", "ok")
        newest_dir = others[-1]
    with transaction(engine, write=False) as conn:
        assert [(r.source, r.id) for r in last_runs(conn, A)] == [("dir", newest_dir), ("scim", scim)]
        assert [r.id for r in last_runs(conn, B)] == [b_run]
        rows, before = runs_page(conn, A, limit=4)
        assert [r.id for r in rows] == [others[2], others[1], others[0], scim] and before == scim
        rows, before = runs_page(conn, A, before_id=before, limit=4)
        assert len(rows) == 2 and rows[-1].id == first and before is None
        assert [r.id for r in runs_page(conn, A, source="scim")[0]] == [scim]
        assert get_run(conn, A, first).outcome == "failed"
        assert get_run(conn, A, b_run) is None and get_run(conn, B, b_run) is not None
        assert get_run(conn, A, 10**9) is None


def test_run_changes_are_the_events_with_its_correlation_id(engine: Engine) -> None:
    with transaction(engine) as conn:
        who = add_account(conn, A, "amy")
        run_id = add_run(conn, A, "dir", correlation_id="sync-abc")
        events = [
            add_event(conn, A, account_id=who, action=a, correlation_id="sync-abc") for a in ("create", "grant_roles")
        ]
        add_event(conn, A, account_id=None, action="sync_forced", correlation_id="sync-abc")
        add_event(conn, A, account_id=who, correlation_id="sync-other")
        add_event(conn, B, account_id=who, correlation_id="sync-abc")  # another tenant's, same id
    with transaction(engine, write=False) as conn:
        run = get_run(conn, A, run_id)
        rows, after = run_changes(conn, A, run)
        assert [r.action for r in rows] == ["create", "grant_roles", "sync_forced"] and after is None
        assert [r.user_name for r in rows] == ["amy", "amy", None]
        rows, after = run_changes(conn, A, run, limit=2)
        assert [r.id for r in rows] == events and after == events[-1]
        rows, after = run_changes(conn, A, run, after_id=after, limit=2)
        assert [r.action for r in rows] == ["sync_forced"] and after is None


def test_a_real_sync_fills_the_search_columns_and_tags_its_changes(tmp_path: Any, db_url: str) -> None:
    d = Deployment(tmp_path, db_url)
    result = CliRunner().invoke(main, ["--config", str(d.config), "sync", "--source", "dir"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    engine = make_engine(db_url)
    try:
        with transaction(engine, write=False) as conn:
            tenant = get_tenant(conn, "example")
            found = search_accounts(conn, tenant.id, text="ALI")
            assert names(found) == ["agarnier"]
            assert names(search_accounts(conn, tenant.id, text="garn")) == ["agarnier"]
            (run,) = last_runs(conn, tenant.id)
            rows, _ = run_changes(conn, tenant.id, run)
            assert {r.user_name for r in rows} >= {"agarnier", "bmartin"}
            assert {r.action for r in rows if r.user_name == "agarnier"} >= {"create", "grant_roles"}
            count = conn.execute(
                select(AuditEvent.__table__.c.id).where(AuditEvent.__table__.c.account_id.is_not(None))
            )
            assert len(rows) == len(count.all())  # every change of the first sync is the run's
            assert stale_held_roles(conn) == []  # apply writes the seat count's copy of the grants
    finally:
        engine.dispose()


def test_migration_folds_the_stored_names(db_url: str) -> None:
    """Accounts stored before 0012 get their folded names from the migration (Python's casefold:
    "STRASSE" and "Straße" fold alike, which SQL's lower() does not do)."""
    engine = make_engine(db_url)
    created = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "0010")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 't', :at)"), {"at": created})
            for i, (given, family) in enumerate([("Élodie", "Straße"), (None, None)]):
                params = {"id": f"i{i}", "anchor": f"a{i}", "name": f"u{i}", "at": created, "g": given, "f": family}
                conn.execute(
                    text(
                        "INSERT INTO identities (id, tenant_id, source, kind, anchor, name, name_norm, active,"
                        " attributes, scim_roles, created_at, updated_at, version)"
                        " VALUES (:id, 1, 'dir', 'user', :anchor, :name, :name, true, '{}', '[]', :at, :at, 1)"
                    ),
                    params,
                )
                conn.execute(
                    text(
                        "INSERT INTO accounts (id, tenant_id, identity_id, source, anchor, user_name, user_name_norm,"
                        " given_name, family_name, user_type, status, denied, admin_hold, created_at, updated_at,"
                        " version) VALUES (:id, 1, :id, 'dir', :anchor, :name, :name, :g, :f, 'internal', 'active',"
                        " '{}', false, :at, :at, 1)"
                    ),
                    params,
                )
        upgrade(engine)
        with transaction(engine, write=False) as conn:
            rows = conn.execute(
                select(
                    Account.__table__.c.id, Account.__table__.c.given_name_norm, Account.__table__.c.family_name_norm
                ).order_by(Account.__table__.c.id)
            ).all()
            assert [tuple(r) for r in rows] == [("i0", "élodie", "strasse"), ("i1", None, None)]
            assert names(search_accounts(conn, 1, text="ÉLO")) == ["u0"]
            assert names(search_accounts(conn, 1, text="STRASS")) == ["u0"]
    finally:
        engine.dispose()


def test_migration_copies_each_accounts_grants_to_held_roles(db_url: str) -> None:
    """Accounts stored before 0017 get held_roles from their grants (none: an empty list), so the
    seat count is the same before and after the upgrade."""
    engine = make_engine(db_url)
    created = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "0016")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES (1, 't', :at)"), {"at": created})
            for i, roles in enumerate([("schedule_viewer", "front_desk"), ()]):
                params = {"id": f"i{i}", "anchor": f"a{i}", "name": f"u{i}", "at": created}
                conn.execute(
                    text(
                        "INSERT INTO identities (id, tenant_id, source, kind, anchor, name, name_norm, active,"
                        " attributes, scim_roles, created_at, updated_at, version)"
                        " VALUES (:id, 1, 'dir', 'user', :anchor, :name, :name, true, '{}', '[]', :at, :at, 1)"
                    ),
                    params,
                )
                conn.execute(
                    text(
                        "INSERT INTO accounts (id, tenant_id, identity_id, source, anchor, user_name, user_name_norm,"
                        " user_type, status, denied, admin_hold, created_at, updated_at, version)"
                        " VALUES (:id, 1, :id, 'dir', :anchor, :name, :name, 'internal', 'active', '{}', false,"
                        " :at, :at, 1)"
                    ),
                    params,
                )
                for role in roles:
                    conn.execute(
                        text(
                            "INSERT INTO role_grants (account_id, role, tenant_id, granted_at)"
                            " VALUES (:id, :role, 1, :at)"
                        ),
                        {**params, "role": role},
                    )
        upgrade(engine)
        with transaction(engine, write=False) as conn:
            accounts = Account.__table__
            rows = conn.execute(select(accounts.c.id, accounts.c.held_roles).order_by(accounts.c.id)).all()
            assert [tuple(r) for r in rows] == [("i0", '["front_desk", "schedule_viewer"]'), ("i1", "[]")]
            assert stale_held_roles(conn) == []
            mapping = load_mapping(ROOT / "mappings" / "example.toml")
            assert usage_outside(conn, 1, mapping).seats == 1
    finally:
        engine.dispose()


# ---- outbox -----------------------------------------------------------------------------------


def add_message(
    conn: Connection,
    tenant_id: int,
    *,
    channel: str = "email",
    status: str = "queued",
    created: datetime = NOW,
    error: str | None = None,
) -> int:
    return int(
        conn.execute(
            insert(OutboxMessage.__table__).values(
                tenant_id=tenant_id,
                account_id="x",
                channel=channel,
                topic="activation" if channel == "email" else "account.created",
                payload={"to": "p@x.org"} if channel == "email" else {"event": 1},
                idempotency_key=f"k-{next(_seq)}",
                status=status,
                attempts=0 if status == "queued" else 3,
                next_attempt_at=created,
                last_error=error,
                created_at=created,
            )
        ).inserted_primary_key[0]
    )


def test_mail_health_counts_the_tenants_undelivered_rows(engine: Engine) -> None:
    with transaction(engine) as conn:
        add_message(conn, A, created=NOW - timedelta(minutes=10))
        add_message(conn, A, created=NOW - timedelta(minutes=2))
        add_message(conn, A, channel="webhook", created=NOW - timedelta(hours=1))
        add_message(conn, A, status="dead", error="550 no such user")
        add_message(conn, A, channel="webhook", status="failed", error="bad")
        add_message(conn, A, status="sent")
        add_message(conn, B, created=NOW - timedelta(days=3))
        add_message(conn, B, status="dead")
    with transaction(engine, write=False) as conn:
        health = mail_health(conn, A, NOW)
        assert (health.queued, health.failed, health.dead) == (3, 1, 1)
        assert health.oldest_queued_age_seconds == 3600
        email, webhook = health.by_channel["email"], health.by_channel["webhook"]
        assert (email.queued, email.dead, email.failed, email.oldest_queued_age_seconds) == (2, 1, 0, 600)
        assert (webhook.queued, webhook.failed, webhook.oldest_queued_age_seconds) == (1, 1, 3600)
        other = mail_health(conn, B, NOW)
        assert (other.queued, other.dead, other.oldest_queued_age_seconds) == (1, 1, 3 * 86400)
    with transaction(engine) as conn:
        conn.execute(OutboxMessage.__table__.delete())
    with transaction(engine, write=False) as conn:
        empty = mail_health(conn, A, NOW)
        assert (empty.queued, empty.failed, empty.dead, empty.oldest_queued_age_seconds, empty.by_channel) == (
            0,
            0,
            0,
            None,
            {},
        )


def test_problem_rows_filter_page_and_stay_in_their_tenant(engine: Engine) -> None:
    with transaction(engine) as conn:
        ids = [add_message(conn, A, status=s, error=f"e{i}") for i, s in enumerate(["queued", "dead", "failed"] * 3)]
        add_message(conn, A, status="sent")
        add_message(conn, A, status="superseded")
        hook = add_message(conn, A, channel="webhook", status="dead", error="410 gone")
        add_message(conn, B, status="dead")
    with transaction(engine, write=False) as conn:
        rows, before = problem_rows(conn, A, limit=4)
        assert [r["id"] for r in rows] == [hook, *ids[::-1][:3]] and before == ids[-3]
        everything: list[int] = []
        before = None
        while True:
            rows, before = problem_rows(conn, A, before_id=before, limit=4)
            everything += [r["id"] for r in rows]
            if before is None:
                break
        assert everything == [hook, *ids[::-1]]
        dead, _ = problem_rows(conn, A, statuses=("dead",), channel="email")
        assert [r["id"] for r in dead] == [ids[7], ids[4], ids[1]]
        assert [r["lastError"] for r in dead] == ["e7", "e4", "e1"]
        assert [r["id"] for r in problem_rows(conn, A, channel="webhook")[0]] == [hook]
        assert {r["tenant"] for r in problem_rows(conn, B)[0]} == {"beta"}
        assert problem_rows(conn, A, limit=10)[1] is None


# ---- tenants ----------------------------------------------------------------------------------


def test_tenant_summaries_one_line_per_tenant(engine: Engine) -> None:
    with transaction(engine) as conn:
        conn.execute(insert(Tenant.__table__).values(id=3, name="gamma", created_at=NOW))  # nothing yet
        add_account(conn, A, "a", status="active")
        add_account(conn, A, "b", status="pending")
        add_account(conn, B, "c", status="archived")
        add_run(conn, A, "dir", "failed")
        newest = add_run(conn, A, "scim", "ok")
        b_run = add_run(conn, B, "dir", "aborted")
        add_message(conn, A, status="dead")
        add_message(conn, A, status="failed")
        add_message(conn, A, status="queued")
        add_message(conn, B, status="sent")
    with transaction(engine, write=False) as conn:
        summaries = {s.name: s for s in tenant_summaries(conn)}
    assert list(summaries) == ["alpha", "beta", "gamma"]
    alpha, beta, gamma = summaries["alpha"], summaries["beta"], summaries["gamma"]
    assert alpha.accounts == {"no_access": 0, "pending": 1, "active": 1, "suspended": 0, "archived": 0}
    assert alpha.last_run.id == newest and alpha.last_run.outcome == "ok" and alpha.mail_problems == 2
    assert beta.accounts["archived"] == 1 and beta.last_run.id == b_run and beta.mail_problems == 0
    assert gamma.last_run is None and sum(gamma.accounts.values()) == 0 and gamma.mail_problems == 0
