"""Golden master: one scripted directory and SCIM session, its observable results normalised.

A refactor that only moves code must leave every one of these unchanged. Run it on the old and
on the new code and compare the two files:

    python tests/golden/golden.py --out /tmp/new.json
    git worktree add /tmp/old <old-commit>
    python tests/golden/golden.py --repo /tmp/old --out /tmp/old.json
    diff /tmp/old.json /tmp/new.json

What it records: the CLI's JSON (sync, dry run, history, users, show, explain, tenants, tokens,
audit, outbox), every SCIM response of the session (status, the headers a client reads, body),
both the Flask routes and the fast lane (`userName eq` lookups), and a dump of every table.
Values that differ from run to run by nature (ids, times, tokens, hashes, versions, durations,
ports) are replaced by placeholders; ids by `<id:N>` in order of first appearance, so that
references between outputs still have to agree.

`--repo` is the checkout whose code runs (default: this one); `--python` the interpreter with
bridge's dependencies (default: this one). The code comes from `--repo` through PYTHONPATH.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import http.server
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT_OF_REPO = HERE.parents[1]
SCIM_JSON = "application/scim+json"

CONFIG = """\
[database]
url = "sqlite:///bridge.db"

[server]
public_url = "http://127.0.0.1:{port}"
host = "127.0.0.1"
port = {port}

[email]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
from = "Bridge <no-reply@example.org>"

[webhook]
url = "http://127.0.0.1:{webhook_port}/hooks"
secret_env = "BRIDGE_GOLDEN_WEBHOOK_SECRET"
timeout = 10

[[tenants]]
name = "example"
mappings = "mapping.toml"
seat_limit = 50

[[tenants]]
name = "acme"
mappings = "mapping.toml"
seat_limit = 5

