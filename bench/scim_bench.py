"""SCIM benchmark: bridge vs scim2-server 0.8.3 vs a bare Flask route, on the same requests.

    .venv/bin/python bench/scim_bench.py                 # 100k users, a 10k-member group
    .venv/bin/python bench/scim_bench.py --users 5000 --group 1000 --seconds 3 --no-scim2-server

One command, prints a table (and --json FILE writes the figures). What it does:
1. bridge: a temporary deployment (SQLite, WAL) served by `bridge serve` (granian, 2 workers x 4
   threads by default; `--server gunicorn` for the other server bridge offers). Users are
   bulk-loaded through the store with the code paths of POST /Users (bridge.store.scim.write_user,
   then the core's replan in batches): loading 100k users over HTTP would take most of the time
   budget and measure the same code. Lookup latency is measured at 1k users and again at the full
   count.
2. A bare Flask JSON route served by the same server and settings: the framework ceiling.
3. scim2-server 0.8.3 (in-memory store), installed into bench/.venv-scim2-server (its pins clash
   with scim2-tester's), loaded over /Bulk with --reference-users users (default 10k: loading
   100k into it takes longer than the whole bench; it gets the smaller, easier data set).

The client is a raw-socket HTTP/1.1 keep-alive client, one connection per thread: requests or
httpx would cap near 700 req/s here and measure themselves (shared/reference/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_SCIM2 = ROOT / "bench" / ".venv-scim2-server"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


# ---- a small keep-alive HTTP client over plain sockets --------------------------------------------


class Conn:
    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return sock

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.auth}"
            f"Content-Type: application/scim+json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        if self.sock is None:
            # HTTP/1.0 servers (scim2-server runs on wsgiref) close after each response.
            self.sock = self._connect()
        self.sock.sendall(head.encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.buf) < length:
            self._fill()
        payload, self.buf = self.buf[:length], self.buf[length:]
        if lines[0].startswith("HTTP/1.0") or any(ln.lower() == "connection: close" for ln in lines[1:]):
            self.close()
        return status, payload

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def throughput(port: int, token: str | None, paths: Callable[[], str], threads: int, seconds: float) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def run(i: int) -> None:
        conn = Conn(port, token)
        try:
            while time.monotonic() < stop:
                status, body = conn.request("GET", paths())
                if status != 200:
                    errors.append(f"{status} {body[:200]!r}")
                    return
                done[i] += 1
        finally:
            conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(f"lookup failed: {errors[0]}")
    return sum(done) / (time.monotonic() - started)


def median_ms(
    port: int,
    token: str | None,
    make: Callable[[int], tuple[str, str, Any]],
    n: int,
    expect: tuple[int, ...] = (200, 201, 204),
) -> float:
    conn = Conn(port, token)
    times = []
    try:
        for i in range(n):
            method, path, body = make(i)
            t = time.perf_counter()
            status, payload = conn.request(method, path, body)
            times.append(time.perf_counter() - t)
            if status not in expect:
                raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
    finally:
        conn.close()
    return statistics.median(times) * 1000


def post_rate(port: int, token: str | None, base: str, prefix: str, n: int, threads: int = 8) -> float:
    per = n // threads

    def run(i: int) -> None:
        conn = Conn(port, token)
        try:
            for k in range(per):
                name = f"{prefix}-{i}-{k}@post.example"
                status, body = conn.request("POST", f"{base}/Users", user_body(name))
                if status != 201:
                    raise RuntimeError(f"POST: {status} {body[:200]!r}")
        finally:
            conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per * threads / (time.monotonic() - started)


def user_body(name: str) -> dict[str, Any]:
    return {
        "schemas": [USER],
        "userName": name,
        "externalId": name,
        "active": True,
        "name": {"givenName": "Bench", "familyName": name.split("@")[0]},
        "emails": [
            {"value": name, "type": "work", "primary": True},
            {"value": name.replace("@", "+home@"), "type": "home"},
        ],
    }


def wait_up(port: int, path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-2000:]}")
        try:
            conn = Conn(port, None)
            conn.request("GET", path)
            conn.close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not start:\n{log.read_text()[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- bridge --------------------------------------------------------------------------------------


class Bridge:
    def __init__(self, root: Path, server: str, workers: int, threads: int) -> None:
        self.root = root
        self.port = free_port()
        self.server, self.workers, self.threads = server, workers, threads
        self.config = root / "bridge.toml"
        mapping = root / "mapping.toml"
        shutil.copy(ROOT / "mappings" / "example.toml", mapping)
        self.config.write_text(
            f'[database]\nurl = "sqlite:///{root / "bridge.db"}"\n\n'
            f'[server]\npublic_url = "http://127.0.0.1:{self.port}"\n\n'
            '[[tenants]]\nname = "bench"\nmappings = "mapping.toml"\n'
        )
        from bridge.runtime import open_runtime
        from bridge.store.db import transaction
        from bridge.store.tenants import get_tenant
        from bridge.store.tokens import create_token

        self.runtime = open_runtime(self.config)
        with transaction(self.runtime.engine) as conn:
            self.tenant_id = get_tenant(conn, "bench").id
            _, self.token = create_token(conn, self.tenant_id, "bench", False, datetime.now(UTC))
        self.proc: subprocess.Popen[bytes] | None = None
        self.loaded = 0

    def load_users(self, upto: int, batch: int = 500) -> None:
        """POST /Users' code path without HTTP: store the identity, then replan through the core."""
        from bridge.provision.apply import ApplyContext
        from bridge.provision.replan import replan, tenant_view
        from bridge.scim.resources import canonical, source_user
        from bridge.scim.schema import USER_TYPE
        from bridge.store import scim as storage
        from bridge.store.db import transaction

        config = self.runtime.config.tenants["bench"]
        while self.loaded < upto:
            now = datetime.now(UTC)
            count = min(batch, upto - self.loaded)
            with transaction(self.runtime.engine) as conn:
                ctx = ApplyContext(
                    tenant_id=self.tenant_id, tenant_name="bench", actor="bench", correlation_id="bench-load", now=now
                )
                anchors = []
                for i in range(self.loaded, self.loaded + count):
                    anchor = str(uuid.UUID(int=i + 1))
                    doc = canonical(user_body(f"user{i}@bench.example"), USER_TYPE)
                    storage.write_user(conn, self.tenant_id, anchor, doc, now, create=True, identity_of=source_user)
                    anchors.append(anchor)
                replan(conn, tenant_view(conn, config), "scim", anchors, ctx)
            self.loaded += count

    def big_group(self, size: int) -> str:
        from bridge.store import scim as storage
        from bridge.store.db import transaction

        anchor = str(uuid.uuid4())
        with transaction(self.runtime.engine) as conn:
            storage.write_group(
                conn, self.tenant_id, anchor, {"displayName": "bench-big"}, datetime.now(UTC), create=True
            )
            storage.add_members(conn, self.tenant_id, anchor, [str(uuid.UUID(int=i + 1)) for i in range(size)])
        return anchor

    def start(self) -> None:
        exe = Path(sys.executable).with_name("bridge")
        log = self.root / "serve.log"
        self.proc = subprocess.Popen(
            [
                str(exe),
                "--config",
                str(self.config),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-scheduler",
                "--server",
                self.server,
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
            ],
            stdout=open(log, "wb"),  # noqa: SIM115 - the server outlives this block; closed with it
            stderr=subprocess.STDOUT,
        )
        wait_up(self.port, "/healthz", self.proc, log)


