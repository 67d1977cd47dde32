"""bridge/store/bulk.py and fast.py against SQLAlchemy's own paths, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from bridge.store.bulk import insert_many
from bridge.store.db import make_engine, transaction, upgrade
from bridge.store.fast import FastQuery, raw_cursor
from bridge.store.tables import AuditEvent, Membership, Tenant

audit = AuditEvent.__table__
memberships = Membership.__table__


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    with transaction(engine) as conn:
        conn.execute(insert(Tenant.__table__).values(id=1, name="t", created_at=datetime.now(UTC)))
    yield engine
    engine.dispose()


def audit_rows(n: int, now: datetime) -> list[dict[str, object]]:
    return [
        {
            "tenant_id": 1,
            "account_id": f"a{i}",
            "actor": "test",
            "action": "create",
            "before": {"status": None, "roles": []},
            "after": {"status": "pending", "roles": ["r"], "detail": {"n": i, "name": "Zoë"}},
            "reason": None if i % 2 else "new",
            "correlation_id": "c",
            "occurred_at": now,
        }
        for i in range(n)
    ]


def test_insert_many_stores_what_sqlalchemy_stores(engine: Engine) -> None:
    now = datetime(2026, 11, 22, 17, 0, 0, 123456, tzinfo=UTC)
    rows = audit_rows(50, now)
    with transaction(engine) as conn:
        insert_many(conn, audit, rows[:25])
        conn.execute(insert(audit), rows[25:])  # the general path, for comparison
    with transaction(engine, write=False) as conn:
        stored = conn.execute(select(audit).order_by(audit.c.id)).all()
    assert [r.account_id for r in stored] == [f"a{i}" for i in range(50)]  # order kept: ids grow
    fast, general = stored[:25], stored[25:]
    for a, b in zip(fast, general, strict=True):
        assert (a.before, a.after["status"], a.occurred_at, a.correlation_id) == (
            b.before,
            b.after["status"],
            b.occurred_at,
            b.correlation_id,
        )
    assert fast[3].after["detail"] == {"n": 3, "name": "Zoë"} and fast[3].occurred_at == now
    assert fast[3].reason is None and fast[4].reason == "new"


def test_insert_many_errors_are_sqlalchemy_errors_and_roll_back(engine: Engine) -> None:
    row = {"tenant_id": 1, "source": "s", "group_anchor": "g", "member_anchor": "m"}
    with pytest.raises(IntegrityError), transaction(engine) as conn:
        insert_many(conn, memberships, [row, {**row, "member_anchor": "n"}])
        insert_many(conn, memberships, [row])  # duplicate primary key
    with transaction(engine, write=False) as conn:
        assert conn.execute(select(memberships)).all() == []  # the whole transaction is gone


def test_insert_many_of_many_rows_keeps_every_character_and_its_errors(engine: Engine) -> None:
    # From 20 rows on, PostgreSQL's rows go by COPY (bridge/store/bulk.py): text with the
    # characters COPY's format escapes, JSON, NULLs and a duplicate key behave as the INSERT's.
    now = datetime(2026, 11, 22, 17, 0, 0, 123456, tzinfo=UTC)
    rows = audit_rows(40, now)
    for i, row in enumerate(rows):
        row["actor"] = f"tab\there, line\nbreak, back\\slash \\N {i}"
    with transaction(engine) as conn:
        insert_many(conn, audit, rows)
    with transaction(engine, write=False) as conn:
        stored = conn.execute(select(audit).order_by(audit.c.id)).all()
    assert [r.actor for r in stored] == [row["actor"] for row in rows]
    assert [r.reason for r in stored][:2] == ["new", None] and stored[7].after["detail"]["name"] == "Zoë"
    member = {"tenant_id": 1, "source": "s", "group_anchor": "g"}
    many = [{**member, "member_anchor": f"m{i}"} for i in range(30)]
    with pytest.raises(IntegrityError), transaction(engine) as conn:
        insert_many(conn, memberships, [*many, many[3]])  # one duplicate primary key
    with transaction(engine, write=False) as conn:
        assert conn.execute(select(memberships)).all() == []


def test_fast_query_rows_equal_connection_rows(engine: Engine) -> None:
    from sqlalchemy import bindparam

    now = datetime.now(UTC)
    with transaction(engine) as conn:
        insert_many(conn, audit, audit_rows(3, now))
    query = select(audit).where(audit.c.tenant_id == bindparam("tenant"), audit.c.action == "create")
    with transaction(engine, write=False) as conn:
        expected = [tuple(r) for r in conn.execute(query.order_by(audit.c.id), {"tenant": 1})]
    with raw_cursor(engine) as cursor:
        got = [tuple(r) for r in FastQuery(query.order_by(audit.c.id)).rows(cursor, engine.dialect, {"tenant": 1})]
    assert got == expected and len(got) == 3 and got[0][-1].tzinfo is not None


def test_scim_lookups_are_served_by_an_index(tmp_path: Path) -> None:
    """Every lookup an identity provider sends before a create finds its rows through an index
    on the looked-up attribute, on SQLite (which has no statistics to go by: it chose the
    (tenant, source, kind, created) index for `externalId eq`, a walk over every identity of
    the tenant)."""
    from bridge.store import scim as storage

    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    upgrade(engine)
    statements = [*storage._FAST_LOOKUPS.values(), *storage._FAST_TOKEN_LOOKUPS.values()]
    with raw_cursor(engine) as cursor:
        for statement in statements:
            compiled = statement._compile(engine.dialect)
            values = {"tenant_id": 1, "value": "x", "limit": 2, "digest": "d", **compiled.fixed}
            assert compiled.positional is not None
            cursor.execute(f"EXPLAIN QUERY PLAN {compiled.sql}", tuple(values[n] for n in compiled.positional))
            plan = [row[3] for row in cursor.fetchall()]
            identity_step = next(step for step in plan if " identities " in step)
            used = identity_step.split(" USING ")[1]
            assert "ix_identities_created" not in used and ("=?)" in used), (statement.statement, plan)


def test_a_users_groups_are_read_from_the_members_side(tmp_path: Path) -> None:
    """A user's groups (GET /Users/{id}, every user a list returns): SQLite, without statistics,
    walked every group of the tenant and probed its memberships (13 ms at 5,000 groups); the
    plan must start from the user's memberships and find each group by its key."""
    from bridge.store import scim as storage

    engine = make_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    upgrade(engine)
    with raw_cursor(engine) as cursor:
        compiled = storage._FAST_GROUPS_OF_ONE._compile(engine.dialect)
        values = {"tenant_id": 1, "anchor": "u", **compiled.fixed}
        assert compiled.positional is not None
        cursor.execute(f"EXPLAIN QUERY PLAN {compiled.sql}", tuple(values[n] for n in compiled.positional))
        plan = [row[3] for row in cursor.fetchall()]
    assert len(plan) == 2 and plan[0].startswith("SEARCH memberships USING COVERING INDEX"), plan
    assert "member_anchor=?" in plan[0] and plan[1].startswith("SEARCH g USING INDEX"), plan
    assert "anchor=?)" in plan[1], plan