[[sources]]
name = "example-ldif"
tenant = "example"
kind = "ldif"
flavor = "openldap"
path = "directory.ldif"
user_base = "ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"
deletion_threshold = 0.10
"""

UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b")
# Request and run correlation ids (`sync-3dc344cc67a04325`), digests and hashes.
HEX = re.compile(r"(?<![0-9a-z])[0-9a-f]{12,}\b", re.I)
# Weak ETags and meta.version carry a version counter or digest; either may embed a time.
ETAG = re.compile(r'W/\\?"[^"\\]*\\?"')
TOKEN = re.compile(r"\b[A-Za-z0-9_\-]{40,}\b")
# An activation link's token is base64url: it may start or end with "-", where \b does not hold.
# A link's expiry as its page words it ("10 December 2026, 15:55 UTC", "10 décembre 2026 à 15:55 UTC").
WORDED_TIME = re.compile(r"\b\d{1,2} \w+ \d{4},? (à )?\d{2}:\d{2} UTC\b")
LINK_TOKEN = re.compile(r"/activate/[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
DURATION_KEYS = {"durationSeconds", "duration", "duration_seconds", "elapsed"}
# Columns holding secrets' hashes, digests, or times, compared by shape only.
OPAQUE_COLUMNS = re.compile(
    r"(hash|digest|secret|token|_at$|^at$|created|modified|expires|time|lease|version|claimed_by)", re.I
)


class Normaliser:
    def __init__(self, port: int) -> None:
        self.ids: dict[str, str] = {}
        self.port = str(port)

    def _id(self, match: re.Match[str]) -> str:
        key = match.group(0).lower()
        if key not in self.ids:
            self.ids[key] = f"<id:{len(self.ids) + 1}>"
        return self.ids[key]

    def text(self, value: str) -> str:
        value = value.replace(f"127.0.0.1:{self.port}", "127.0.0.1:<port>")
        value = LINK_TOKEN.sub("/activate/<token>", value)
        value = WORDED_TIME.sub("<worded time>", value)
        value = UUID.sub(self._id, value)
        value = TIME.sub("<time>", value)
        value = ETAG.sub("<etag>", value)
        value = HEX.sub("<hex>", value)
        return TOKEN.sub("<token>", value)

    def value(self, value: Any, key: str = "") -> Any:
        if key in DURATION_KEYS and isinstance(value, int | float):
            return "<duration>"
        if isinstance(value, dict):
            return {k: self.value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


class Session:
    def __init__(self, repo: Path, python: str, root: Path) -> None:
        self.repo = repo
        self.python = python
        self.root = root
        self.env = {**os.environ, "PYTHONPATH": str(repo), "BRIDGE_CONFIG": str(root / "bridge.toml")}
        self.env.pop("BRIDGE_KEEP_TMP", None)
        self.env["BRIDGE_GOLDEN_WEBHOOK_SECRET"] = "golden-webhook-secret-0123456789abcdef"
        self.port = _free_port()
        self.normaliser = Normaliser(self.port)
        self.record: list[dict[str, Any]] = []
        self.token = ""
        self.server: subprocess.Popen[bytes] | None = None
        self.smtp_port = _free_port()
        self.webhook_port = _free_port()
        self.mails: list[Any] = []
        self.events: list[str] = []
        self.pages = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    # -- the CLI -----------------------------------------------------------------------------
    def cli(self, *args: str, parse: bool = True) -> Any:
        proc = subprocess.run(
            [self.python, "-m", "bridge", "--config", str(self.root / "bridge.toml"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=300,
            check=False,
        )
        output: Any = proc.stdout
        if parse and proc.stdout.strip():
            try:
                output = json.loads(proc.stdout)
            except json.JSONDecodeError:
                output = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        self.record.append(
            {
                "cli": list(args),
                "exit": proc.returncode,
                "stdout": self.normaliser.value(output),
                "stderr": self.normaliser.text(proc.stderr.strip()),
            }
        )
        return output

    # -- SCIM over HTTP ----------------------------------------------------------------------
    def scim(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/scim/v2{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {token or self.token}")
        request.add_header("Accept", SCIM_JSON)
        if data is not None:
            request.add_header("Content-Type", SCIM_JSON)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, raw = error.code, error.headers, error.read()
        body_out: Any = json.loads(raw) if raw else None
        self.record.append(
            {
                "scim": [method, self.normaliser.text(path)],
                "request": self.normaliser.value(body),
                "status": status,
                "headers": {
                    name: self.normaliser.text(headers.get(name, ""))
                    for name in ("Content-Type", "Location", "ETag")
                    if headers.get(name)
                },
                "body": self.normaliser.value(body_out),
            }
        )
        return body_out

    # -- the activation pages ----------------------------------------------------------------
    def page(self, method: str, path: str, form: dict[str, str] | None = None) -> str:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        try:
            with self.pages.open(request, timeout=60) as response:
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, headers, raw = error.code, error.headers, error.read()
        text = raw.decode("utf-8", "replace")
        self.record.append(
            {
                "page": [method, self.normaliser.text(path)],
                "form": self.normaliser.value({k: v for k, v in (form or {}).items() if k != "csrf"}),
                "status": status,
                "headers": {
                    name: self.normaliser.text(headers.get(name, ""))
                    for name in ("Content-Type", "Location", "Retry-After")
                    if headers.get(name)
                },
                "body": self.normaliser.text(text),
            }
        )
        return text

    def start_server(self) -> None:
        log = open(self.root / "serve.log", "wb")  # noqa: SIM115 - closed with the process
        self.server = subprocess.Popen(
            [self.python, "-m", "bridge", "--config", str(self.root / "bridge.toml"), "serve", "--no-scheduler"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.root,
            start_new_session=True,
        )
        # Progress, not a guess of time: wait until it answers, or until it has exited.
        for _ in range(600):
            if self.server.poll() is not None:
                raise SystemExit("bridge serve exited:\n" + (self.root / "serve.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("bridge serve did not answer /healthz")

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    # -- the tables --------------------------------------------------------------------------
    def dump_tables(self) -> dict[str, list[Any]]:
        db = sqlite3.connect(self.root / "bridge.db")
        tables = [
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            # The SCIM request log is written by a thread after each answer (when, and how many
            # rows before the server stops, depends on timing) and records durations: not state.
            if not name.startswith("sqlite_") and name not in ("alembic_version", "scim_requests")
        ]
        out: dict[str, list[Any]] = {}
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            rows = []
            for row in cursor:
                values = {}
                for column, value in zip(columns, row, strict=True):
                    if value is not None and OPAQUE_COLUMNS.search(column) and not column.endswith("_id"):
                        value = f"<{type(value).__name__}>"
                    values[column] = value
                rows.append(values)
            # Row order by content with every varying value masked (ids, correlation ids, times,
            # tokens): insertion order and those values differ between runs. Rows still tied are
            # put in order again once their ids are numbered.
            rows.sort(key=_masked)
            normalised = [self.normaliser.value(json.loads(json.dumps(r, default=str))) for r in rows]
            out[table] = sorted(normalised, key=lambda r: json.dumps(r, sort_keys=True))
        db.close()
        return out


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Mailbox:
    """An SMTP server that keeps what it receives (aiosmtpd, as the tests' fixture)."""

    def __init__(self, session: Session) -> None:
        from aiosmtpd.controller import Controller

        self.session = session
        self.controller = Controller(self, hostname="127.0.0.1", port=session.smtp_port)

    async def handle_DATA(self, server: Any, smtp_session: Any, envelope: Any) -> str:
        import email
        import email.policy

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        link = LINK.search(text)
        self.session.mails.append(
            {"to": list(envelope.rcpt_tos), "subject": str(message["Subject"]), "link": link.group(1) if link else None}
        )
        return "250 OK"


class _Hooks(http.server.BaseHTTPRequestHandler):
    session: Session

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.session.events.append(str(body.get("type")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


LINK = re.compile(r"https?://[^\s<>\"]+(/activate/[A-Za-z0-9_-]{43})")


def _masked(row: dict[str, Any]) -> str:
    text = json.dumps(row, sort_keys=True, default=str)
    for pattern, mask in ((UUID, "<id>"), (TIME, "<time>"), (HEX, "<hex>"), (TOKEN, "<token>")):
        text = pattern.sub(mask, text)
    return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scripted_scim(s: Session) -> None:
    """An Entra-like session: look up, create, patch, groups, rehire, errors."""
    for name in ("alice", "bob", "carol", "dave"):
        s.scim("GET", f"/Users?filter=userName%20eq%20%22{name}%40acme.example%22")  # the fast lane
        s.scim(
            "POST",
            "/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": f"{name}@acme.example",
                "externalId": f"ext-{name}",
                "name": {"givenName": name.title(), "familyName": "Acme"},
                "emails": [{"value": f"{name}@acme.example", "type": "work", "primary": True}],
                "active": True,
            },
        )
    found = s.scim("GET", "/Users?filter=userName%20eq%20%22alice%40acme.example%22")
    alice = found["Resources"][0]["id"]
    bob = s.scim("GET", "/Users?filter=userName%20eq%20%22bob%40acme.example%22")["Resources"][0]["id"]
    carol = s.scim("GET", "/Users?filter=externalId%20eq%20%22ext-carol%22")["Resources"][0]["id"]
    s.scim("GET", "/Users?filter=userName%20eq%20%22alice%40acme.example%22&attributes=userName,emails")
    s.scim("GET", f"/Users/{alice}")
    s.scim("GET", "/Users?startIndex=2&count=2")
    s.scim("GET", "/Users?filter=emails%5Btype%20eq%20%22work%22%20and%20value%20co%20%22bo%22%5D")
    group = s.scim(
        "POST",
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "front-desk",
            "externalId": "grp-front",
            "members": [{"value": alice}, {"value": bob}],
        },
    )
    admins = s.scim(
        "POST",
        "/Groups",
        {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "admins", "members": []},
    )
    patch = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    s.scim(
        "PATCH",
        f"/Groups/{admins['id']}",
        {"schemas": [patch], "Operations": [{"op": "add", "path": "members", "value": [{"value": carol}]}]},
    )
    s.scim(
        "PATCH",
        f"/Groups/{group['id']}",
        {"schemas": [patch], "Operations": [{"op": "remove", "path": f'members[value eq "{bob}"]'}]},
    )
    s.scim("GET", f"/Groups/{group['id']}?excludedAttributes=members")
    s.scim("GET", "/Groups")
    s.scim(
        "PATCH",
        f"/Users/{bob}",
        {"schemas": [patch], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )
    s.scim(
        "PATCH",
        f"/Users/{alice}",
        {
            "schemas": [patch],
            "Operations": [{"op": "replace", "value": {"name.givenName": "Alicia", "title": "Receptionist"}}],
        },
    )
    put = s.scim("GET", f"/Users/{carol}")
    put.pop("meta", None)
    put["displayName"] = "Carol A."
    s.scim("PUT", f"/Users/{carol}", put)
    s.scim("DELETE", f"/Users/{bob}")
    # A rehire: the same userName again after the DELETE.
    s.scim(
        "POST",
        "/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bob@acme.example",
            "externalId": "ext-bob-2",
            "active": True,
        },
    )
    # Clients' mistakes.
    s.scim("GET", "/Users?filter=userName%20eq")
    s.scim("GET", "/Users/00000000-0000-0000-0000-000000000000")
    s.scim(
        "POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@acme.example"}
    )
    s.scim("PATCH", f"/Users/{alice}", {"schemas": [patch], "Operations": [{"op": "explode"}]})
    s.scim("GET", "/Users", token="not-a-token")
    s.scim("GET", "/ServiceProviderConfig")
    s.scim("GET", "/ResourceTypes")
    s.scim("GET", "/Schemas")


