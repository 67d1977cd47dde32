"""Directory sync benchmark: bridge's LDAP sync against a raw ldap3 dump of the same entries.

    .venv/bin/python bench/sync_bench.py                      # 100k users, 1k groups (about 4 min)
    .venv/bin/python bench/sync_bench.py --users 10000 --groups 100

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
     sync with nothing changed, a delta with nothing changed, and a delta after 1% of the users
     changed (their `title` and `mail`, written with ldapmodify, untimed).
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
group_pattern = "^group0[0-4]"
roles = ["member"]

[[rules]]
group_pattern = "^group09"
roles = ["reports"]
"""


def groups_of(i: int, g: int) -> list[int]:
    out: list[int] = []
    for x in (i % g, (7 * i + 1) % g, (13 * i + 2) % g):
        if x not in out:
            out.append(x)
    return out


def generate(path: Path, n: int, g: int) -> None:
    """The recipe's gen.py, offline mode (users carry memberOf), without the base entries."""
    members: list[list[int]] = [[] for _ in range(g)]
    for i in range(n):
        for x in groups_of(i, g):
            members[x].append(i)
    with open(path, "w") as f:
        w = f.write
        w(f"dn: ou=former,{BASE}\nobjectClass: organizationalUnit\nou: former\n\n")
        for i in range(n):
            w(
                f"dn: uid=user{i:06d},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: user{i:06d}\n"
                f"cn: User {i}\ngivenName: User\nsn: N{i}\nmail: user{i:06d}@example.org\nemployeeNumber: {i}\n"
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


def write_config(root: Path, url: str) -> Path:
    (root / "mapping.toml").write_text(MAPPING)
    config = root / "bridge.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{root / "bridge.db"}"\n\n'
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
    t0 = time.perf_counter()
    for base, filter_, attributes in (
        (cfg.get("user_base"), source.user_filter, source.user_attributes),
        (cfg.get("group_base"), source.group_filter, source.group_attributes),
    ):
        for e in conn.extend.standard.paged_search(
            base, filter_, search_scope=SUBTREE, attributes=attributes, paged_size=1000, generator=True
        ):
            if e["type"] == "searchResEntry":
                entries += bool(e["dn"]) and bool(e["raw_attributes"])
    seconds = time.perf_counter() - t0
    conn.unbind()
    return {"seconds": seconds, "detail": f"{entries} entries"}


def phase_sync(config_path: Path, mode: str) -> dict[str, Any]:
    from bridge.config import load_config
    from bridge.engine.sync import run_sync
    from bridge.store.db import make_engine

    config = load_config(config_path)
    engine = make_engine(config.database_url)
    t0 = time.perf_counter()
    result = run_sync(config, engine, "dir", mode=mode)
    seconds = time.perf_counter() - t0
    if result.aborted:
        raise SystemExit(f"sync aborted: {result.reason}")
    counts = {k: v for k, v in result.counts.items() if v}
    steps = " ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
    detail = f"{result.mode}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    return {"seconds": seconds, "detail": detail + (f" [s: {steps}]" if steps else ""), "steps": result.timings}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault(PASSWORD_ENV, "secret")
    if args.phase:
        run_phase(args)
        return

    from click.testing import CliRunner

    from bridge.cli import main as bridge_main
    from tests.fixtures.slapd import Slapd

    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bridge-sync-bench-") as tmp:
        root = Path(tmp)
        ldif = root / "data.ldif"
        t0 = time.perf_counter()
        generate(ldif, args.users, args.groups)
        slapd = Slapd()
        try:
            slapd.slapadd(ldif)
            slapd.start()
            # slapadd bypasses syncprov, which keeps contextCSN (the delta bookmark) from its
            # first online write on: one write, as any production server has had.
            slapd.add_ldif(f"dn: ou=former,{BASE}\nchangetype: modify\nreplace: description\ndescription: x\n")
            load = time.perf_counter() - t0
            print(f"generated and loaded {args.users} users, {args.groups} groups in {load:.1f}s", file=sys.stderr)
            config = write_config(root, slapd.url)
            upgrade = CliRunner().invoke(bridge_main, ["--config", str(config), "db", "upgrade"])
            assert upgrade.exit_code == 0, upgrade.output
            # slapd's first read after slapadd pays for cold pages (measured 24 s warm, 45 s cold
            # at 100k): an untimed read first, so the baseline and bridge both read a warm server.
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
            change_users(slapd, args.users, changed)
            rows.append((f"delta after {changed} users (1%) changed", child(config, "delta")))
            print(f"  {rows[-1][0]}: {rows[-1][1]['seconds']:.2f}s", file=sys.stderr)
            # The same dump again at the end: on a shared machine one reading of the baseline
            # moved between 21 and 45 s; the ratios use the mean of the two.
            rows.append(("raw ldap3 paged dump, again", child(config, "raw")))
            print(f"  {rows[-1][0]}: {rows[-1][1]['seconds']:.2f}s", file=sys.stderr)
        finally:
            slapd.close()

    baseline = (rows[0][1]["seconds"] + rows[-1][1]["seconds"]) / 2
    print(f"\nDirectory sync, {args.users:,} users / {args.groups:,} groups, slapd on loopback, SQLite store")
    print(f"(x raw: against the mean of the two raw dumps, {baseline:.2f} s)")
    print(f"{'phase':<42} {'seconds':>8} {'x raw':>6} {'peak RSS MB':>12}  detail")
    for label, r in rows:
        ratio = r["seconds"] / baseline
        print(f"{label:<42} {r['seconds']:>8.2f} {ratio:>6.2f} {r['peak_rss_mb']:>12.0f}  {r['detail']}")
    if args.json:
        args.json.write_text(json.dumps({"users": args.users, "groups": args.groups, "phases": dict(rows)}, indent=2))


if __name__ == "__main__":
    main()
