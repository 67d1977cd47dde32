"""The reference product (examples/product) end to end, on SQLite and PostgreSQL: a real slapd,
`bridge sync`, `bridge serve` as a process (activation pages, the product API, the outbox worker
posting signed webhooks) and the product as a process of its own on a free loopback port, with
its own SQLite database. The product is what a vendor writes: these tests only use its HTTP
side and read its database, as an operator would."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE
from sqlalchemy import select, update

from bridge.notify.webhook import SIGNATURE_HEADER, encode_event, signature
from bridge.store.db import transaction
from bridge.store.events import queue_event
from bridge.store.ids import new_id
from bridge.store.tables import AccountEventRow, Tenant
from tests.fixtures.postgres import free_port
from tests.fixtures.slapd import Slapd
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import WEBHOOK_SECRET, link_in, mails_to, notify_config, runtime_of
from tests.integration.test_activation_web import open_form
from tests.ldap_deployment import LdapDeployment

ROOT = Path(__file__).resolve().parents[2]
PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"
PASSWORD = "a long enough passphrase"
CAP = 120.0  # seconds: a bound on a wait that keeps failing, never a measure of speed


def person(uid: str, given: str | None = None, **extra: str) -> str:
    given = given or uid.title()
    lines = [
        f"dn: uid={uid},{PEOPLE}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {given} Tester",
        "sn: Tester",
        f"givenName: {given}",
        f"mail: {uid}@example.org",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines)


def group(name: str, *members: str) -> str:
    return "\n".join(
        [f"dn: cn={name},{GROUPS}", "objectClass: groupOfNames", f"cn: {name}", *(f"member: {m}" for m in members)]
    )


def dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


# alice is in no mapped group (no_access); bob, carol and dave each hold one role (pending).
DIRECTORY = "\n\n".join(
    [
        person("alice"),
        person("bob"),
        person("carol"),
        person("dave"),
        group("admins", dn("bob")),
        group("staff", dn("carol")),
        group("engineering", dn("dave")),
    ]
)


def wait_for(check: Callable[[], Any], what: str, cap: float = CAP) -> Any:
    """Poll until `check()` is truthy; the cap only bounds a wait that would never end."""
    deadline = time.monotonic() + cap
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {cap:.0f}s")
        time.sleep(0.1)


@dataclass
class World:
    deploy: LdapDeployment
    directory: Slapd
    smtp: SmtpServer
    bridge_base: str
    token: str
    product_port: int
    product_db: Path
    product_log: Path
    product: subprocess.Popen[bytes] | None = None

    # -- bridge ---------------------------------------------------------------------------------
    def sync(self, *args: str) -> dict[str, Any]:
        out = self.deploy.sync(*args)
        assert out["exit"] == 0 and not out["aborted"], out
        return out

    def feed(self, after: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """bridge's feed after `after` (None: from the oldest kept), every page; and its end."""
        events: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
            response = requests.get(
                f"{self.bridge_base}/api/v1/events",
                params=params,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            body = response.json()
            events += body["events"]
            after = body["next"]
            if not body["hasMore"]:
                return events, after

    def activate(self, address: str) -> None:
        mail = wait_for(lambda: mails_to(self.smtp, address), f"the activation mail to {address}")
        url, _ = link_in(mail[-1])
        session = requests.Session()
        _, csrf = open_form(session, url)
        done = session.post(url, data={"csrf": csrf, "password": PASSWORD, "password_confirm": PASSWORD}, timeout=30)
        assert done.status_code == 200, done.text

    def directory_change(self, dn_: str, changes: dict[str, list[tuple[str, list[Any]]]]) -> None:
        self.directory.modify(dn_, changes)

    # -- the product ----------------------------------------------------------------------------
    @property
    def product_url(self) -> str:
        return f"http://127.0.0.1:{self.product_port}"

    def start_product(self) -> None:
        env = {
            **os.environ,
            "PRODUCT_BRIDGE_URL": self.bridge_base,
            "PRODUCT_BRIDGE_TOKEN": self.token,
            "PRODUCT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PRODUCT_DB": str(self.product_db),
            "PRODUCT_PORT": str(self.product_port),
            # Once an hour: between its start and the end of a test, only webhooks make it read.
            "PRODUCT_POLL_SECONDS": "3600",
            # Two accounts a page: the snapshot and the feed are both read over several pages.
            "PRODUCT_PAGE_LIMIT": "2",
        }
        with open(self.product_log, "ab") as log:
            self.product = subprocess.Popen(
                [sys.executable, "-m", "examples.product"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        wait_for(self._caught_up_once, "the product to start and catch up")

    def _caught_up_once(self) -> bool:
        assert self.product is not None and self.product.poll() is None, self.product_log.read_text()[-3000:]
        try:
            status = requests.get(f"{self.product_url}/status", timeout=10).json()
        except requests.ConnectionError:
            return False
        return status["caughtUpAt"] is not None

    def kill_product(self) -> None:
        """SIGKILL: what the product commits must survive a crash, not only a clean stop."""
        assert self.product is not None
        self.product.send_signal(signal.SIGKILL)
        self.product.wait(timeout=30)
        self.product = None

    def stop_product(self) -> None:
        if self.product is not None and self.product.poll() is None:
            self.product.send_signal(signal.SIGTERM)
            assert self.product.wait(timeout=30) == 0, self.product_log.read_text()[-3000:]
        self.product = None

    def status(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.product_url}/status", timeout=10).json())

    def product_rows(self, sql: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.product_db}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql)]
        finally:
            conn.close()

    def product_users(self) -> dict[str, dict[str, Any]]:
        return {
            r["user_name"]: {**r, "roles": json.loads(r["roles"])} for r in self.product_rows("SELECT * FROM users")
        }

    def feed_end(self) -> str:
        """Where bridge's feed stands now (a snapshot's eventsCursor), even when nothing is kept."""
        response = requests.get(
            f"{self.bridge_base}/api/v1/accounts",
            params={"limit": 1},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["eventsCursor"])

    def in_step(self) -> bool:
        """The product's cursor is at the end of bridge's feed, with nothing left to re-read."""
        end = self.feed_end()
        status = self.status()
        return status["cursor"] == end and status["needsRefresh"] == 0

    def assert_same_accounts(self) -> None:
        """Every account of bridge, as the product has it."""
        bridge_side = {
            u["userName"]: {
                "bridge_id": u["id"],
                "email": u["email"],
                "given_name": u["givenName"],
                "family_name": u["familyName"],
                "display_name": u["displayName"],
                "status": u["status"],
                "roles": u["roles"],
            }
            for u in self.deploy.users().values()
        }
        product_side = {
            name: {
                k: u[k] for k in ("bridge_id", "email", "given_name", "family_name", "display_name", "status", "roles")
            }
            for name, u in self.product_users().items()
        }
        assert product_side == bridge_side


@pytest.fixture
def world(
    tmp_path: Path, db_url: str, slapd: Slapd, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    slapd.add_ldif(DIRECTORY + "\n")
    deploy = LdapDeployment(
        tmp_path,
        db_url,
        flavor="openldap",
        url=slapd.url,
        bind_dn=slapd.bind_dn,
        password=slapd.password,
        user_base=PEOPLE,
        group_base=GROUPS,
        monkeypatch=monkeypatch,
    )
    bridge_port, product_port = free_port(), free_port()
    bridge_base = f"http://127.0.0.1:{bridge_port}"
    monkeypatch.setenv("BRIDGE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
    deploy.config.write_text(
        deploy.config.read_text()
        + notify_config(
            smtp=smtp_server, public_url=bridge_base, webhook_url=f"http://127.0.0.1:{product_port}/webhooks/bridge"
        )
        + "\n[api]\nevent_retention_days = 1\n"
    )
    assert deploy.bridge("db", "upgrade").exit_code == 0
    created = deploy.bridge("tokens", "create", "--tenant", "example", "--label", "product", "--read-only")
    assert created.exit_code == 0, created.output
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "ab") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--config", str(deploy.config), "serve", "--port", str(bridge_port)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )

    def ready() -> bool:
        assert serve.poll() is None, serve_log.read_text()[-3000:]
        try:
            return requests.get(f"{bridge_base}/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    world = World(
        deploy=deploy,
        directory=slapd,
        smtp=smtp_server,
        bridge_base=bridge_base,
        token=created.output.strip().splitlines()[-1],
        product_port=product_port,
        product_db=tmp_path / "product.db",
        product_log=tmp_path / "product.log",
    )
    try:
        wait_for(ready, "bridge serve to be ready")
        yield world
    finally:
        try:
            world.stop_product()
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)


def sign_in(world: World, login: str, password: str) -> requests.Response:
    return requests.post(f"{world.product_url}/signin", data={"userName": login, "password": password}, timeout=30)


def test_joiner_leaver_and_an_outage_reach_the_product_once_each(world: World) -> None:
    # Accounts exist before the product starts: it reconciles from the snapshot (two pages and
    # more), then follows the feed from the snapshot's eventsCursor.
    world.sync()
    world.start_product()
    world.assert_same_accounts()
    assert world.product_users()["bob"]["roles"] == ["administration"]
    started = world.status()
    assert started["reconciliations"] == 1 and started["reconciled_cursor"] == started["cursor"]

    # A joiner: alice is added to a mapped group, activates through the mailed link, and the
    # product (which only reads the feed when a webhook says so) shows her active.
    world.directory_change(f"cn=admins,{GROUPS}", {"member": [(MODIFY_ADD, [dn("alice")])]})
    assert world.sync()["rolesChanged"] == 1
    world.activate("alice@example.org")
    wait_for(lambda: world.product_users()["alice"]["status"] == "active", "alice to be active in the product")
    assert world.product_users()["alice"]["roles"] == ["administration"]
    assert world.status()["webhooksReceived"] > 0
    welcome = sign_in(world, "alice", PASSWORD)
    assert welcome.status_code == 200 and "Alice Tester" in welcome.text and "administration" in welcome.text
    assert sign_in(world, "alice@example.org", PASSWORD).status_code == 200  # an email names her too
    assert sign_in(world, "alice", "not her password").status_code == 401
    assert sign_in(world, "bob", PASSWORD).status_code == 401  # pending: no password yet

    # A leaver: removed from the directory, archived in the product; no more sign-in.
    conn = world.directory.connect()
    try:
        assert conn.delete(dn("alice")), conn.result
    finally:
        conn.unbind()
    assert world.sync("--full")["archived"] == 1  # a delta run does not see deletes
    wait_for(lambda: world.product_users()["alice"]["status"] == "archived", "alice to be archived in the product")
    assert world.product_users()["alice"]["roles"] == []
    assert sign_in(world, "alice", PASSWORD).status_code == 401

    # The product is down (killed) while several changes happen; bridge's webhooks to it fail.
    world.kill_product()
    killed_at = world.feed_end()
    world.directory.add_ldif(person("erin") + "\n")
    world.directory_change(f"cn=staff,{GROUPS}", {"member": [(MODIFY_ADD, [dn("erin")])]})
    world.directory_change(f"cn=staff,{GROUPS}", {"member": [(MODIFY_DELETE, [dn("carol")])]})
    world.directory_change(f"cn=admins,{GROUPS}", {"member": [(MODIFY_ADD, [dn("dave")])]})
    world.directory_change(dn("bob"), {"title": [(MODIFY_REPLACE, ["Boss"])]})
    out = world.sync()
    assert out["created"] == 1 and out["rolesChanged"] >= 3, out
    world.activate("erin@example.org")
    missed, _ = world.feed(after=killed_at)
    assert {e["type"] for e in missed} >= {"account.created", "account.roles_changed", "account.activated"}

    def webhooks_failed() -> bool:
        rows = json.loads(world.deploy.bridge("outbox", "list", "--json").output)
        hooks = {r["id"]: r for r in rows if r["channel"] == "webhook" and r["topic"] == "account.activated"}
        erin_id = world.deploy.account_ids()["erin"]
        return any(r["accountId"] == erin_id and r["attempts"] >= 1 and r["lastError"] for r in hooks.values())

    wait_for(webhooks_failed, "a webhook to the stopped product to fail")

    # Restarted, the product catches up from the cursor it stored with its last changes.
    world.start_product()
    wait_for(world.in_step, "the product to catch up with the feed")
    world.assert_same_accounts()
    users = world.product_users()
    assert users["erin"]["status"] == "active" and users["erin"]["roles"] == ["staff"]
    assert users["carol"]["status"] == "no_access" and users["carol"]["roles"] == []
    assert users["bob"]["roles"] == ["administration", "boss"]
    assert users["dave"]["roles"] == ["administration", "engineering"]
    assert world.status()["reconciliations"] == 1  # a stored cursor: no second snapshot

    # Every event since the snapshot applied exactly once, none lost, none twice; per account too.
    since_snapshot, _ = world.feed(after=started["reconciled_cursor"])
    applied = world.product_rows("SELECT event_id, account_id FROM applied_events")
    assert sorted(r["event_id"] for r in applied) == sorted(e["id"] for e in since_snapshot)
    per_account: dict[str, int] = {}
    for event in (e for e in since_snapshot if e["account"]):
        per_account[event["account"]["id"]] = per_account.get(event["account"]["id"], 0) + 1
    assert {u["bridge_id"]: u["events_applied"] for u in users.values() if u["events_applied"]} == per_account

    # The product's own copy decides who gets in: a right password is not enough for a user the
    # product has as suspended (an operator's edit here, standing for a product-side rule).
    assert sign_in(world, "erin", PASSWORD).status_code == 200
    conn_ = sqlite3.connect(world.product_db, timeout=30)
    with conn_:
        conn_.execute("UPDATE users SET status = 'suspended' WHERE user_name = 'erin'")
    conn_.close()
    refused = sign_in(world, "erin", PASSWORD)
    assert refused.status_code == 403 and "not active" in refused.text


def signed(body: bytes, secret: str = WEBHOOK_SECRET, at: float | None = None) -> dict[str, str]:
    stamp = int(at if at is not None else time.time())
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret.encode(), stamp, body)}