def start_flask(root: Path, server: str, workers: int, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    app = root / "bare_flask.py"
    app.write_text(
        "from flask import Flask, jsonify\napp = Flask('bare')\n\n"
        "@app.get('/scim/v2/Users')\ndef users():\n"
        "    return jsonify(schemas=['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults=0,\n"
        "                   Resources=[], startIndex=1, itemsPerPage=0)\n"
    )
    log = root / "flask.log"
    granian = [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        "wsgi",
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--http",
        "1",
        "--log-level",
        "warning",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "bare_flask:app",
    ]
    gunicorn = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--chdir",
        str(root),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        str(workers),
        "--threads",
        str(threads),
        "-k",
        "gthread",
        "--keep-alive",
        "75",
        "bare_flask:app",
    ]
    proc = subprocess.Popen(
        granian if server == "granian" else gunicorn,
        cwd=root,
        stdout=open(log, "wb"),  # noqa: SIM115 - the server outlives this block; closed with it
        stderr=subprocess.STDOUT,
    )
    wait_up(port, "/scim/v2/Users", proc, log)
    return proc, port


def start_scim2_server(root: Path, users: int) -> tuple[subprocess.Popen[bytes], int]:
    python = VENV_SCIM2 / "bin" / "python"
    if not python.exists():
        print(f"installing scim2-server==0.8.3 into {VENV_SCIM2} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV_SCIM2)], check=True)
        (VENV_SCIM2 / ".gitignore").write_text("*\n")  # a throwaway venv, never committed
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "scim2-server==0.8.3"], check=True)
    port = free_port()
    log = root / "scim2-server.log"
    proc = subprocess.Popen(
        [
            str(VENV_SCIM2 / "bin" / "scim2-server"),
            "--hostname",
            "127.0.0.1",
            "--port",
            str(port),
            "--bearer-token",
            "s3cret",
        ],
        stdout=open(log, "wb"),  # noqa: SIM115 - the server outlives this block; closed with it
        stderr=subprocess.STDOUT,
    )
    wait_up(port, "/v2/ServiceProviderConfig", proc, log)
    conn = Conn(port, "s3cret")
    try:
        for start in range(0, users, 500):
            ops = [
                {"method": "POST", "path": "/Users", "bulkId": str(i), "data": user_body(f"user{i}@bench.example")}
                for i in range(start, min(start + 500, users))
            ]
            status, body = conn.request("POST", "/v2/Bulk", {"schemas": [BULK], "Operations": ops})
            if status != 200:
                raise RuntimeError(f"scim2-server bulk load: {status} {body[:300]!r}")
    finally:
        conn.close()
    return proc, port