def deliver(s: Session) -> None:
    """One pass of the outbox worker; the mails and product events it sent, in an order of their own."""
    start = len(s.mails), len(s.events)
    s.cli("outbox", "run", "--once", parse=False)
    mails = sorted(s.mails[start[0] :], key=lambda m: (m["to"], m["subject"]))
    s.record.append(
        {
            "mails": [{**m, "link": s.normaliser.text(m["link"]) if m["link"] else None} for m in mails],
            "events": sorted(s.events[start[1] :]),
        }
    )


def link_to(s: Session, address: str) -> str:
    return next(m["link"] for m in reversed(s.mails) if address in m["to"])


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    return found.group(1) if found else ""


def scripted_activation(s: Session) -> None:
    """Links used, refused and renewed on the activation pages."""
    alice = link_to(s, "alice@acme.example")
    form = s.page("GET", alice)
    s.page("POST", alice, {"csrf": csrf_of(form), "password": "short", "password_confirm": "short"})
    strong = "Correct-Horse-Battery-42"
    s.page("POST", alice, {"csrf": csrf_of(form), "password": strong, "password_confirm": strong})
    s.page("GET", alice)  # used
    claire = link_to(s, "claire.dubois@example.org")
    form = s.page("GET", claire)
    s.page("POST", claire, {"csrf": "0" * 64, "password": strong, "password_confirm": strong})  # no CSRF
    s.page("POST", claire, {"csrf": csrf_of(form), "password": strong, "password_confirm": strong})
    # A new link for someone still pending: the old one is dead at once.
    emma = link_to(s, "emma.moreau@example.org")
    form = s.page("GET", "/activate/new-link")
    s.page("POST", "/activate/new-link", {"csrf": csrf_of(form), "email": "emma.moreau@example.org"})
    s.page("POST", "/activate/new-link", {"csrf": csrf_of(form), "email": "nobody@example.org"})
    s.page("GET", emma)  # replaced
    s.page("GET", "/activate/" + "A" * 43)  # unknown