def test_a_users_groups_come_in_name_order(engine: Engine) -> None:
    from bridge.store import scim as storage

    now = datetime.now(UTC)
    names = ["delta", "Alpha", "charlie", "bravo"]
    with transaction(engine) as conn:
        for i, name in enumerate(names):
            storage.write_group(conn, 1, f"g{i}", {"displayName": name}, now, create=True)
            storage.add_members(conn, 1, f"g{i}", ["u1", "u2"] if i % 2 else ["u1"])
    with transaction(engine, write=False) as conn:
        groups = storage.groups_of(conn, 1, ["u1", "u2", "u3"], "https://b")
    with raw_cursor(engine) as cursor:
        fast = storage.fast_groups_of(cursor, engine.dialect, 1, ["u1", "u2"], "https://b")
    assert [g["display"] for g in groups["u1"]] == ["Alpha", "bravo", "charlie", "delta"]
    assert [g["display"] for g in groups["u2"]] == ["Alpha", "bravo"] and "u3" not in groups
    assert fast == groups and groups["u2"][0]["$ref"] == "https://b/Groups/g1"


def _stored_memberships(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {(r.group_anchor, r.member_anchor) for r in conn.execute(select(memberships))}


def test_group_members_go_in_as_json_statements_and_replace_the_old_ones(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.core.model import SourceGroup, SourceUser
    from bridge.store import identities

    # Three members per statement: groups share statements, and g4 (10 members) spans four.
    monkeypatch.setattr(identities, "_MEMBERS_PER_STATEMENT", 3)
    now = datetime.now(UTC)
    odd = 'quote " back\\slash ünï €'  # anchors are opaque strings: JSON escapes must round-trip
    groups = {
        "g1": SourceGroup(anchor="g1", name="one", members=("u1", "u2", odd)),
        "g2": SourceGroup(anchor="g2", name="two", members=("g1",)),  # nested
        "g3": SourceGroup(anchor="g3", name="three"),  # empty
        "g4": SourceGroup(anchor="g4", name="four", members=tuple(f"u{i}" for i in range(10))),
    }
    users = {"u9": SourceUser(anchor="u9", user_name="nine", groups=("g2", "gone"))}  # listed on the user's side

    def write(groups: dict[str, SourceGroup]) -> int:
        with transaction(engine) as conn:
            return identities.diff_groups(
                conn, 1, "dir", groups, users, now, complete_scope=True, actor="test", correlation_id="c"
            ).write(conn)

    assert write(groups) == 4
    expected = {("g1", "u1"), ("g1", "u2"), ("g1", odd), ("g2", "g1"), ("g2", "u9")}
    expected |= {("g4", f"u{i}") for i in range(10)}
    assert _stored_memberships(engine) == expected

    assert write(groups) == 0  # unchanged: nothing rewritten, nothing duplicated
    assert _stored_memberships(engine) == expected

    groups["g1"] = SourceGroup(anchor="g1", name="one", members=("u3",))
    # g2 still names g4 as it goes (a source that does not drop references to removed groups):
    # the removal comes after the member rows, so no row names a group that is gone.
    groups["g2"] = SourceGroup(anchor="g2", name="two", members=("g1", "g4"))
    del groups["g4"]
    # A member row left over for a group the store does not know yet (a repair, an old bug):
    # writing that group must replace it, not fail on the primary key in every later sync.
    with transaction(engine) as conn:
        conn.execute(insert(memberships).values(tenant_id=1, source="dir", group_anchor="g5", member_anchor="u1"))
    groups["g5"] = SourceGroup(anchor="g5", name="five", members=("u1", "u2"))
    assert write(groups) == 4  # g1, g2 rewritten, g5 new, g4 removed
    assert _stored_memberships(engine) == {("g1", "u3"), ("g2", "g1"), ("g2", "u9"), ("g5", "u1"), ("g5", "u2")}


def test_database_errors_never_carry_the_bound_values(engine: Engine) -> None:
    secret = "bound-value-that-is-a-secret"
    with pytest.raises(IntegrityError) as caught, transaction(engine) as conn:
        conn.execute(insert(Tenant.__table__).values(id=1, name=secret, created_at=datetime.now(UTC)))
    assert secret not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
