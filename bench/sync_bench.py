"""Directory sync benchmark: bridge's LDAP sync against a raw ldap3 dump of the same entries.

    .venv/bin/python bench/sync_bench.py                      # 100k users, 1k groups (about 4 min)
    .venv/bin/python bench/sync_bench.py --users 10000 --groups 100
    .venv/bin/python bench/sync_bench.py --postgres           # the same into PostgreSQL (--store both)
    .venv/bin/python bench/sync_bench.py --curve --store both # 10k / 100k / 1M (about 90 min here)

One command, prints a table (`--json FILE` also writes the figures). What it does:
1. Generates users and groups (each user in about 3 groups, as in the recipe's gen.py) and loads
   them into a throwaway slapd with `slapadd -q` (memberOf written in the LDIF: overlays do not
   run in slapadd).
2. Runs each phase in its own Python process, which reports its wall time and its own peak RSS
   (`ru_maxrss`), so no phase inherits another's memory:
   - raw: ldap3 `paged_search(generator=True)` over the same bases, filters and attributes as
     bridge, touching every entry and doing nothing else: the baseline (run once untimed first,
     so that slapd's cache is warm for every timed phase, and once more at the end: the ratios
     use the mean of the two timed dumps);
   - full sync (first: every account, audit event and activation mail is written), a second full
     sync with nothing changed, a delta with nothing changed, a delta after 1% of the users
     changed (their `title` and `mail`, written with ldapmodify, untimed), and a delta that reads
     every entry (the stored bookmark moved before the load, untimed: what a delta inside the
     clock-overlap window does on a server without syncprov, or on AD after a script touched
     every user's uSNChanged).
`--lean`: users carry only uid, cn, sn, givenName, mail, departmentNumber and memberOf (the
mapping gains a rule on departmentNumber, so the sync and the raw dump request it).
`BRIDGE_BENCH_PROFILE=FILE` in a `--phase` child writes a cProfile of the sync there instead.
The store is SQLite (a file in the temp dir) or, with `--postgres`, a database of a throwaway
PostgreSQL cluster (tests/fixtures/postgres.py; fsync off, as in the tests); `--store both` runs
the whole bench once per store.

`--curve` (the million-user curve, docs/benchmarks.md): for each of `--sizes` (10k, 100k, 1M
users, with users/100 groups), one slapd loaded as above and warmed with one `ldapsearch` (the C
client: an untimed ldap3 dump of a million entries would take minutes), one timed raw dump, then
per store a fresh database, its first full sync and a no-change delta. The table shows each first
sync against the size before (x10 users each step: linear is 10) and its peak RSS.
The mapping grants `member` through the first half of the groups and `reports` through the last
tenth, whatever their count, so the same share of people holds each role at every size.
The machine is shared and noisy: compare the ratios to the raw dump of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = "dc=example,dc=org"
PASSWORD_ENV = "BRIDGE_BENCH_LDAP_PASSWORD"
MAPPING = """\
[roles.member]
title = "Member"

[roles.reports]
title = "Reports"
billable = false

[[rules]]
group_pattern = "^group{zeros}[0-4]"
roles = ["member"]