def ids_by_filter(port: int, token: str, prefix: str, user_name: str) -> str:
    conn = Conn(port, token)
    try:
        _, body = conn.request("GET", f"{prefix}/Users?filter=" + q(f'userName eq "{user_name}"'))
        return str(json.loads(body)["Resources"][0]["id"])
    finally:
        conn.close()


def measure(
    name: str,
    port: int,
    token: str,
    prefix: str,
    users: int,
    group_id: str | None,
    args: Any,
    out: dict[str, dict[str, float]],
) -> None:
    print(f"measuring {name} ...", file=sys.stderr)
    rnd = random.Random(7)

    def lookup() -> str:
        n = rnd.randrange(users)
        return f"{prefix}/Users?filter=" + q(f'userName eq "user{n}@bench.example"')

    row = out.setdefault(name, {})
    row["lookup_1"] = throughput(port, token, lookup, 1, args.seconds)
    row["lookup_8"] = throughput(port, token, lookup, args.clients, args.seconds)
    row["lookup_ms"] = median_ms(port, token, lambda i: ("GET", lookup(), None), 200)
    row["email_filter_ms"] = median_ms(
        port,
        token,
        lambda i: (
            "GET",
            f"{prefix}/Users?filter="
            + q(f'emails[type eq "work" and value eq "user{rnd.randrange(users)}@bench.example"]'),
            None,
        ),
        50,
    )
    row["post_per_s"] = post_rate(port, token, prefix, f"{name}-{uuid.uuid4().hex[:6]}", args.posts, args.clients)
    if group_id is not None:

        def add_member(i: int) -> tuple[str, str, Any]:
            member = ids_by_filter(port, token, prefix, f"user{users - 1 - i}@bench.example") if prefix else ""
            return (
                "PATCH",
                f"{prefix}/Groups/{group_id}",
                {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": member}]}]},
            )

        members = [add_member(i) for i in range(args.patches)]
        row["patch_member_ms"] = median_ms(port, token, lambda i: members[i], args.patches)
        row["group_no_members_ms"] = median_ms(
            port, token, lambda i: ("GET", f"{prefix}/Groups/{group_id}?excludedAttributes=members", None), 50
        )
    # Deprovisioning (PATCH active:false) of distinct users, under the SCIM guard's limit with the
    # default keys (10% of the live accounts, past the minimum of 5: the window's count and the
    # live count are read on each), and a PATCH that deprovisions nobody, for comparison.
    targets = [ids_by_filter(port, token, prefix, f"user{2 * i + 1}@bench.example") for i in range(args.patches)]
    others = [ids_by_filter(port, token, prefix, f"user{2 * i + 2}@bench.example") for i in range(args.patches)]

    def set_user(user_id: str, path: str, value: Any) -> tuple[str, str, Any]:
        return (
            "PATCH",
            f"{prefix}/Users/{user_id}",
            {"schemas": [PATCH], "Operations": [{"op": "replace", "path": path, "value": value}]},
        )

    row["patch_rename_ms"] = median_ms(
        port, token, lambda i: set_user(others[i], "displayName", f"renamed {i}"), args.patches
    )
    row["patch_inactive_ms"] = median_ms(port, token, lambda i: set_user(targets[i], "active", False), args.patches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=10_000, help="members of the big group")
    parser.add_argument("--reference-users", type=int, default=10_000, help="users loaded into scim2-server")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--clients", type=int, default=8, help="client threads for the concurrent runs")
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--patches", type=int, default=50)
    parser.add_argument("--server", choices=["granian", "gunicorn"], default="granian")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-scim2-server", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    out: dict[str, dict[str, float]] = {}
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.monotonic()
    try:
        bridge = Bridge(root, args.server, args.workers, args.threads)
        small = min(1000, args.users)
        bridge.load_users(small)
        bridge.start()
        procs.append(bridge.proc)  # type: ignore[arg-type]
        rnd = random.Random(1)

        def small_lookup(_: int) -> tuple[str, str, None]:
            n = rnd.randrange(small)
            return "GET", "/scim/v2/Users?filter=" + q(f'userName eq "user{n}@bench.example"'), None

        lookup_small = median_ms(bridge.port, bridge.token, small_lookup, 300)
        print(f"loading {args.users} users into bridge ...", file=sys.stderr)
        t_load = time.monotonic()
        bridge.load_users(args.users)
        load_seconds = time.monotonic() - t_load
        group_id = bridge.big_group(min(args.group, args.users))
        measure("bridge", bridge.port, bridge.token, "/scim/v2", args.users, group_id, args, out)
        out["bridge"]["lookup_ms_small"] = lookup_small
        out["bridge"]["load_seconds"] = load_seconds

        flask, flask_port = start_flask(root, args.server, max(args.workers, 1), args.threads)
        procs.append(flask)
        out["bare Flask"] = {
            "lookup_1": throughput(flask_port, None, lambda: "/scim/v2/Users", 1, args.seconds),
            "lookup_8": throughput(flask_port, None, lambda: "/scim/v2/Users", args.clients, args.seconds),
        }
        stop(flask)

        if not args.no_scim2_server:
            print(f"loading {args.reference_users} users into scim2-server ...", file=sys.stderr)
            ref, ref_port = start_scim2_server(root, args.reference_users)
            procs.append(ref)
            conn = Conn(ref_port, "s3cret")
            _, body = conn.request(
                "POST", "/v2/Groups", {"schemas": [GROUP], "displayName": "bench-big", "members": []}
            )
            conn.close()
            ref_group = json.loads(body)["id"]
            # A big group for scim2-server too (Bulk would take as long; PATCH in chunks of 500).
            ids = [
                ids_by_filter(ref_port, "s3cret", "/v2", f"user{i}@bench.example")
                for i in range(min(args.group, args.reference_users) // 10)
            ]
            conn = Conn(ref_port, "s3cret")
            conn.request(
                "PATCH",
                f"/v2/Groups/{ref_group}",
                {
                    "schemas": [PATCH],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": i} for i in ids]}],
                },
            )
            conn.close()
            measure("scim2-server", ref_port, "s3cret", "/v2", args.reference_users, ref_group, args, out)
            out["scim2-server"]["group_members"] = len(ids)
            stop(ref)
    finally:
        for proc in procs:
            stop(proc)
        if os.environ.get("BRIDGE_KEEP_TMP", "") in ("", "0"):
            shutil.rmtree(root, ignore_errors=True)
    report(out, args, time.monotonic() - t0)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def report(out: dict[str, dict[str, float]], args: Any, seconds: float) -> None:
    b, f, r = out.get("bridge", {}), out.get("bare Flask", {}), out.get("scim2-server", {})

    def cell(row: dict[str, float], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    rows = [
        ("GET /Users?filter=userName eq, 1 client (req/s)", "lookup_1", ",.0f"),
        (f"GET /Users?filter=userName eq, {args.clients} clients (req/s)", "lookup_8", ",.0f"),
        ("userName lookup, median (ms)", "lookup_ms", ".2f"),
        ('emails[type eq "work" and value eq ...], median (ms)', "email_filter_ms", ".2f"),
        (f"POST /Users, {args.clients} clients (req/s)", "post_per_s", ",.0f"),
        ("PATCH add one member to the big group, median (ms)", "patch_member_ms", ".2f"),
        ("GET big group ?excludedAttributes=members, median (ms)", "group_no_members_ms", ".2f"),
        ("PATCH a user's displayName, median (ms)", "patch_rename_ms", ".2f"),
        ("PATCH a user active:false (SCIM guard), median (ms)", "patch_inactive_ms", ".2f"),
    ]
    print(
        f"\nSCIM benchmark: bridge with {args.users:,} users and a {args.group:,}-member group "
        f"({args.server} {args.workers}x{args.threads}, SQLite); "
        f"scim2-server 0.8.3 with {args.reference_users:,} users "
        f"and a {int(r.get('group_members', 0)):,}-member group; {os.cpu_count()} CPUs; run took {seconds:.0f} s\n"
    )
    print(f"| {'measure':<58} | {'bridge':>10} | {'scim2-server':>12} | {'bare Flask':>10} | {'bridge/scim2':>12} |")
    print(f"|{'-' * 60}|{'-' * 12}:|{'-' * 14}:|{'-' * 12}:|{'-' * 14}:|")
    for label, key, fmt in rows:
        ratio = "-"
        if key in b and key in r and b[key] and r[key]:
            higher_is_better = "per_s" in key or (key.startswith("lookup_") and "ms" not in key)
            ratio = f"{b[key] / r[key]:.1f}x" if higher_is_better else f"{r[key] / b[key]:.0f}x faster"
        print(
            f"| {label:<58} | {cell(b, key, fmt):>10} | {cell(r, key, fmt):>12} | {cell(f, key, fmt):>10} | "
            f"{ratio:>12} |"
        )
    if "lookup_8" in b and "lookup_8" in f:
        print(
            f"\nbridge lookup throughput = {b['lookup_8'] / f['lookup_8']:.2f} of the bare Flask route "
            f"({args.clients} clients); {b['lookup_1'] / f['lookup_1']:.2f} with 1 client"
        )
    if "lookup_ms_small" in b:
        print(
            f"lookup median at 1,000 users {b['lookup_ms_small']:.2f} ms, at {args.users:,} users "
            f"{b['lookup_ms']:.2f} ms (x{b['lookup_ms'] / b['lookup_ms_small']:.2f}); "
            f"bulk load {b.get('load_seconds', 0):.0f} s"
        )


if __name__ == "__main__":
    main()
