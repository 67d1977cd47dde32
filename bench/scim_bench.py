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

4. SCIM writes: POST /Users with one client and with --clients; a PATCH that swaps --swap members
   of the big group for as many others (one Remove and one Add operation, back and forth); and an
   Entra-like initial cycle into an empty tenant (bridge: a second tenant of the same deployment;
   scim2-server: a fresh instance): --cycle-users POST /Users, then --cycle-groups POST /Groups
   (no members, as Entra creates them), then one PATCH add per membership (Entra sends one member
   per PATCH), --cycle-members per group, all with --clients connections.

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


def parallel(
    port: int, token: str | None, jobs: list[tuple[str, str, Any]], threads: int, expect: tuple[int, ...]
) -> tuple[float, list[bytes]]:
    """Send `jobs` (method, path, body) over `threads` connections, job k on thread k % threads;
    returns the seconds taken and each job's response body, in job order."""
    out: list[bytes] = [b""] * len(jobs)
    errors: list[str] = []

    def run(i: int) -> None:
        conn = Conn(port, token)
        try:
            for k in range(i, len(jobs), threads):
                method, path, body = jobs[k]
                status, payload = conn.request(method, path, body)
                if status not in expect:
                    errors.append(f"{method} {path}: {status} {payload[:300]!r}")
                    return
                out[k] = payload
        finally:
            conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(errors[0])
    return time.monotonic() - started, out


def entra_cycle(port: int, token: str, prefix: str, args: Any) -> dict[str, float]:
    """An initial provisioning cycle into an empty tenant, as Entra runs it: every user created,
    then every group (without members), then the memberships added one PATCH per member."""
    users, groups, members = args.cycle_users, args.cycle_groups, args.cycle_members
    print(f"  cycle: {users} users, {groups} groups of {members} ...", file=sys.stderr)
    posts = [("POST", f"{prefix}/Users", user_body(f"cycle{i}@entra.example")) for i in range(users)]
    t_users, bodies = parallel(port, token, posts, args.clients, (201,))
    user_ids = [str(json.loads(b)["id"]) for b in bodies]
    group_posts = [
        ("POST", f"{prefix}/Groups", {"schemas": [GROUP], "displayName": f"cycle-group-{k}", "externalId": f"g{k}"})
        for k in range(groups)
    ]
    t_groups, bodies = parallel(port, token, group_posts, args.clients, (201,))
    group_ids = [str(json.loads(b)["id"]) for b in bodies]
    adds = [
        (
            "PATCH",
            f"{prefix}/Groups/{group_ids[i % groups]}",
            {
                "schemas": [PATCH],
                "Operations": [{"op": "Add", "path": "members", "value": [{"$ref": None, "value": user_ids[i]}]}],
            },
        )
        for i in range(min(users, groups * members))
    ]
    t_members, _ = parallel(port, token, adds, args.clients, (200, 204))
    return {
        "cycle_users_s": t_users,
        "cycle_groups_s": t_groups,
        "cycle_members_s": t_members,
        "cycle_total_s": t_users + t_groups + t_members,
    }


def swap_members(
    port: int, token: str, prefix: str, group_id: str, a: list[str], b: list[str], n: int, rfc: bool
) -> float:
    """Median ms of a PATCH replacing the members `a` of the group by `b`, then `b` by `a`, and so
    on, `n` times: one Remove with the list as its value (Entra's default), or with `rfc` one
    Remove per member with a `members[value eq "..."]` path (RFC 7644; Entra with its
    aadOptscim062020 flag), then one Add."""

    def make(i: int) -> tuple[str, str, Any]:
        out, into = (a, b) if i % 2 == 0 else (b, a)
        removes = (
            [{"op": "Remove", "path": f'members[value eq "{m}"]'} for m in out]
            if rfc
            else [{"op": "Remove", "path": "members", "value": [{"value": m} for m in out]}]
        )
        return (
            "PATCH",
            f"{prefix}/Groups/{group_id}",
            {
                "schemas": [PATCH],
                "Operations": [*removes, {"op": "Add", "path": "members", "value": [{"value": m} for m in into]}],
            },
        )

    return median_ms(port, token, make, n)


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
            '[[tenants]]\nname = "bench"\nmappings = "mapping.toml"\n\n'
            '[[tenants]]\nname = "cycle"\nmappings = "mapping.toml"\n'  # the Entra cycle's empty tenant
        )
        from bridge.runtime import open_runtime
        from bridge.store.db import transaction
        from bridge.store.tenants import get_tenant
        from bridge.store.tokens import create_token

        self.runtime = open_runtime(self.config)
        with transaction(self.runtime.engine) as conn:
            self.tenant_id = get_tenant(conn, "bench").id
            _, self.token = create_token(conn, self.tenant_id, "bench", False, datetime.now(UTC))
            _, self.cycle_token = create_token(conn, get_tenant(conn, "cycle").id, "cycle", False, datetime.now(UTC))
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
            if self.loaded % 100_000 == 0:
                print(f"  {self.loaded} users loaded", file=sys.stderr)

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


