"""The product API at 100,000 accounts: the change feed and the snapshot over HTTP, against the
same rows read raw through SQLAlchemy, in one run.

    .venv/bin/python bench/feed_bench.py [--accounts 100000] [--limit 1000] [--postgres] [--breakdown]

One command, prints a Markdown table. What it does:
1. Generates a directory of N people in 10 groups (each in about 3; the mapping grants a role
   from 6 of them, so most people get one) as an LDIF export, and loads it with `bridge sync`
   (a real first full sync: accounts, identities, grants, audit, outbox and the feed's events,
   about two events a person: `account.created`, `account.pending`), on a temporary SQLite file
   or, with `--postgres`, a throwaway PostgreSQL cluster (tests/fixtures/postgres.py), then
   ANALYZEd (as autovacuum would have by the time a product reads).
2. Starts `bridge serve --no-scheduler` (granian, its defaults) and creates a product token.
3. Measures, each `--repeat` times (the table shows the median):
   - feed, HTTP: `GET /api/v1/events?limit=L` from the start, following `next` until `hasMore`
     is false, decoding every page, as a product catching up does;
   - feed, store (`--breakdown`): `bridge.store.events.read_events` in this process, page by
     page (no HTTP, no JSON, no `account` refresh): what the door adds on top is the difference;
   - feed, raw: `SELECT position, payload FROM account_events` by keyset pages of L, through
     SQLAlchemy Core (the payload decoded by the JSON column, as the store does): the baseline;
   - snapshot, HTTP: every page of `GET /api/v1/accounts?limit=L`, into a dict by id (a product
     reconciling its accounts);
   - snapshot, store (`--breakdown`): `bridge.store.snapshot.snapshot_page` in this process;
   - snapshot, raw: `SELECT * FROM accounts` by keyset pages of L (no roles, groups, externalId):
     the baseline.
The machine is shared and noisy: compare the ratios to the raw reads of the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bridge.store.db import make_engine, transaction  # noqa: E402
from bridge.store.events import read_events  # noqa: E402
from bridge.store.snapshot import snapshot_page  # noqa: E402
from bridge.store.tables import Account, AccountEventRow, Tenant  # noqa: E402

BASE = "dc=example,dc=org"
GROUPS = 10
MAPPING = """\
[roles.member]
title = "Member"

[roles.reports]
title = "Reports"
billable = false

[[rules]]
group_pattern = "^group0[0-4]"
roles = ["member"]

[[rules]]
group_pattern = "^group09"
roles = ["reports"]
"""
BRIDGE = [sys.executable, "-m", "bridge"]


def groups_of(i: int) -> list[int]:
    out: list[int] = []
    for x in (i % GROUPS, (7 * i + 1) % GROUPS, (13 * i + 2) % GROUPS):
        if x not in out:
            out.append(x)
    return out


def anchor(kind: str, i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench:{kind}:{i}"))


def generate(path: Path, n: int) -> None:
    """An OpenLDAP export (slapcat's shape: entryUUID on every entry) of n people and the groups."""
    members: list[list[int]] = [[] for _ in range(GROUPS)]
    with open(path, "w") as f:
        w = f.write
        for i in range(n):
            w(
                f"dn: uid=user{i:06d},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: user{i:06d}\n"
                f"cn: User {i}\ngivenName: User\nsn: N{i}\nmail: user{i:06d}@example.org\n"
                f"entryUUID: {anchor('user', i)}\n"
            )
            for x in groups_of(i):
                members[x].append(i)
                w(f"memberOf: cn=group{x:04d},ou=groups,{BASE}\n")
            w("\n")
        for x in range(GROUPS):
            w(
                f"dn: cn=group{x:04d},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: group{x:04d}\n"
                f"entryUUID: {anchor('group', x)}\n"
            )
            for i in members[x]:
                w(f"member: uid=user{i:06d},ou=people,{BASE}\n")
            w("\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(config: Path, *args: str) -> str:
    proc = subprocess.run([*BRIDGE, "--config", str(config), *args], capture_output=True, text=True, cwd=config.parent)
    if proc.returncode != 0:
        sys.exit(f"bridge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def timed(repeat: int, work: Callable[[], int]) -> tuple[float, int]:
    """The median wall time of `repeat` runs of `work`, and the rows the last one read."""
    seconds, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = work()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), rows


# ---- the six reads -------------------------------------------------------------------------------


def feed_http(http: requests.Session, base: str, limit: int) -> int:
    seen, after = 0, None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = http.get(f"{base}/api/v1/events", params=params, timeout=120)
        response.raise_for_status()
        body = response.json()
        seen += len(body["events"])
        after = body["next"]
        if not body["hasMore"]:
            return seen


def feed_store(engine: Any, tenant_id: int, limit: int) -> int:
    seen, after = 0, None
    while True:
        with transaction(engine, write=False) as conn:
            page = read_events(conn, tenant_id, after, limit)
        seen += len(page.events)
        after = page.last
        if not page.has_more:
            return seen


def feed_raw(engine: Any, tenant_id: int, limit: int) -> int:
    events = AccountEventRow.__table__
    seen, last = 0, 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(events.c.position, events.c.payload)
                .where(events.c.tenant_id == tenant_id, events.c.position > last)
                .order_by(events.c.position)
                .limit(limit)
            ).all()
        if not rows:
            return seen
        seen += len(rows)
        last = rows[-1].position


def snapshot_http(http: requests.Session, base: str, limit: int) -> int:
    accounts: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = http.get(f"{base}/api/v1/accounts", params=params, timeout=120)
        response.raise_for_status()
        body = response.json()
        for account in body["accounts"]:
            accounts[account["id"]] = account
        cursor = body["next"]
        if cursor is None:
            return len(accounts)


def snapshot_store(engine: Any, tenant_id: int, limit: int) -> int:
    seen, cursor = 0, None
    while True:
        with transaction(engine, write=False) as conn:
            page = snapshot_page(conn, tenant_id, "bench", cursor, limit, None)
        seen += len(page.accounts)
        cursor = page.next_cursor
        if cursor is None:
            return seen


def snapshot_raw(engine: Any, tenant_id: int, limit: int) -> int:
    accounts = Account.__table__
    seen, last = 0, ""
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(accounts)
                .where(accounts.c.tenant_id == tenant_id, accounts.c.id > last)
                .order_by(accounts.c.id)
                .limit(limit)
            ).all()
        if not rows:
            return seen
        seen += len(rows)
        last = rows[-1].id