[[rules]]
group_pattern = "^group{zeros}9"
roles = ["reports"]
"""
# --lean: the mapping also reads departmentNumber, which the lean entries carry.
LEAN_RULE = """
[[rules]]
attribute = "departmentNumber"
equals = "D7"
roles = ["reports"]
"""
# A bookmark from before any entry was written: the next delta reads every entry, as a delta
# inside the clock-overlap window does on a server without syncprov, or one on AD after a
# script touched every user's uSNChanged.
REWOUND_MARK = "csn:20000101000000.000000Z#000000#000#000000"


def mapping(g: int) -> str:
    """The first half of the groups grant member, the last tenth reports, whatever their count
    (a power of ten, 10 to 10,000; group names have 4 digits): the same share of people holds
    each role at every size. 1,000 groups: ^group0[0-4] and ^group09, as before."""
    digits = len(str(g - 1)) if g > 1 else 1
    if g not in (10, 100, 1_000, 10_000):
        digits = 3  # any other count: the 1,000-group patterns
    return MAPPING.format(zeros="0" * (4 - digits))


def groups_of(i: int, g: int) -> list[int]:
    out: list[int] = []
    for x in (i % g, (7 * i + 1) % g, (13 * i + 2) % g):
        if x not in out:
            out.append(x)
    return out


def generate(path: Path, n: int, g: int, lean: bool = False) -> None:
    """The recipe's gen.py, offline mode (users carry memberOf), without the base entries.
    `lean`: users carry uid, cn, sn, givenName, mail, departmentNumber and memberOf only."""
    members: list[list[int]] = [[] for _ in range(g)]
    for i in range(n):
        for x in groups_of(i, g):
            members[x].append(i)
    with open(path, "w") as f:
        w = f.write
        w(f"dn: ou=former,{BASE}\nobjectClass: organizationalUnit\nou: former\n\n")
        for i in range(n):
            extra = f"departmentNumber: D{i % 10}\n" if lean else f"employeeNumber: {i}\n"
            w(
                f"dn: uid=user{i:06d},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: user{i:06d}\n"
                f"cn: User {i}\ngivenName: User\nsn: N{i}\nmail: user{i:06d}@example.org\n{extra}"
            )
            for x in groups_of(i, g):
                w(f"memberOf: cn=group{x:04d},ou=groups,{BASE}\n")
            w("\n")
        for x in range(g):
            w(f"dn: cn=group{x:04d},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: group{x:04d}\n")
            for i in members[x]:
                w(f"member: uid=user{i:06d},ou=people,{BASE}\n")
            if not members[x]:
                w(f"member: cn=admin,{BASE}\n")
            w("\n")


def write_config(root: Path, url: str, groups: int, database_url: str | None = None, lean: bool = False) -> Path:
    (root / "mapping.toml").write_text(mapping(groups) + (LEAN_RULE if lean else ""))
    config = root / "bridge.toml"
    database_url = database_url or f"sqlite:///{root / 'bridge.db'}"
    config.write_text(
        f'[database]\nurl = "{database_url}"\n\n'
        '[[tenants]]\nname = "bench"\nmappings = "mapping.toml"\n\n'
        f'[[sources]]\nname = "dir"\ntenant = "bench"\nkind = "ldap"\nflavor = "openldap"\nurl = "{url}"\n'
        f'bind_dn = "cn=admin,{BASE}"\nbind_password_env = "{PASSWORD_ENV}"\n'
        f'user_base = "ou=people,{BASE}"\ngroup_base = "ou=groups,{BASE}"\npage_size = 1000\ntimeout = 120\n'
    )
    return config


# ---- phases (each runs in its own process) ---------------------------------------------------


def phase_raw(config_path: Path) -> dict[str, Any]:
    from ldap3 import NONE, SUBTREE, Connection, Server

    from bridge.config import load_config
    from bridge.engine.sources import make_source

    config = load_config(config_path)
    cfg = config.source("dir")
    # The attributes the sync requests, the mapping's included, so the raw read is comparable.
    source: Any = make_source(cfg, config.tenants[cfg.tenant].mapping())
    server = Server(cfg.get("url"), get_info=NONE)
    conn = Connection(server, cfg.get("bind_dn"), cfg.secret("bind_password"), auto_bind=True, auto_referrals=False)
    entries = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for base, filter_, attributes in (
        (cfg.get("user_base"), source.user_filter, source.user_attributes),
        (cfg.get("group_base"), source.group_filter, source.group_attributes),
    ):
        for e in conn.extend.standard.paged_search(
            base, filter_, search_scope=SUBTREE, attributes=attributes, paged_size=1000, generator=True
        ):
            if e["type"] == "searchResEntry":
                entries += bool(e["dn"]) and bool(e["raw_attributes"])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.unbind()
    return {"seconds": seconds, "cpu_seconds": cpu, "detail": f"{entries} entries"}


def phase_sync(config_path: Path, mode: str) -> dict[str, Any]:
    from bridge.config import load_config
    from bridge.engine.sync import run_sync
    from bridge.store.db import make_engine

    config = load_config(config_path)
    engine = make_engine(config.database_url)
    if os.environ.get("BRIDGE_BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
        try:
            run_sync(config, engine, "dir", mode=mode)
        finally:
            profile.disable()
            profile.dump_stats(os.environ["BRIDGE_BENCH_PROFILE"])
        return {"seconds": 0.0, "cpu_seconds": 0.0, "detail": "profiled", "steps": {}}
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_sync(config, engine, "dir", mode=mode)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if result.aborted:
        raise SystemExit(f"sync aborted: {result.reason}")
    counts = {k: v for k, v in result.counts.items() if v}
    steps = " ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    detail = f"{result.mode}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    detail += f" [s: {steps}]" if steps else ""
    return {"seconds": seconds, "cpu_seconds": cpu, "detail": detail, "steps": result.timings}


def run_phase(args: argparse.Namespace) -> None:
    out = phase_raw(args.config) if args.phase == "raw" else phase_sync(args.config, args.phase)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


# ---- driver -------------------------------------------------------------------------------


def child(config: Path, phase: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def change_users(slapd: Any, n: int, count: int) -> None:
    step = max(n // count, 1)
    records = [
        f"dn: uid=user{i:06d},ou=people,{BASE}\nchangetype: modify\nreplace: title\ntitle: Changed\n-\n"
        f"replace: mail\nmail: user{i:06d}.changed@example.org\n"
        for i in range(0, n, step)
    ][:count]
    slapd.add_ldif("\n".join(records))


def rewind_bookmark(config_path: Path) -> None:
    """Move the stored delta bookmark before every entry's change stamp (REWOUND_MARK)."""
    from datetime import UTC, datetime

    from bridge.config import load_config
    from bridge.store.db import make_engine, transaction
    from bridge.store.delta import load_bookmark, save_bookmark
    from bridge.store.tenants import get_tenant

    engine = make_engine(load_config(config_path).database_url)
    with transaction(engine) as conn:
        tenant = get_tenant(conn, "bench")
        state = load_bookmark(conn, tenant.id, "dir")
        assert state.get("mark"), state
        values = {k: v or "" for k, v in state.items()}
        save_bookmark(conn, tenant.id, "dir", {**values, "mark": REWOUND_MARK}, datetime.now(UTC))
    engine.dispose()