def start_scim2_server(root: Path, users: int) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    """A fresh scim2-server with `users` users loaded over /Bulk; returns it, its port and the
    users' ids in load order."""
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
    ids: list[str] = []
    try:
        for start in range(0, users, 500):
            ops = [
                {"method": "POST", "path": "/Users", "bulkId": str(i), "data": user_body(f"user{i}@bench.example")}
                for i in range(start, min(start + 500, users))
            ]
            status, body = conn.request("POST", "/v2/Bulk", {"schemas": [BULK], "Operations": ops})
            if status != 200:
                raise RuntimeError(f"scim2-server bulk load: {status} {body[:300]!r}")
            done = {
                op["bulkId"]: op["location"].rstrip("/").rsplit("/", 1)[-1] for op in json.loads(body)["Operations"]
            }
            ids += [done[op["bulkId"]] for op in ops]
    finally:
        conn.close()
    return proc, port, ids


def ids_by_filter(port: int, token: str, prefix: str, user_name: str) -> str:
    conn = Conn(port, token)
    try:
        _, body = conn.request("GET", f"{prefix}/Users?filter=" + q(f'userName eq "{user_name}"'))
        return str(json.loads(body)["Resources"][0]["id"])
    finally:
        conn.close()


def lookup_medians(port: int, token: str, users: int, seed: int, n: int = 300) -> dict[str, float]:
    """Median latency of the three lookups a provisioning client makes, over `users` users: by
    userName, by id (GET /Users/{id}; the ids read first, untimed) and the email value filter."""
    rnd = random.Random(seed)
    picks = [rnd.randrange(users) for _ in range(n)]
    ids = [ids_by_filter(port, token, "/scim/v2", f"user{i}@bench.example") for i in picks[:100]]
    # One untimed round of each first: right after the server starts, the first requests of a
    # kind paid for cold caches (GET /Users/{id} 5.2 ms at 1k users against 1.5 ms at 100k).
    email = q('emails[type eq "work" and value eq "user{}@bench.example"]')
    for path in ("/scim/v2/Users?filter=" + q('userName eq "user0@bench.example"'), f"/scim/v2/Users/{ids[0]}"):
        median_ms(port, token, lambda i, path=path: ("GET", path, None), n // 3)
    median_ms(port, token, lambda i: ("GET", "/scim/v2/Users?filter=" + email.format(picks[i]), None), n // 3)
    by_name = median_ms(
        port,
        token,
        lambda i: ("GET", "/scim/v2/Users?filter=" + q(f'userName eq "user{picks[i]}@bench.example"'), None),
        n,
    )
    by_id = median_ms(port, token, lambda i: ("GET", f"/scim/v2/Users/{ids[i % len(ids)]}", None), n)
    by_email = median_ms(port, token, lambda i: ("GET", "/scim/v2/Users?filter=" + email.format(picks[i]), None), n)
    return {"userName": by_name, "id": by_id, "email": by_email}


def measure(
    name: str,
    port: int,
    token: str,
    prefix: str,
    users: int,
    group_id: str | None,
    args: Any,
    out: dict[str, dict[str, float]],
    swap: tuple[list[str], list[str]] | None = None,
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
    row["post_1_per_s"] = post_rate(port, token, prefix, f"{name}-{uuid.uuid4().hex[:6]}", args.posts // 2, 1)
    row["post_per_s"] = post_rate(port, token, prefix, f"{name}-{uuid.uuid4().hex[:6]}", args.posts, args.clients)
    if group_id is not None and swap is not None and args.swap_reps:
        if name != "scim2-server":  # it refuses a Remove with a value (400 invalidValue)
            row["swap_ms"] = swap_members(port, token, prefix, group_id, swap[0], swap[1], args.swap_reps, False)
        # One operation per member and one Add: 999 members, under bridge's 1,000 operations a request.
        rfc = (swap[0][:999], swap[1][:999])
        row["swap_rfc_ms"] = swap_members(port, token, prefix, group_id, rfc[0], rfc[1], args.swap_reps, True)
        row["swap_rfc_size"] = len(rfc[0])
        row["swap_size"] = len(swap[0])
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
    parser.add_argument("--swap", type=int, default=1000, help="members replaced by one PATCH of the big group")
    parser.add_argument("--swap-reps", type=int, default=11, help="PATCHes of --swap members (0: none)")
    parser.add_argument("--cycle-users", type=int, default=10_000, help="Entra cycle: users (0: no cycle)")
    parser.add_argument("--cycle-groups", type=int, default=100)
    parser.add_argument("--cycle-members", type=int, default=100, help="Entra cycle: members per group")
    parser.add_argument("--server", choices=["granian", "gunicorn"], default="granian")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-scim2-server", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--lookups-only", action="store_true", help="only the lookup latencies at 1,000 users and at --users"
    )
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
        small_medians = lookup_medians(bridge.port, bridge.token, small, 2)
        print(f"loading {args.users} users into bridge ...", file=sys.stderr)
        t_load = time.monotonic()
        if args.lookups_only:
            # Medians at each power of ten on the way too: a million users take a while to load.
            upto = 10_000
            while upto < args.users:
                bridge.load_users(upto)
                print_lookups(small, small_medians, upto, lookup_medians(bridge.port, bridge.token, upto, 3), 0)
                upto *= 10
        bridge.load_users(args.users)
        load_seconds = time.monotonic() - t_load
        full_medians = lookup_medians(bridge.port, bridge.token, args.users, 3)
        print_lookups(small, small_medians, args.users, full_medians, load_seconds)
        if args.lookups_only:
            return
        size = min(args.group, args.users)
        group_id = bridge.big_group(size)
        n_swap = min(args.swap, size, args.users - size)
        swap = (
            [str(uuid.UUID(int=i + 1)) for i in range(n_swap)],
            [str(uuid.UUID(int=size + i + 1)) for i in range(n_swap)],
        )
        measure("bridge", bridge.port, bridge.token, "/scim/v2", args.users, group_id, args, out, swap)
        if args.cycle_users:
            out["bridge"].update(entra_cycle(bridge.port, bridge.cycle_token, "/scim/v2", args))
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
            ref, ref_port, ref_ids = start_scim2_server(root, args.reference_users)
            procs.append(ref)
            conn = Conn(ref_port, "s3cret")
            _, body = conn.request(
                "POST", "/v2/Groups", {"schemas": [GROUP], "displayName": "bench-big", "members": []}
            )
            conn.close()
            ref_group = json.loads(body)["id"]
            # A big group for scim2-server too (a tenth of bridge's: one PATCH adding them all).
            ids = ref_ids[: min(args.group, args.reference_users) // 10]
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
            n_swap = min(args.swap, len(ids), len(ref_ids) - len(ids))
            ref_swap = (ids[:n_swap], ref_ids[len(ids) : len(ids) + n_swap])
            measure("scim2-server", ref_port, "s3cret", "/v2", args.reference_users, ref_group, args, out, ref_swap)
            out["scim2-server"]["group_members"] = len(ids)
            stop(ref)
            if args.cycle_users:
                print("scim2-server: a fresh instance for the Entra cycle ...", file=sys.stderr)
                ref, ref_port, _ = start_scim2_server(root, 0)
                procs.append(ref)
                out["scim2-server"].update(entra_cycle(ref_port, "s3cret", "/v2", args))
                stop(ref)
    finally:
        for proc in procs:
            stop(proc)
        if os.environ.get("BRIDGE_KEEP_TMP", "") in ("", "0"):
            shutil.rmtree(root, ignore_errors=True)
    report(out, args, time.monotonic() - t0)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def print_lookups(small: int, at_small: dict[str, float], users: int, at_full: dict[str, float], load: float) -> None:
    loaded = f" (loaded through the store in {load:.0f} s)" if load else ""
    print(f"\nlookup medians (ms), {small:,} users -> {users:,} users{loaded}:", flush=True)
    for key, label in (("userName", "userName eq"), ("id", "GET /Users/{id}"), ("email", "emails[value eq]")):
        ratio = at_full[key] / at_small[key]
        print(f"  {label:<18} {at_small[key]:6.2f} -> {at_full[key]:6.2f}  (x{ratio:.2f})")


def report(out: dict[str, dict[str, float]], args: Any, seconds: float) -> None:
    b, f, r = out.get("bridge", {}), out.get("bare Flask", {}), out.get("scim2-server", {})

    def cell(row: dict[str, float], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    rows = [
        ("GET /Users?filter=userName eq, 1 client (req/s)", "lookup_1", ",.0f"),
        (f"GET /Users?filter=userName eq, {args.clients} clients (req/s)", "lookup_8", ",.0f"),
        ("userName lookup, median (ms)", "lookup_ms", ".2f"),
        ('emails[type eq "work" and value eq ...], median (ms)', "email_filter_ms", ".2f"),
        ("POST /Users, 1 client (req/s)", "post_1_per_s", ",.0f"),
        (f"POST /Users, {args.clients} clients (req/s)", "post_per_s", ",.0f"),
        ("PATCH add one member to the big group, median (ms)", "patch_member_ms", ".2f"),
        ("GET big group ?excludedAttributes=members, median (ms)", "group_no_members_ms", ".2f"),
        ("PATCH a user's displayName, median (ms)", "patch_rename_ms", ".2f"),
        ("PATCH a user active:false (SCIM guard), median (ms)", "patch_inactive_ms", ".2f"),
        (
            f"PATCH replacing {int(b.get('swap_size', args.swap)):,} members of the big group, median (ms)",
            "swap_ms",
            ".1f",
        ),
        (
            f'  same for {int(b.get("swap_rfc_size", 0)):,}, one Remove members[value eq "..."] each, median (ms)',
            "swap_rfc_ms",
            ".1f",
        ),
        (f"Entra cycle: POST {args.cycle_users:,} users (s)", "cycle_users_s", ".1f"),
        (f"Entra cycle: POST {args.cycle_groups:,} groups (s)", "cycle_groups_s", ".2f"),
        (
            f"Entra cycle: PATCH add {min(args.cycle_users, args.cycle_groups * args.cycle_members):,} members (s)",
            "cycle_members_s",
            ".1f",
        ),
        ("Entra cycle: total (s)", "cycle_total_s", ".1f"),
    ]
    print(
        f"\nSCIM benchmark: bridge with {args.users:,} users and a {args.group:,}-member group "
        f"({args.server} {args.workers}x{args.threads}, SQLite); "
        f"scim2-server 0.8.3 with {args.reference_users:,} users "
        f"and a {int(r.get('group_members', 0)):,}-member group; {os.cpu_count()} CPUs; run took {seconds:.0f} s\n"
    )
    w = max(len(label) for label, _, _ in rows)
    print(f"| {'measure':<{w}} | {'bridge':>10} | {'scim2-server':>12} | {'bare Flask':>10} | {'bridge/scim2':>13} |")
    print(f"|{'-' * (w + 2)}|{'-' * 11}:|{'-' * 13}:|{'-' * 11}:|{'-' * 14}:|")
    for label, key, fmt in rows:
        ratio = "-"
        if key in b and key in r and b[key] and r[key]:
            higher_is_better = "per_s" in key or (key.startswith("lookup_") and "ms" not in key)
            faster = b[key] / r[key] if higher_is_better else r[key] / b[key]
            if higher_is_better:
                ratio = f"{faster:.1f}x"
            else:
                ratio = f"{faster:.1f}x faster" if faster >= 1 else f"{1 / faster:.1f}x slower"
        print(
            f"| {label:<{w}} | {cell(b, key, fmt):>10} | {cell(r, key, fmt):>12} | {cell(f, key, fmt):>10} | "
            f"{ratio:>13} |"
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