# ---- the run -------------------------------------------------------------------------------------


def wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"bridge serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    sys.exit(f"bridge serve not ready after 60 s:\n{log.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=1000, help="page size of every read (the API's maximum)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each read; the table shows the median")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster instead of SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the store's reads in this process (no HTTP, no JSON)"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bridge-feed-bench-"))
    pg = None
    server = None
    try:
        if args.postgres:
            from tests.fixtures.postgres import PgServer

            pg = PgServer()
            url = pg.start().url("postgres")
        else:
            url = f"sqlite:///{root / 'bridge.db'}"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        (root / "mapping.toml").write_text(MAPPING)
        config = root / "bridge.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n\n[server]\npublic_url = "{base}"\naccess_log = false\n\n'
            '[[tenants]]\nname = "bench"\nmappings = "mapping.toml"\n\n'
            '[[sources]]\nname = "dir"\ntenant = "bench"\nkind = "ldif"\nflavor = "openldap"\n'
            f'path = "directory.ldif"\nuser_base = "ou=people,{BASE}"\ngroup_base = "ou=groups,{BASE}"\n'
            "deletion_threshold = 1.0\n"
        )
        generate(root / "directory.ldif", args.accounts)
        cli(config, "db", "upgrade")
        t0 = time.perf_counter()
        cli(config, "sync")
        load_seconds = time.perf_counter() - t0
        token = cli(config, "tokens", "create", "--tenant", "bench", "--read-only").strip().splitlines()[-1]

        log = root / "serve.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [*BRIDGE, "--config", str(config), "serve", "--no-scheduler", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        wait_ready(base, server, log)

        engine = make_engine(url)
        with engine.connect() as conn:
            tenant_id = conn.execute(select(Tenant.id).where(Tenant.name == "bench")).scalar_one()
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"

        measures: list[tuple[str, str, Callable[[], int]]] = [
            ("feed", "raw SELECT (baseline)", lambda: feed_raw(engine, tenant_id, args.limit)),
            ("feed", "store read_events", lambda: feed_store(engine, tenant_id, args.limit)),
            ("feed", "HTTP GET /api/v1/events", lambda: feed_http(http, base, args.limit)),
            ("snapshot", "raw SELECT (baseline)", lambda: snapshot_raw(engine, tenant_id, args.limit)),
            ("snapshot", "store snapshot_page", lambda: snapshot_store(engine, tenant_id, args.limit)),
            ("snapshot", "HTTP GET /api/v1/accounts", lambda: snapshot_http(http, base, args.limit)),
        ]
        if not args.breakdown:
            measures = [m for m in measures if not m[1].startswith("store")]
        if args.postgres:
            # The statistics autovacuum would have gathered by the time a product reads: right
            # after the load, the snapshot's joins are planned blind (20k accounts: 35 s, not 3.5).
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        # Untimed: the first read of a table warms the page cache and the connection pool.
        feed_raw(engine, tenant_id, args.limit)
        snapshot_raw(engine, tenant_id, args.limit)
        results = []
        for what, how, work in measures:
            seconds, rows = timed(args.repeat, work)
            results.append((what, how, seconds, rows))
            print(f"  {what} {how}: {rows} rows in {seconds:.2f} s", file=sys.stderr, flush=True)

        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"\n{args.accounts:,} accounts ({backend}), first sync (the load) {load_seconds:.1f} s; "
            f"pages of {args.limit}; median of {args.repeat}; {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}\n"
        )
        print("| read | how | rows | seconds | rows/s | × baseline |")
        print("|---|---|---|---|---|---|")
        baseline: dict[str, float] = {}
        for what, how, seconds, rows in results:
            baseline.setdefault(what, seconds)
            print(
                f"| {what} | {how} | {rows:,} | {seconds:.2f} | {rows / seconds:,.0f} | "
                f"{seconds / baseline[what]:.1f} |"
            )
        engine.dispose()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if pg is not None:
            pg.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