def run(repo: Path, python: str) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bridge-golden-"))
    try:
        s = Session(repo, python, root)
        (root / "bridge.toml").write_text(
            CONFIG.format(port=s.port, smtp_port=s.smtp_port, webhook_port=s.webhook_port)
        )
        shutil.copy(repo / "mappings" / "example.toml", root / "mapping.toml")
        shutil.copy(repo / "examples" / "directory.ldif", root / "directory.ldif")
        s.cli("db", "upgrade", parse=False)
        s.cli("sync", "--dry-run", "--json")
        s.cli("sync", "--json")
        s.cli("sync", "--json")
        s.cli("tenants", "add", "acme", parse=False)
        s.token = (
            s.cli("tokens", "create", "--tenant", "acme", "--label", "golden", parse=False).strip().splitlines()[-1]
        )
        s.start_server()
        try:
            scripted_scim(s)
        finally:
            s.stop_server()
        mailbox = _Mailbox(s)
        hooks = http.server.ThreadingHTTPServer(("127.0.0.1", s.webhook_port), type("H", (_Hooks,), {"session": s}))
        threading.Thread(target=hooks.serve_forever, daemon=True).start()
        mailbox.controller.start()
        try:
            deliver(s)
            s.start_server()
            try:
                scripted_activation(s)
            finally:
                s.stop_server()
            deliver(s)

        finally:
            mailbox.controller.stop()
            hooks.shutdown()
            hooks.server_close()
        s.cli("sync", "--history", "--json")
        s.cli("users", "list", "--tenant", "example", "--json")
        s.cli("users", "list", "--tenant", "acme", "--json")
        s.cli("users", "show", "zbrun", "--tenant", "example", "--json")
        s.cli("users", "show", "alice@acme.example", "--tenant", "acme", "--json")
        s.cli("explain", "zbrun", "--tenant", "example", parse=False)
        s.cli("explain", "alice@acme.example", "--tenant", "acme", parse=False)
        s.cli("tenants", "list", "--json")
        s.cli("tokens", "list", "--tenant", "acme", "--json")
        s.cli("audit", "--tenant", "acme", "--json")
        s.cli("users", "show", "cdubois", "--tenant", "example", "--json")
        s.cli("outbox", "list", "--json")
        tables = s.dump_tables()
        return {"session": s.record, "tables": tables}
    finally:
        if os.environ.get("BRIDGE_KEEP_TMP", "") in ("", "0"):
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT_OF_REPO, help="checkout whose code runs")
    parser.add_argument("--python", default=sys.executable, help="interpreter with bridge's dependencies")
    parser.add_argument("--out", type=Path, required=True, help="where to write the normalised record")
    args = parser.parse_args()
    record = run(args.repo.resolve(), args.python)
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{args.out}: {len(record['session'])} steps, {sum(map(len, record['tables'].values()))} rows")


if __name__ == "__main__":
    main()
