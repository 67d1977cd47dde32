"""Shared test configuration. Server fixtures live in tests/fixtures/, one module each."""

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Plugins (not plain imports) so pytest registers the fixtures and rewrites asserts
# in them; this only works from a top-level conftest like this one.
pytest_plugins = [
    "tests.fixtures.slapd",
    "tests.fixtures.postgres",
    "tests.fixtures.smtp",
    "tests.fixtures.webhook",
    "tests.fixtures.scim",
    "tests.fixtures.samba",
    "tests.fixtures.browser",
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store test runs on the embedded default (SQLite, WAL) and on a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
    else:
        yield request.getfixturevalue("pg_url")


class Deployment:
    """A throwaway bridge deployment in a temp dir: config, mapping, LDIF and database."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.db_url = db_url
        self.ldif = root / "directory.ldif"
        self.mapping = root / "mapping.toml"
        self.config = root / "bridge.toml"
        shutil.copy(ROOT / "examples" / "directory.ldif", self.ldif)
        shutil.copy(ROOT / "mappings" / "example.toml", self.mapping)
        self.write_config()

    def write_config(self, seat_limit: int | None = 50, extra: str = "") -> None:
        limit = f"seat_limit = {seat_limit}\n" if seat_limit is not None else ""
        self.config.write_text(
            f'[database]\nurl = "{self.db_url}"\n\n'
            f'[[tenants]]\nname = "example"\nmappings = "mapping.toml"\n{limit}\n'
            '[[sources]]\nname = "dir"\ntenant = "example"\nkind = "ldif"\nflavor = "openldap"\n'
            'path = "directory.ldif"\nuser_base = "ou=people,dc=example,dc=org"\n'
            'group_base = "ou=groups,dc=example,dc=org"\ndeletion_threshold = 0.10\n' + extra
        )

    # -- editing the directory ------------------------------------------------------------
    @staticmethod
    def dn_of(record: str) -> str:
        return next((ln[4:].strip() for ln in record.splitlines() if ln.startswith("dn: ")), "")

    def records(self) -> list[str]:
        return [r for r in re.split(r"\n\s*\n", self.ldif.read_text()) if r.strip()]

    def write_records(self, records: list[str]) -> None:
        self.ldif.write_text("\n\n".join(records) + "\n")

    def remove_people(self, uids: list[str]) -> None:
        keep = [r for r in self.records() if not any(self.dn_of(r).startswith(f"uid={u},") for u in uids)]
        self.write_records(keep)

    def people(self) -> list[str]:
        return re.findall(r"^dn: uid=([^,]+),ou=people", self.ldif.read_text(), re.M)

    def edit_person(self, uid: str, attribute: str, value: str | None) -> None:
        out = []
        for record in self.records():
            if self.dn_of(record).startswith(f"uid={uid},"):
                lines = [ln for ln in record.splitlines() if not ln.lower().startswith(attribute.lower() + ":")]
                if value is not None:
                    lines.append(f"{attribute}: {value}")
                record = "\n".join(lines)
            out.append(record)
        self.write_records(out)


@pytest.fixture
def deployment(tmp_path: Path, db_url: str) -> Deployment:
    return Deployment(tmp_path, db_url)


def stale_held_roles(conn: Any) -> list[tuple[str, str | None, str]]:
    """Accounts whose `held_roles` (the seat count's copy, migration 0017) is not their grants:
    (id, held_roles, what role_grants says). Empty when apply kept the copy right."""
    from sqlalchemy import select

    from bridge.store.accounts import held_roles_text
    from bridge.store.tables import Account, RoleGrant

    grants: dict[str, list[str]] = {}
    for account_id, role in conn.execute(select(RoleGrant.account_id, RoleGrant.role)):
        grants.setdefault(account_id, []).append(role)
    out = []
    for account_id, held in conn.execute(select(Account.id, Account.held_roles)):
        expected = held_roles_text(grants.get(account_id, []))
        if held != expected:
            out.append((account_id, held, expected))
    return out