class Directory:
    """A throwaway slapd loaded with `users` users and `groups` groups (generated, slapadd -q)."""

    def __init__(self, root: Path, users: int, groups: int, lean: bool = False) -> None:
        from tests.fixtures.slapd import Slapd

        self.users, self.groups, self.lean = users, groups, lean
        ldif = root / f"data-{users}.ldif"
        t0 = time.perf_counter()
        generate(ldif, users, groups, lean)
        # about 2.5 KB of mdb per user with these indexes (2.4 GB at 1M): room for growth too
        self.slapd = Slapd(maxsize=max(4 << 30, users * 8192))
        try:
            self.slapd.slapadd(ldif, timeout=7200)  # a million users: over 10 minutes here
            ldif.unlink()
            self.slapd.start()
            # slapadd bypasses syncprov, which keeps contextCSN (the delta bookmark) from its
            # first online write on: one write, as any production server has had.
            self.slapd.add_ldif(f"dn: ou=former,{BASE}\nchangetype: modify\nreplace: description\ndescription: x\n")
        except BaseException:
            self.slapd.close()
            raise
        self.load_seconds = time.perf_counter() - t0
        print(f"generated and loaded {users} users, {groups} groups in {self.load_seconds:.1f}s", file=sys.stderr)

    @property
    def url(self) -> str:
        return str(self.slapd.url)

    def warm(self) -> None:
        """slapd's first read after slapadd pays for cold pages (measured 24 s warm, 45 s cold at
        100k): one read with the C client (a few seconds, where an ldap3 dump of a million users
        takes minutes), so that the baseline and bridge both read a warm server."""
        from tests.fixtures.slapd import find_tool

        tool = find_tool("ldapsearch")
        assert tool is not None, "ldapsearch not found (apt-get install ldap-utils)"
        for base in (f"ou=people,{BASE}", f"ou=groups,{BASE}"):
            command = [tool, "-x", "-LLL", "-H", self.url, "-D", f"cn=admin,{BASE}", "-w", "secret", "-b", base]
            command += ["-E", "pr=1000/noprompt", "(objectClass=*)", "*", "+"]
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)

    def close(self) -> None:
        self.slapd.close()


