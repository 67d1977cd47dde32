"""The OpenLDAP guide's configuration is a tested artefact: its ACL (slapd.conf and cn=config
forms), its bind account and the example directory, loaded as the guide and the files say, give
the same accounts as syncing the example LDIF.

SQLite only: what is under test is the directory side; test_sync_ldap runs the store on both.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from tests.conftest import ROOT, Deployment
from tests.fixtures.slapd import ADMIN_DN, ADMIN_PASSWORD, Slapd, require_tool
from tests.ldap_deployment import LdapDeployment

GUIDE = ROOT / "docs" / "directory" / "openldap.md"
ACL_CONF = ROOT / "docs" / "directory" / "openldap-acl.conf"
ACL_LDIF = ROOT / "docs" / "directory" / "openldap-acl.ldif"
BIND_ACCOUNT = ROOT / "docs" / "directory" / "openldap-bind-account.ldif"
EXAMPLE = ROOT / "examples" / "directory.ldif"
EXAMPLE_MAPPING = ROOT / "mappings" / "example.toml"
BIND_DN = "cn=bridge,ou=services,dc=example,dc=org"
BIND_PASSWORD = "Bridge-reads-only-1"
PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"


def guide_server(make: Any, *, cn_config: bool, access_file: Path | None = ACL_CONF) -> Slapd:
    """A slapd set up as the guide says: the example loaded with slapadd, the ACL, the account."""
    server: Slapd = make(seed_base=False, cn_config=cn_config, access_file=None if cn_config else access_file)
    server.slapadd(EXAMPLE)  # as the file's own comment says (slapd stopped, restarted after)
    if cn_config:
        server.modify_config(ACL_LDIF)
    server.add_ldif(BIND_ACCOUNT.read_text())
    subprocess.run(
        [
            require_tool("ldappasswd"),
            "-x",
            "-H",
            server.url,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
            "-s",
            BIND_PASSWORD,
            BIND_DN,
        ],
        check=True,
        capture_output=True,
    )
    return server


def ldap_deployment(root: Path, server: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapDeployment:
    root.mkdir()
    deploy = LdapDeployment(
        root,
        f"sqlite:///{root / 'bridge.db'}",
        flavor="openldap",
        url=server.url,
        bind_dn=BIND_DN,
        password=BIND_PASSWORD,
        user_base=PEOPLE,
        group_base=GROUPS,
        monkeypatch=monkeypatch,
    )
    deploy.mapping.write_text(EXAMPLE_MAPPING.read_text())
    return deploy


def comparable(users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # Ids and times differ between two databases; an external account's expiry is only there or not.
    return {
        name: {
            **{k: v for k, v in user.items() if k not in ("id", "source", "created", "lastModified")},
            "expires": user.get("expires") is not None,
        }
        for name, user in users.items()
    }


def ldif_accounts(root: Path) -> dict[str, dict[str, Any]]:
    root.mkdir()
    deploy = Deployment(root, f"sqlite:///{root / 'bridge.db'}")
    deploy.write_config(seat_limit=None)  # as the LDAP deployment
    runner = CliRunner()
    out = runner.invoke(main, ["--config", str(deploy.config), "sync", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    listed = runner.invoke(main, ["--config", str(deploy.config), "users", "list", "--json"], catch_exceptions=False)
    return comparable({u["userName"]: u for u in json.loads(listed.output)})


@pytest.mark.parametrize("cn_config", [False, True], ids=["slapd.conf", "cn=config"])
def test_the_guides_acl_and_bind_account_sync_the_example_as_the_ldif_does(
    cn_config: bool, slapd_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = guide_server(slapd_factory, cn_config=cn_config)
    # The rules are in force: the account reads nothing it was not given (ou=services).
    conn = server.connect(BIND_DN, BIND_PASSWORD)
    try:
        conn.search("ou=services,dc=example,dc=org", "(objectClass=*)", attributes=["uid"])
        assert conn.bound and conn.entries == [], conn.entries
        assert conn.search(PEOPLE, "(uid=agarnier)", attributes=["ou", "employeeNumber"])
        got = conn.entries[0].entry_attributes_as_dict
        assert {name for name, values in got.items() if values} == {"ou", "employeeNumber"}
    finally:
        conn.unbind()
    deploy = ldap_deployment(tmp_path / "ldap", server, monkeypatch)
    out = deploy.sync()
    assert out["exit"] == 0 and not out["aborted"] and out["errors"] == [] and out["warnings"] == [], out
    # Delta bookmarks need the suffix's contextCSN, which the ACL lets the account read.
    assert deploy.bookmark()["delta.mark"].startswith("csn:")
    accounts = comparable(deploy.users())
    expected = ldif_accounts(tmp_path / "ldif")
    assert accounts == expected
    # The example's attribute rule and lock both depend on the ACL letting them through.
    finance = [name for name, a in accounts.items() if "financial_reports" in a["roles"]]
    assert len(finance) >= 3 and "suspended" in {a["status"] for a in accounts.values()}
    assert deploy.sync()["mode"] == "delta"


def test_an_acl_hiding_an_attribute_a_rule_reads_is_a_warning_not_silence(
    slapd_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guide's ACL before issue 12 hid `ou`, and the example's Finance rule matched nobody.
    hiding = tmp_path / "acl.conf"
    hiding.write_text(re.sub(r",ou,", ",", ACL_CONF.read_text()))
    assert hiding.read_text() != ACL_CONF.read_text()
    server = guide_server(slapd_factory, cn_config=False, access_file=hiding)
    deploy = ldap_deployment(tmp_path / "ldap", server, monkeypatch)
    out = deploy.sync()
    assert out["exit"] == 0 and out["errors"] == [], out
    (warning,) = out["warnings"]
    assert warning.startswith("no person read has the attribute 'ou', so rule 5: attribute ou = \"Finance\"")


def test_the_guide_shows_the_acl_file_and_names_the_files_it_comes_from() -> None:
    guide = GUIDE.read_text()
    for path in (ACL_CONF, ACL_LDIF, BIND_ACCOUNT):
        assert f"({path.name})" in guide, f"the guide does not link {path.name}"
    assert BIND_DN in guide and BIND_DN in ACL_LDIF.read_text() and BIND_DN in BIND_ACCOUNT.read_text()
    rules = [line for line in ACL_CONF.read_text().splitlines() if line.strip() and not line.startswith("#")]
    shown = guide.split("## The bind account", 1)[1].split("```conf\n", 1)[1].split("```", 1)[0]
    assert shown.splitlines() == rules
    # The cn=config form says the same: each olcAccess value is a rule of the .conf file.
    values = re.findall(r"^olcAccess: \{\d+\}(.*(?:\n  .*)*)", ACL_LDIF.read_text(), re.M)
    conf_rules = re.split(r"\n(?=access to)", "\n".join(rules))
    assert [" ".join(v.split()) for v in values] == [" ".join(r.split())[len("access ") :] for r in conf_rules]