def test_unknown_event_types_are_re_read_and_a_410_reconciles(world: World) -> None:
    world.sync()
    world.start_product()
    hook = f"{world.product_url}/webhooks/bridge"
    body = encode_event({"id": "x", "type": "account.pending"})
    # A missing, foreign, stale or mismatched signature is refused; a body that is not JSON too.
    assert requests.post(hook, data=body, timeout=10).status_code == 401
    assert (
        requests.post(hook, data=body, headers=signed(body, "another secret of enough length!"), timeout=10).status_code
        == 401
    )
    assert requests.post(hook, data=body, headers=signed(body, at=time.time() - 3600), timeout=10).status_code == 401
    assert requests.post(hook, data=body + b" ", headers=signed(body), timeout=10).status_code == 401
    assert requests.post(hook, data=b"not json", headers=signed(b"not json"), timeout=10).status_code == 400
    # Only these: bridge's own webhooks (the first sync's, delivered once the product listens)
    # are signed as the product checks them.
    assert world.status()["webhooksRefused"] == 4

    # bob's name changes in the directory: account.updated, with the changed fields.
    world.directory_change(
        dn("bob"), {"givenName": [(MODIFY_REPLACE, ["Robert"])], "cn": [(MODIFY_REPLACE, ["Robert Tester"])]}
    )
    assert world.sync()["updated"] == 1
    wait_for(lambda: world.product_users()["bob"]["display_name"] == "Robert Tester", "bob's new name in the product")
    assert world.product_users()["bob"]["given_name"] == "Robert"

    # The feed brings an event of a type this product has never heard of (a newer bridge's,
    # about carol): not guessed at, carol is re-read from the snapshot. Her name, spoiled here in
    # the product's database, shows that the re-read happened.
    with sqlite3.connect(world.product_db, timeout=30) as product_db:
        product_db.execute("UPDATE users SET display_name = 'Spoiled' WHERE user_name = 'carol'")
    product_db.close()
    carol, unknown = world.deploy.account_ids()["carol"], new_id()
    with runtime_of(world.deploy) as runtime, transaction(runtime.engine) as conn:
        tenant_id = conn.execute(select(Tenant.id).where(Tenant.name == "example")).scalar_one()
        now = datetime.now(UTC)
        event = {
            "id": unknown,
            "type": "account.something_new",
            "tenant": "example",
            "occurred_at": now.isoformat(),
            "account": {"id": carol},
            "change": {"after": {"shape": ["nobody", "knows"]}},
        }
        queue_event(conn, tenant_id, now, event)
    # bridge sends no webhook for an event written this way: the test sends the hint itself.
    hint = encode_event(event)
    assert requests.post(hook, data=hint, headers=signed(hint), timeout=10).status_code == 202
    wait_for(world.in_step, "the product to read the unknown event and re-read carol")
    assert world.product_users()["carol"]["display_name"] == "Carol Tester"
    assert world.product_rows(f"SELECT type FROM applied_events WHERE event_id = '{unknown}'") == [
        {"type": "account.something_new"}
    ]
    world.assert_same_accounts()

    # Down longer than bridge keeps events: its cursor answers 410 and the product reconciles.
    world.kill_product()
    conn = world.directory.connect()
    try:
        assert conn.delete(dn("carol")), conn.result
    finally:
        conn.unbind()
    assert world.sync("--full")["archived"] == 1
    with runtime_of(world.deploy) as runtime, runtime.engine.begin() as db:
        db.execute(update(AccountEventRow).values(occurred_at=datetime.now(UTC) - timedelta(days=3)))
    schedules = world.deploy.root / "schedules"
    schedules.mkdir(exist_ok=True)
    (schedules / "purge.toml").write_text('[jobs.purge]\ntarget = "purge"\nevery = "1d"\n')
    assert world.deploy.bridge("jobs", "run", "purge").exit_code == 0
    stale = requests.get(
        f"{world.bridge_base}/api/v1/events",
        params={"after": world.product_rows("SELECT cursor FROM feed_state")[0]["cursor"]},
        headers={"Authorization": f"Bearer {world.token}"},
        timeout=30,
    )
    assert stale.status_code == 410
    world.start_product()
    wait_for(world.in_step, "the product to reconcile after the 410")
    assert world.status()["reconciliations"] == 2
    world.assert_same_accounts()
    assert world.product_users()["carol"]["status"] == "archived"