class Databases:
    """Empty bridge databases: SQLite files under `root`, or databases of one throwaway
    PostgreSQL cluster (tests/fixtures/postgres.py) started on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg: Any = None
        self.count = 0

    def new(self, store: str) -> str:
        self.count += 1
        if store == "sqlite":
            return f"sqlite:///{self.root / f'bridge-{self.count}.db'}"
        from tests.fixtures.postgres import PgServer, _connect_admin

        if self.pg is None:
            self.pg = PgServer()
            self.pg.start()
        name = f"bench_{self.count}"
        with _connect_admin(self.pg.cluster) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return str(self.pg.cluster.url(name))

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()


def prepare(root: Path, directory: Directory, database_url: str) -> Path:
    """A config reading `directory` into `database_url`, and its schema."""
    from click.testing import CliRunner

    from bridge.cli import main as bridge_main

    sub = Path(tempfile.mkdtemp(dir=root))
    config = write_config(sub, directory.url, directory.groups, database_url, directory.lean)
    upgrade = CliRunner().invoke(bridge_main, ["--config", str(config), "db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=None, help="default: 1,000, or users/100 past 100,000")
    parser.add_argument(
        "--store", choices=["sqlite", "postgres", "both"], default="sqlite", help="the store bridge writes to"
    )
    parser.add_argument("--postgres", action="store_const", const="postgres", dest="store", help="--store postgres")
    parser.add_argument(
        "--lean",
        action="store_true",
        help="users with uid, cn, sn, givenName, mail, departmentNumber and memberOf only",
    )
    parser.add_argument("--curve", action="store_true", help="the million-user curve (see the docstring)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="user counts of --curve")
    parser.add_argument("--no-raw", action="store_true", help="--curve without the raw ldap3 dumps")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault(PASSWORD_ENV, "secret")
    if args.phase:
        run_phase(args)
        return
    if args.groups is None:
        args.groups = max(args.users // 100, 1_000)
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if args.curve:
        curve(args, stores)
    else:
        for store in stores:
            single(args, store)


def single(args: argparse.Namespace, store: str) -> None:
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bridge-sync-bench-") as tmp:
        root = Path(tmp)
        directory = Directory(root, args.users, args.groups, args.lean)
        databases = Databases(root)
        try:
            config = prepare(root, directory, databases.new(store))
            directory.warm()
            child(config, "raw")
            for label, phase in (
                ("raw ldap3 paged dump (baseline)", "raw"),
                ("first full sync", "full"),
                ("second full sync, no changes", "full"),
                ("delta, no changes", "delta"),
            ):
                rows.append((label, child(config, phase)))
                print(f"  {label}: {rows[-1][1]['seconds']:.2f}s", file=sys.stderr)
            changed = max(args.users // 100, 1)
            change_users(directory.slapd, args.users, changed)
            rows.append((f"delta after {changed} users (1%) changed", child(config, "delta")))
            print(f"  {rows[-1][0]}: {rows[-1][1]['seconds']:.2f}s", file=sys.stderr)
            rewind_bookmark(config)
            rows.append(("delta reading every entry", child(config, "delta")))
            print(f"  {rows[-1][0]}: {rows[-1][1]['seconds']:.2f}s", file=sys.stderr)
            # The same dump again at the end: on a shared machine one reading of the baseline
            # moved between 21 and 45 s; the ratios use the mean of the two.
            rows.append(("raw ldap3 paged dump, again", child(config, "raw")))
            print(f"  {rows[-1][0]}: {rows[-1][1]['seconds']:.2f}s", file=sys.stderr)
        finally:
            directory.close()
            databases.close()

    baseline = (rows[0][1]["seconds"] + rows[-1][1]["seconds"]) / 2
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    kind = "lean entries" if args.lean else "bench entries"
    print(
        f"\nDirectory sync, {args.users:,} users / {args.groups:,} groups ({kind}), slapd on loopback, "
        f"{names[store]} store"
    )
    print(f"(x raw: against the mean of the two raw dumps, {baseline:.2f} s)")
    # CPU seconds of the phase's own process (all its threads; slapd and SQLite's I/O waits are
    # not in them): steadier than wall time when other work shares the machine.
    print(f"{'phase':<42} {'seconds':>8} {'x raw':>6} {'CPU s':>6} {'peak RSS MB':>12}  detail")
    for label, r in rows:
        ratio = r["seconds"] / baseline
        cpu = r["cpu_seconds"]
        print(f"{label:<42} {r['seconds']:>8.2f} {ratio:>6.2f} {cpu:>6.1f} {r['peak_rss_mb']:>12.0f}  {r['detail']}")
    if args.json:
        path = args.json if args.store != "both" else args.json.with_suffix(f".{store}.json")
        out = {"users": args.users, "groups": args.groups, "lean": args.lean, "store": store, "phases": dict(rows)}
        path.write_text(json.dumps(out, indent=2))


def curve(args: argparse.Namespace, stores: list[str]) -> None:
    """Per size (users/100 groups, at least 100): load slapd, warm it, one raw dump, then for each
    store a fresh database, its first full sync and a no-change delta. One slapd at a time."""
    sizes = [int(x) for x in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bridge-sync-curve-") as tmp:
        root = Path(tmp)
        databases = Databases(root)
        try:
            for users in sizes:
                groups = max(users // 100, 100)
                directory = Directory(root, users, groups)
                try:
                    directory.warm()
                    config = prepare(root, directory, databases.new(stores[0]))
                    raw = None if args.no_raw else child(config, "raw")
                    if raw is not None:
                        print(f"  {users}: raw {raw['seconds']:.2f}s", file=sys.stderr)
                    for store in stores:
                        if store != stores[0]:
                            config = prepare(root, directory, databases.new(store))
                        first = child(config, "full")
                        print(f"  {users} {store}: first full sync {first['seconds']:.2f}s", file=sys.stderr)
                        delta = child(config, "delta")
                        results.append(
                            {
                                "users": users,
                                "groups": groups,
                                "store": store,
                                "load_seconds": directory.load_seconds,
                                "raw": raw,
                                "first": first,
                                "delta": delta,
                            }
                        )
                        if args.json:  # after each size: a long curve that fails keeps what it measured
                            args.json.write_text(json.dumps(results, indent=2))
                finally:
                    directory.close()
        finally:
            databases.close()
    print_curve(results, sizes, stores)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_curve(results: list[dict[str, Any]], sizes: list[int], stores: list[str]) -> None:
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    print("\nThe million-user curve: first full sync per size (slapd on loopback)")
    print(
        f"| {'users / groups':<18} | {'store':<10} | {'raw dump s':>10} | {'first sync s':>12} | {'x raw':>5} "
        f"| {'x prev size':>11} | {'µs/user':>7} | {'peak RSS MB':>11} | {'no-change delta s':>17} | steps (s)"
    )
    print(
        f"|{'-' * 20}|{'-' * 12}|{'-' * 11}:|{'-' * 13}:|{'-' * 6}:|{'-' * 12}:|{'-' * 8}:|{'-' * 12}:|{'-' * 18}:|---"
    )
    previous: dict[str, dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: (r["users"], stores.index(r["store"]))):
        first, store = r["first"], r["store"]
        prev = previous.get(store)
        growth = f"{first['seconds'] / prev['first']['seconds']:.2f}" if prev else "-"
        steps = " ".join(f"{k} {v:.1f}" for k, v in first.get("steps", {}).items())
        raw = f"{r['raw']['seconds']:.1f}" if r["raw"] else "-"
        ratio = f"{first['seconds'] / r['raw']['seconds']:.2f}" if r["raw"] else "-"
        print(
            f"| {r['users']:>9,} / {r['groups']:>6,} | {names[store]:<10} | {raw:>10} "
            f"| {first['seconds']:>12.1f} | {ratio:>5} | {growth:>11} "
            f"| {first['seconds'] / r['users'] * 1e6:>7.0f} | {first['peak_rss_mb']:>11.0f} "
            f"| {r['delta']['seconds']:>17.2f} | {steps}"
        )
        previous[store] = r
    print("(x prev size: the first sync's time against the size before; x10 users each step)")


if __name__ == "__main__":
    main()
