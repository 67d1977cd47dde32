"""The `bridge` command as administrators and scripts use it: a real process, real exit codes."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Deployment

BRIDGE = [sys.executable, "-m", "bridge"]


def run(d: Deployment, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BRIDGE, "--config", str(d.config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=d.root,
    )


def db_snapshot(d: Deployment) -> dict[str, int]:
    from tests.integration.test_sync_ldif import table_counts

    return table_counts(d)


@pytest.fixture
def synced(deployment: Deployment) -> Deployment:
    result = run(deployment, "sync")
    assert result.returncode == 0, result.stderr
    return deployment


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("[database\nurl = 1\n", "invalid TOML"),
        ('[database]\nurl = "sqlite:///x.db"\ncolour = "red"\n', "database.colour: unknown key"),
        ('[email]\npassword = "hunter2"\n', "email.password: secrets are not accepted in the file; use password_env"),
        ('[[tenants]]\nname = "t"\nseat_limit = "ten"\n', "tenants[1].seat_limit: must be int"),
        (
            '[[tenants]]\nname = "t"\n[[sources]]\nname = "s"\ntenant = "nope"\nkind = "ldif"\npath = "x"\n'
            'user_base = "o=x"\ngroup_base = "o=x"\n',
            'sources[1].tenant: tenant "nope" is not declared',
        ),
        (
            '[[tenants]]\nname = "t"\n[[sources]]\nname = "s"\ntenant = "t"\nkind = "ldap"\nbind_password = "x"\n',
            "sources[1].bind_password: secrets are not accepted",
        ),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key_exit_2(tmp_path: Path, config_text: str, expected: str) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(config_text)
    result = subprocess.run([*BRIDGE, "--config", str(config), "sync"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"bridge: {config}") and expected in lines[0]


def test_mapping_naming_an_undefined_role_fails_before_any_write(deployment: Deployment) -> None:
    deployment.mapping.write_text(
        deployment.mapping.read_text() + '\n[[rules]]\ngroup_name = "kitchen"\nroles = ["chef"]\n'
    )
    result = run(deployment, "sync")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f'{deployment.mapping}: rules[9].roles: role "chef" is not defined' in result.stderr
    # The mapping is checked before the database is even opened (bridge.config.check_mappings).
    assert run(deployment, "db", "upgrade").returncode == 0
    assert db_snapshot(deployment)["accounts"] == 0


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_unreadable_ldif_names_file_and_line_exit_2_no_writes(deployment: Deployment, damage: str) -> None:
    if damage == "missing":
        deployment.ldif.unlink()
    else:
        deployment.ldif.write_text("dn: uid=x,ou=people,dc=example,dc=org\nmail:: ###notbase64###\n")
    result = run(deployment, "sync")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert str(deployment.ldif) in result.stderr and "Traceback" not in result.stderr
    assert db_snapshot(deployment)["accounts"] == 0


def test_secret_from_environment_variable_is_accepted(deployment: Deployment) -> None:
    deployment.write_config(extra='\n[email]\nusername = "bridge"\npassword_env = "BRIDGE_TEST_SMTP"\n')
    assert run(deployment, "db", "upgrade").returncode == 0


def test_tokens_are_printed_once_and_stored_hashed(synced: Deployment) -> None:
    created = run(synced, "tokens", "create", "--tenant", "example", "--label", "entra")
    assert created.returncode == 0
    token = created.stdout.strip().splitlines()[-1]
    assert len(token) > 40
    listing = json.loads(run(synced, "tokens", "list", "--tenant", "example", "--json").stdout)
    assert listing[0]["label"] == "entra" and token not in json.dumps(listing)
    from sqlalchemy import select

    from bridge.store.db import make_engine
    from bridge.store.tables import ScimToken
    from bridge.store.tokens import hash_token

    engine = make_engine(synced.db_url)
    with engine.connect() as conn:
        stored = conn.execute(select(ScimToken.token_hash)).scalars().all()
    engine.dispose()
    assert stored == [hash_token(token)]
    assert run(synced, "tokens", "revoke", listing[0]["id"]).returncode == 0
    assert json.loads(run(synced, "tokens", "list", "--tenant", "example", "--json").stdout)[0]["revoked"]


def test_manual_archive_holds_until_reactivated(synced: Deployment) -> None:
    users = {u["userName"]: u for u in json.loads(run(synced, "users", "list", "--json").stdout)}
    person = next(name for name, u in users.items() if u["status"] == "pending")
    archived = run(synced, "users", "archive", users[person]["email"])
    assert archived.returncode == 0 and "pending -> archived" in archived.stdout
    run(synced, "sync")  # still in the directory, but an administrator archived it
    assert json.loads(run(synced, "users", "show", person, "--json").stdout)["status"] == "archived"
    back = run(synced, "users", "reactivate", person)
    assert back.returncode == 0 and "archived -> pending" in back.stdout
    audit = json.loads(run(synced, "audit", "--user", person, "--json").stdout)
    actions = [e["action"] for e in audit]
    assert actions[-4:] == ["archive", "reactivate", "grant_roles"][-3:] or "reactivate" in actions
    assert any(e["actor"].startswith("cli:") and e["action"] == "archive" for e in audit)


def test_resend_activation_only_for_pending(synced: Deployment) -> None:
    users = json.loads(run(synced, "users", "list", "--json").stdout)
    pending = next(u for u in users if u["status"] == "pending")
    collaborator = next(u for u in users if u["status"] == "no_access")
    assert run(synced, "users", "resend-activation", pending["userName"]).returncode == 0
    refused = run(synced, "users", "resend-activation", collaborator["userName"])
    assert refused.returncode == 1 and "only pending accounts" in refused.stderr


def test_unknown_user_is_exit_1_with_a_message(synced: Deployment) -> None:
    result = run(synced, "users", "show", "nobody-here")
    assert result.returncode == 1 and 'no account "nobody-here"' in result.stderr


def test_explain_names_the_rule_and_the_nested_group(synced: Deployment) -> None:
    users = json.loads(run(synced, "users", "list", "--json").stdout)
    admin = next(u for u in users if "administration" in u["roles"])
    data = json.loads(run(synced, "explain", admin["userName"], "--json").stdout)
    matched = [r for r in data["rules"] if r["matched"]]
    assert any("cn=admins" in r["rule"] for r in matched)
    assert any("cn=managers" in r["rule"] for r in matched)  # via nesting
    assert {r["role"] for r in data["roles"]} >= {"administration", "financial_reports"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_health_and_readiness(synced: Deployment) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*BRIDGE, "--config", str(synced.config), "serve", "--port", str(port), "--no-scheduler"],
        cwd=synced.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "bridge serve did not start"
                time.sleep(0.1)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_terminal_controls_in_names_are_shown_escaped_not_obeyed(deployment: Deployment) -> None:
    # A directory entry whose given name clears the screen and rewrites the line it is on.
    hostile = "Alice\x1b[2J\x1b[31m\rroot\u202egnp.exe\x9b"
    value = base64.b64encode(hostile.encode()).decode()
    deployment.edit_person("agarnier", "givenName", None)
    deployment.edit_person("agarnier", "givenName:", value)  # base64 (LDIF's "::")
    assert run(deployment, "sync").returncode == 0

    def output(*args: str) -> str:
        # Bytes, not text mode: text mode would turn a \r into a newline before we could see it.
        done = subprocess.run([*BRIDGE, "--config", str(deployment.config), *args], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    for args in (["users", "list"], ["users", "show", "agarnier"], ["explain", "agarnier"]):
        assert not set(output(*args)) & {"\x1b", "\r", "\u202e", "\x9b"}, args
    assert "\\u000droot\\u202egnp.exe\\u009b" in output("users", "show", "agarnier")
    # --json stays JSON, and says exactly what is stored.
    data = json.loads(output("users", "show", "agarnier", "--json"))
    assert data["givenName"].endswith("\rroot\u202egnp.exe\x9b")  # (the directory reader drops ESC itself)
