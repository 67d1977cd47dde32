"""The console's reads at 100,000 accounts against the same reads at 1,000, in one database.

    .venv/bin/python bench/console_bench.py [--accounts 100000] [--baseline 1000] [--repeat 15]
                                            [--database-url URL]

Steps: a temporary SQLite database (or the empty database at URL) is upgraded and seeded with
two tenants, "big" (N accounts) and "small" (the baseline's count), written straight into the
tables with `bridge.store.bulk.insert_many`: accounts with their identities and roles (given and
family names from short lists, so a prefix matches many people), an audit trail of 120 days
(every account's creation and grant before the window, then a daily churn of 0.3% of the
accounts: suspensions, archives, new grants), 4 sync runs a day over 90 days with their
correlation ids on the churn's events, and the outbox (one sent activation per account, some
queued, failed and dead rows). Then each of the console's store reads runs `--repeat` times per
tenant; the table prints the median in ms for each, and the ratio big/small: a ratio near 1 is
an index range or a keyset page, a ratio near N/baseline is a scan. Prints the query plan of the
search so a scan would show. Prints Markdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, Engine, insert, select  # noqa: E402

from bridge.core.mapping import load_mapping  # noqa: E402
from bridge.store import accounts as store_accounts  # noqa: E402
from bridge.store import audit as store_audit  # noqa: E402
from bridge.store import outbox as store_outbox  # noqa: E402
from bridge.store import runs as store_runs  # noqa: E402
from bridge.store import tenants as store_tenants  # noqa: E402
from bridge.store.bulk import insert_many  # noqa: E402
from bridge.store.db import make_engine, transaction, upgrade  # noqa: E402
from bridge.store.ids import fold, new_id  # noqa: E402
from bridge.store.tables import (  # noqa: E402
    Account,
    AuditEvent,
    Identity,
    OutboxMessage,
    RoleGrant,
    SyncRun,
    Tenant,
)

NOW = datetime.now(UTC).replace(microsecond=0)
GIVEN = ["Alice", "Bruno", "Claire", "David", "Emma", "François", "Gaëlle", "Hugo", "Inès", "Jules", "Léa", "Zoë"]
FAMILY = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau"]
FAMILY += ["Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier"]
# The example mapping's roles: front_desk is billable and common, administration rare,
# schedule_viewer free.
MAPPING = ROOT / "mappings" / "example.toml"
CHUNK = 20_000


def seed(engine: Engine, tenant_id: int, name: str, count: int, rng: random.Random) -> dict[str, Any]:
    """Write one tenant's accounts, audit trail, runs and outbox; returns what the queries need."""
    created = NOW - timedelta(days=120)
    with transaction(engine) as conn:
        conn.execute(insert(Tenant.__table__).values(id=tenant_id, name=name, seat_limit=None, created_at=created))
    ids: list[str] = []
    for start in range(0, count, CHUNK):
        identities, accounts, grants, audit, outbox = [], [], [], [], []
        for i in range(start, min(start + CHUNK, count)):
            account_id = new_id()
            ids.append(account_id)
            given, family = rng.choice(GIVEN), rng.choice(FAMILY)
            user_name = f"{fold(given)}.{fold(family)}.{i:06d}@{name}.example.org"
            email = user_name
            status = "active" if i % 10 else rng.choice(["pending", "suspended", "no_access", "archived"])
            user_type = "external" if i % 50 == 0 else "internal"
            roles = [] if status in ("no_access", "archived") else ["front_desk", "schedule_viewer"]
            if i % 5000 == 1:
                roles.append("administration")
            identities.append(
                {
                    "id": account_id,
                    "tenant_id": tenant_id,
                    "source": "dir",
                    "kind": "user",
                    "anchor": account_id,
                    "external_id": None,
                    "dn": None,
                    "name": user_name,
                    "name_norm": user_name,
                    "email": email,
                    "email_norm": email,
                    "given_name": given,
                    "family_name": family,
                    "display_name": f"{given} {family}",
                    "active": True,
                    "attributes": {},
                    "scim_roles": [],
                    "preferred_language": None,
                    "digest": None,
                    "created_at": created,
                    "updated_at": created,
                    "version": 1,
                    "resource": None,
                    "deleted_at": None,
                }
            )
            accounts.append(
                {
                    "id": account_id,
                    "tenant_id": tenant_id,
                    "identity_id": account_id,
                    "source": "dir",
                    "anchor": account_id,
                    "user_name": user_name,
                    "user_name_norm": user_name,
                    "email": email,
                    "email_norm": email,
                    "given_name": given,
                    "family_name": family,
                    "given_name_norm": fold(given),
                    "family_name_norm": fold(family),
                    "display_name": f"{given} {family}",
                    "user_type": user_type,
                    "status": status,
                    "status_before_suspend": "active" if status == "suspended" else None,
                    # What apply writes beside the grants (the seat count's copy, migration 0017).
                    "held_roles": store_accounts.held_roles_text(roles),
                    "denied": {},
                    "admin_hold": False,
                    "expires_at": None,
                    "activated_at": None,
                    "created_at": created,
                    "updated_at": created,
                    "version": 1,
                }
            )
            grants += [
                {"account_id": account_id, "role": r, "tenant_id": tenant_id, "rule": "staff", "granted_at": created}
                for r in roles
            ]
            for action, before, after in (
                ("create", None, {"status": "no_access", "roles": []}),
                ("grant_roles", {"status": "no_access", "roles": []}, {"status": "pending", "roles": roles}),
            ):
                audit.append(_event(tenant_id, account_id, action, before, after, "sync-initial", created))
            outbox.append(_mail(tenant_id, account_id, "sent", created))
        with transaction(engine) as conn:
            insert_many(conn, Identity.__table__, identities)
            insert_many(conn, Account.__table__, accounts)
            insert_many(conn, RoleGrant.__table__, grants)
            insert_many(conn, AuditEvent.__table__, audit)
            insert_many(conn, OutboxMessage.__table__, outbox)
    # 90 days of churn (0.3% of the accounts a day), each day's events under one of its 4 runs.
    runs, audit, outbox = [], [], []
    churn = max(1, count * 3 // 1000)
    for day in range(90, -1, -1):
        for run in range(4):
            at = NOW - timedelta(days=day, hours=6 * run)
            runs.append(
                {
                    "tenant_id": tenant_id,
                    "source": "dir" if run else "scim",
                    "mode": "delta" if run else "full",
                    "correlation_id": f"sync-{tenant_id}-{day}-{run}",
                    "started_at": at,
                    "finished_at": at + timedelta(seconds=rng.randint(2, 60)),
                    "outcome": "ok" if rng.random() > 0.05 else "failed",
                    "reason": None,
                    "counts": {"updated": churn // 4},
                    "planned": None,
                    "forced": None,
                    "errors": None,
                    "warnings": None,
                }
            )
            for _ in range(churn // 4):
                who = rng.choice(ids)
                kind = rng.choice(["suspend", "resume", "update", "grant_roles"])
                before = {"status": "active", "roles": ["front_desk"]}
                after = {"status": "suspended" if kind == "suspend" else "active", "roles": ["front_desk"]}
                audit.append(_event(tenant_id, who, kind, before, after, f"sync-{tenant_id}-{day}-{run}", at))
        for status in ("queued", "failed", "dead"):
            outbox.append(_mail(tenant_id, rng.choice(ids), status, NOW - timedelta(days=day)))
    audit.sort(key=lambda e: e["occurred_at"])
    with transaction(engine) as conn:
        insert_many(conn, SyncRun.__table__, sorted(runs, key=lambda r: r["started_at"]))
        insert_many(conn, AuditEvent.__table__, audit)
        insert_many(conn, OutboxMessage.__table__, outbox)
    with transaction(engine, write=False) as conn:
        middle = conn.execute(
            select(Account.__table__.c.user_name_norm, Account.__table__.c.id)
            .where(Account.__table__.c.tenant_id == tenant_id)
            .order_by(Account.__table__.c.user_name_norm)
            .offset(count // 2)
            .limit(1)
        ).one()
    return {"id": tenant_id, "some_account": ids[count // 3], "middle": middle}


def _event(
    tenant_id: int, account_id: str, action: str, before: Any, after: Any, correlation: str, at: datetime
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "account_id": account_id,
        "actor": "sync",
        "action": action,
        "before": before,
        "after": after,
        "reason": "rule staff",
        "correlation_id": correlation,
        "occurred_at": at,
    }


def _mail(tenant_id: int, account_id: str, status: str, at: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "account_id": account_id,
        "channel": "email",
        "topic": "activation",
        "payload": {"to": "x@example.org"},
        "idempotency_key": f"activation:{account_id}:{new_id()}",
        "status": status,
        "attempts": 0 if status in ("queued", "sent") else 5,
        "next_attempt_at": at,
        "last_error": None if status in ("queued", "sent") else "550 mailbox unavailable",
        "created_at": at,
        "sent_at": at if status == "sent" else None,
    }


def queries(t: dict[str, Any]) -> list[tuple[str, Callable[[Connection], Any]]]:
    """(label, the read) for one tenant: what each console screen asks the store."""
    tid = t["id"]
    mapping = load_mapping(MAPPING)
    name, account_id = t["middle"]
    after = store_accounts._encode_cursor(name, account_id)
    return [
        ("status_counts", lambda c: store_accounts.status_counts(c, tid)),
        ("search: first page, no filter", lambda c: store_accounts.search_accounts(c, tid)),
        ("search: page in the middle", lambda c: store_accounts.search_accounts(c, tid, after=after)),
        ("search: text 'ber' (family names)", lambda c: store_accounts.search_accounts(c, tid, text="ber")),
        ("search: text 'zoë.ro' (userName)", lambda c: store_accounts.search_accounts(c, tid, text="zoë.ro")),
        ("search: text 'a' (a fifth of all)", lambda c: store_accounts.search_accounts(c, tid, text="a")),
        ("search: status suspended", lambda c: store_accounts.search_accounts(c, tid, status="suspended")),
        ("search: role administration (rare)", lambda c: store_accounts.search_accounts(c, tid, role="administration")),
        ("search: role front_desk (common)", lambda c: store_accounts.search_accounts(c, tid, role="front_desk")),
        ("search: user type external", lambda c: store_accounts.search_accounts(c, tid, user_type="external")),
        (
            "search: text + status + role",
            lambda c: store_accounts.search_accounts(c, tid, text="le", status="active", role="front_desk"),
        ),
        ("seats_outside (today's seat count)", lambda c: store_accounts.seats_outside(c, tid, mapping)),
        (
            "usage_outside, one account excluded (explain)",
            lambda c: store_accounts.usage_outside(c, tid, mapping, exclude_ids=[t["some_account"]]),
        ),
        (
            "seat_history (90 days, with today's seat count)",
            lambda c: store_audit.seat_history(c, tid, mapping=mapping, now=NOW),
        ),
        ("find_account (by id)", lambda c: store_accounts.find_account(c, tid, t["some_account"])),
        ("audit_page: newest", lambda c: store_audit.audit_page(c, tid)),
        ("audit_page: one account", lambda c: store_audit.audit_page(c, tid, account_id=t["some_account"])),
        (
            "audit_page: action suspend, 7 days",
            lambda c: store_audit.audit_page(c, tid, action="suspend", since=NOW - timedelta(days=7)),
        ),
        ("list_audit: one account's history", lambda c: store_audit.list_audit(c, tid, account_id=t["some_account"])),
        ("last_runs", lambda c: store_runs.last_runs(c, tid)),
        ("runs_page", lambda c: store_runs.runs_page(c, tid)),
        ("run_changes (newest run)", lambda c: store_runs.run_changes(c, tid, store_runs.runs_page(c, tid)[0][0])),
        ("mail_health", lambda c: store_outbox.mail_health(c, tid, NOW)),
        ("problem_rows", lambda c: store_outbox.problem_rows(c, tid)),
        ("tenant_summaries (all tenants)", lambda c: store_tenants.tenant_summaries(c)),
    ]


def median_ms(engine: Engine, read: Callable[[Connection], Any], repeat: int) -> float:
    times = []
    with engine.connect() as conn:
        read(conn)  # warm the statement cache and the pages
        conn.rollback()
        for _ in range(repeat):
            start = time.perf_counter()
            read(conn)
            times.append(time.perf_counter() - start)
            conn.rollback()
    return statistics.median(times) * 1000


def search_plans(engine: Engine, tid: int) -> list[str]:
    """The database's plan of the search's statements (text, and the role filter)."""
    out = []
    with engine.connect() as conn:
        statements: list[Any] = []

        def capture(conn_: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
            statements.append((statement, params))

        from sqlalchemy import event

        event.listen(engine, "before_cursor_execute", capture)
        try:
            store_accounts.search_accounts(conn, tid, text="ber")
            store_accounts.search_accounts(conn, tid, status="suspended")
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
        for statement, params in statements:
            if "role_grants" in statement and "FROM role_grants" in statement.split("FROM accounts")[0]:
                continue  # the roles of the page's rows, by account id
            out.append(statement.replace("\n", " "))
            for row in conn.exec_driver_sql(explain + statement, params).all():
                out.append("    " + " ".join(str(v) for v in row))
    return out


PASSWORD = "lantern orchard velvet quarry"


def screens_client(db_url: str, root: Path, tenants: list[str]) -> tuple[Any, Any]:
    """The real app (`create_app`) on the seeded database, as an operator signed in the way the
    console's tests do it: `bridge admins invite`, the setup link, a password. Returns (Flask test
    client, runtime)."""
    import re

    from click.testing import CliRunner

    from bridge.app import create_app
    from bridge.cli import main as bridge_main
    from bridge.runtime import open_runtime

    config = root / "bridge.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\n\n[server]\npublic_url = "http://127.0.0.1:8080"\n\n'
        + "".join(f'[[tenants]]\nname = "{t}"\nmappings = "{MAPPING}"\n\n' for t in tenants)
    )
    invited = CliRunner().invoke(bridge_main, ["--config", str(config), "admins", "invite", "ops@bench.example"])
    assert invited.exit_code == 0, invited.output
    link = invited.output.strip().splitlines()[-1]
    path = link[link.index("/admin/") :]
    runtime = open_runtime(config)
    client = create_app(runtime).test_client()
    logging.disable(logging.INFO)  # the access log's line per request is not the table
    form = client.get(path).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]*)"', form)
    assert csrf, form
    done = client.post(path, data={"csrf": csrf.group(1), "password": PASSWORD, "password_confirm": PASSWORD})
    assert done.status_code in (200, 303), done.get_data(as_text=True)
    return client, runtime


def screens(t: dict[str, Any], name: str, run_id: int) -> list[tuple[str, str]]:
    """(label, path) of each console screen for one tenant."""
    base = f"/admin/t/{name}"
    return [
        ("tenant list (operator)", "/admin/"),
        ("overview", f"{base}/"),
        ("accounts", f"{base}/accounts"),
        ("accounts: search 'ber'", f"{base}/accounts?q=ber"),
        ("accounts: status suspended", f"{base}/accounts?status=suspended"),
        ("account", f"{base}/accounts/{t['some_account']}"),
        ("runs", f"{base}/runs"),
        ("one run", f"{base}/runs/{run_id}"),
        ("mail and webhooks", f"{base}/outbox"),
        ("audit log", f"{base}/audit"),
        ("audit log: CSV, 7 days", f"{base}/audit?format=csv&since=__SINCE__"),
        ("SCIM tokens", f"{base}/tokens"),
    ]


def median_screen_ms(client: Any, path: str, repeat: int) -> tuple[float, int]:
    first = client.get(path)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        response.get_data()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, first.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--database-url", default=None, help="an empty database; default: SQLite in a temp dir")
    parser.add_argument("--no-screens", action="store_true", help="time the store's reads only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bridge.db'}"
        engine = make_engine(url)
        upgrade(engine)
        rng = random.Random(15)
        start = time.perf_counter()
        big = seed(engine, 1, "big", args.accounts, rng)
        small = seed(engine, 2, "small", args.baseline, rng)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        seeded = time.perf_counter() - start
        backend = "PostgreSQL" if engine.dialect.name == "postgresql" else "SQLite"
        print(
            f"Console reads, {backend}, {args.accounts:,} vs {args.baseline:,} accounts in one database "
            f"(median of {args.repeat}; {platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; seeding took {seeded:.0f} s, not counted)\n"
        )
        print(f"| read | ms at {args.baseline:,} | ms at {args.accounts:,} | ratio |")
        print("|---|---:|---:|---:|")
        for (label, read_big), (_, read_small) in zip(queries(big), queries(small), strict=True):
            ms_small = median_ms(engine, read_small, args.repeat)
            ms_big = median_ms(engine, read_big, args.repeat)
            print(f"| {label} | {ms_small:.2f} | {ms_big:.2f} | {ms_big / ms_small:.1f} |")
        if not args.no_screens:
            client, runtime = screens_client(url, Path(tmp), ["big", "small"])
            since = (NOW - timedelta(days=7)).date().isoformat()
            with transaction(engine, write=False) as conn:
                run_big = store_runs.runs_page(conn, big["id"])[0][0].id
                run_small = store_runs.runs_page(conn, small["id"])[0][0].id
            print("\nThe console's screens: server time through the Flask app (`create_app(...).test_client()`, ")
            print("signed in as an operator; the response rendered in full)\n")
            print(f"| screen | ms at {args.baseline:,} | ms at {args.accounts:,} | ratio | status |")
            print("|---|---:|---:|---:|---|")
            for (label, path_big), (_, path_small) in zip(
                screens(big, "big", run_big), screens(small, "small", run_small), strict=True
            ):
                ms_small, _ = median_screen_ms(client, path_small.replace("__SINCE__", since), args.repeat)
                ms_big, status = median_screen_ms(client, path_big.replace("__SINCE__", since), args.repeat)
                print(f"| {label} | {ms_small:.1f} | {ms_big:.1f} | {ms_big / ms_small:.1f} | {status} |")
            runtime.engine.dispose()
        print("\nQuery plans of the search (text 'ber'; status filter):\n")
        print("```")
        print("\n".join(search_plans(engine, big["id"])))
        print("```")
        engine.dispose()


if __name__ == "__main__":
    main()
