"""A bridge deployment whose source is a live directory (slapd or Samba AD), driven through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import func, select

from bridge.cli import main
from bridge.store.db import make_engine
from bridge.store.tables import Account, AuditEvent, Identity, OutboxMessage, RoleGrant, SourceState, SyncRun

MAPPING = """\
[roles.administration]
title = "Administration"

[roles.engineering]
title = "Engineering"

[roles.staff]
title = "Staff"
billable = false

[roles.boss]
title = "Boss"

[[rules]]
group_name = "admins"
roles = ["administration"]

[[rules]]
group_name = "engineering"
roles = ["engineering"]

[[rules]]
group_name = "staff"
roles = ["staff"]

[[rules]]
group_name = "ops"
roles = ["engineering"]

[[rules]]
attribute = "title"
equals = "Boss"
roles = ["boss"]
"""

PASSWORD_ENV = "BRIDGE_TEST_LDAP_PASSWORD"


class LdapDeployment:
    """Config, mapping and database in a temp dir; one `kind = "ldap"` source called "dir"."""

    def __init__(
        self,
        root: Path,
        db_url: str,
        *,
        flavor: str,
        url: str,
        bind_dn: str,
        password: str,
        user_base: str,
        group_base: str,
        monkeypatch: Any,
    ) -> None:
        self.root = root
        self.db_url = db_url
        self.config = root / "bridge.toml"
        self.mapping = root / "mapping.toml"
        self.mapping.write_text(MAPPING)
        monkeypatch.setenv(PASSWORD_ENV, password)
        self.source: dict[str, Any] = {
            "name": "dir",
            "tenant": "example",
            "kind": "ldap",
            "flavor": flavor,
            "url": url,
            "bind_dn": bind_dn,
            "bind_password_env": PASSWORD_ENV,
            "user_base": user_base,
            "group_base": group_base,
            "deletion_threshold": 0.5,
            "deletion_threshold_min": 2,
            "timeout": 10,
        }
        self.write_config()

    def write_config(self, **changes: Any) -> None:
        self.source.update(changes)
        lines = [f'[database]\nurl = "{self.db_url}"\n', '[[tenants]]\nname = "example"\nmappings = "mapping.toml"\n']
        body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.source.items() if v is not None)
        lines.append("[[sources]]\n" + body)
        self.config.write_text("\n".join(lines))

    def add_to_mapping(self, toml: str) -> None:
        """Append rules (or a [user_type] table) to the mapping."""
        self.mapping.write_text(self.mapping.read_text() + "\n" + toml)

    # -- CLI --------------------------------------------------------------------------------
    def bridge(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args], catch_exceptions=False)

    def sync(self, *args: str) -> dict[str, Any]:
        result = self.bridge("sync", "--json", *args)
        lines = result.output.strip().splitlines()
        assert lines, result.output
        return {"exit": result.exit_code, **json.loads(lines[-1])}

    def users(self) -> dict[str, dict[str, Any]]:
        result = self.bridge("users", "list", "--json")
        assert result.exit_code == 0, result.output
        return {u["userName"]: u for u in json.loads(result.output)}

    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.bridge("sync", "--history", "--json").output)

    # -- store ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return {
                    t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (Account, AuditEvent, Identity, OutboxMessage, RoleGrant)
                }
        finally:
            engine.dispose()

    def archived(self) -> int:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return conn.execute(
                    select(func.count()).select_from(Account).where(Account.status == "archived")
                ).scalar_one()
        finally:
            engine.dispose()

    def account_ids(self) -> dict[str, str]:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return {r.user_name: r.id for r in conn.execute(select(Account.user_name, Account.id))}
        finally:
            engine.dispose()

    def bookmark(self) -> dict[str, str | None]:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return {r.key: r.value for r in conn.execute(select(SourceState.key, SourceState.value))}
        finally:
            engine.dispose()

    def set_bookmark(self, key: str, value: str) -> None:
        engine = make_engine(self.db_url)
        try:
            with engine.begin() as conn:
                conn.execute(SourceState.__table__.update().where(SourceState.key == key).values(value=value))
        finally:
            engine.dispose()

    def last_run_mode(self) -> str:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return conn.execute(select(SyncRun.mode).order_by(SyncRun.id.desc()).limit(1)).scalar_one()
        finally:
            engine.dispose()
