"""The live LDAP source against a real Samba AD DC (one DC for the module; each test has its own OU).

Runs on SQLite only: the store paths are the same as with slapd, which covers PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ldap3 import BASE, MODIFY_ADD, MODIFY_REPLACE, Connection

from bridge.directory.values import decode_sid
from tests.fixtures.samba import SambaDC
from tests.ldap_deployment import LdapDeployment

BIG = 1600  # over AD's MaxValRange of 1500 (trap 7)
PAST = int((datetime(2020, 1, 1, tzinfo=UTC) - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds()) * 10_000_000


def rid_of(conn: Connection, dn: str) -> int:
    assert conn.search(dn, "(objectClass=*)", BASE, attributes=["objectSid"]), conn.result
    return int(decode_sid(conn.response[0]["raw_attributes"]["objectSid"][0]).rpartition("-")[2])


def make_primary(conn: Connection, user: str, group: str) -> None:
    """AD only lets a user's primary group be a group they are already in (trap 5)."""
    assert conn.modify(group, {"member": [(MODIFY_ADD, [user])]}), conn.result
    assert conn.modify(user, {"primaryGroupID": [(MODIFY_REPLACE, [rid_of(conn, group)])]}), conn.result


@dataclass
class Directory:
    dc: SambaDC
    ou: str
    tag: str = ""

    def sam(self, name: str) -> str:
        """sAMAccountName is unique in the domain, so each OU's people carry its tag."""
        return f"{name}.{self.tag}" if self.tag else name


@pytest.fixture(scope="module")
def big_ou(samba_dc: SambaDC) -> Iterator[Directory]:
    """One OU with the read-only data of the first-sync test, built once (about 12 s)."""
    ou = samba_dc.new_ou("big")
    conn = samba_dc.connect()
    try:
        bulk = [samba_dc.add_user(conn, ou, f"u{i:04d}") for i in range(BIG)]
        alice = samba_dc.add_user(conn, ou, "alice")
        bob = samba_dc.add_user(conn, ou, "bob")
        samba_dc.add_user(conn, ou, "carol", enabled=False)
        samba_dc.add_user(conn, ou, "dave", accountExpires=PAST)
        pat = samba_dc.add_user(conn, ou, "pat")
        samba_dc.add_user(conn, ou, "erin", accountExpires=0)  # 0 means never (trap 3)
        assert conn.add(
            f"CN=WS01,{ou}",
            ["top", "person", "organizationalPerson", "user", "computer"],
            {"sAMAccountName": "WS01$", "userAccountControl": 4096},
        ), conn.result
        samba_dc.add_group(conn, ou, "admins", [alice])
        backend = samba_dc.add_group(conn, ou, "backend", [bob])
        samba_dc.add_group(conn, ou, "engineering", [backend])
        staff = samba_dc.add_group(conn, ou, "staff", bulk)
        make_primary(conn, pat, staff)
    finally:
        conn.unbind()
    yield Directory(samba_dc, ou)


@pytest.fixture
def small_ou(samba_dc: SambaDC) -> Directory:
    ou = samba_dc.new_ou()
    d = Directory(samba_dc, ou, tag=ou.split(",")[0][3:])
    conn = samba_dc.connect()
    try:

        def user(name: str) -> str:
            dn = samba_dc.add_user(conn, ou, d.sam(name))
            assert conn.modify_dn(dn, f"CN={name}"), conn.result  # CNs are unique per OU only
            return f"CN={name},{ou}"

        alice, bob, carol, pat = user("alice"), user("bob"), user("carol"), user("pat")
        user("frank")
        # Group names are sAMAccountNames too; the mapping matches the cn.
        for name, members in (("admins", [alice]), ("engineering", [bob]), ("staff", [carol])):
            assert conn.add(f"CN={name},{ou}", ["top", "group"], {"sAMAccountName": d.sam(name), "member": members})
        make_primary(conn, pat, f"CN=staff,{ou}")
        conn.add(f"OU=sub,{ou}", ["top", "organizationalUnit"])
    finally:
        conn.unbind()
    return d


def deployment(tmp_path: Path, d: Directory, monkeypatch: pytest.MonkeyPatch) -> LdapDeployment:
    return LdapDeployment(
        tmp_path,
        f"sqlite:///{tmp_path / 'bridge.db'}",
        flavor="ad",
        url=d.dc.url,
        bind_dn=d.dc.bind_dn,
        password=d.dc.password,
        user_base=d.ou,
        group_base=d.ou,
        monkeypatch=monkeypatch,
    )


def test_first_sync_reads_ranges_primary_groups_nesting_and_disabled_accounts(
    big_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = deployment(tmp_path, big_ou, monkeypatch)
    out = deploy.sync()
    assert out["exit"] == 0 and not out["aborted"] and out["errors"] == [], out
    users = deploy.users()
    assert "WS01$" not in users and len(users) == BIG + 6  # computer accounts are not people (trap 16)
    # staff has 1600 members: read as member;range=0-1499 then 1500-* (trap 7).
    with_staff = {name for name, u in users.items() if "staff" in u["roles"]}
    assert {f"u{i:04d}" for i in range(BIG)} <= with_staff
    assert users["pat"]["roles"] == ["staff"]  # through primaryGroupID only (trap 5)
    assert users["alice"]["roles"] == ["administration"]
    assert users["bob"]["roles"] == ["engineering"] and "backend" in users["bob"]["groups"]
    assert users["carol"]["status"] == "suspended"  # userAccountControl ACCOUNTDISABLE (trap 2)
    assert users["dave"]["status"] == "suspended"  # accountExpires in the past (trap 3)
    assert users["erin"]["status"] == "no_access"  # accountExpires 0 is "never"
    assert deploy.bookmark()["delta.server"].startswith("CN=NTDS Settings,CN=DC1,")


def test_rename_and_ou_move_keep_the_same_account(
    small_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = small_ou
    deploy = deployment(tmp_path, d, monkeypatch)
    deploy.sync()
    ids = deploy.account_ids()
    conn = d.dc.connect()
    try:
        assert conn.modify_dn(f"CN=alice,{d.ou}", "CN=alice.smith"), conn.result
        assert conn.modify(f"CN=alice.smith,{d.ou}", {"sAMAccountName": [(MODIFY_REPLACE, [d.sam("alice.smith")])]})
        assert conn.modify_dn(f"CN=bob,{d.ou}", "CN=bob", new_superior=f"OU=sub,{d.ou}"), conn.result
    finally:
        conn.unbind()
    out = deploy.sync()  # a delta: renames and moves change the entry's own uSNChanged
    assert out["mode"] == "delta" and out["created"] == 0 and out["updated"] == 1, out
    after = deploy.account_ids()
    assert after[d.sam("alice.smith")] == ids[d.sam("alice")] and after[d.sam("bob")] == ids[d.sam("bob")]
    full = deploy.sync("--full")
    assert full["created"] == full["archived"] == 0 and full["unchanged"] == 5, full
    users = deploy.users()
    assert users[d.sam("alice.smith")]["roles"] == ["administration"]
    assert users[d.sam("bob")]["roles"] == ["engineering"]


def test_person_moved_out_of_scope_is_archived_and_comes_back_as_no_access_then_pending(
    small_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = small_ou
    deploy = deployment(tmp_path, d, monkeypatch)
    deploy.sync()
    elsewhere = d.dc.new_ou("gone")
    conn = d.dc.connect()
    try:
        assert conn.modify_dn(f"CN=alice,{d.ou}", "CN=alice", new_superior=elsewhere), conn.result
        out = deploy.sync("--full")
        assert out["archived"] == 1 and deploy.users()[d.sam("alice")]["status"] == "archived", out
        assert conn.modify_dn(f"CN=alice,{elsewhere}", "CN=alice", new_superior=d.ou), conn.result
    finally:
        conn.unbind()
    out = deploy.sync()  # the move back changed her entry, so a delta brings her back
    assert out["mode"] == "delta" and out["reactivated"] == 1, out
    back = deploy.users()[d.sam("alice")]
    assert back["status"] == "pending" and back["roles"] == ["administration"]


def test_delta_picks_up_attribute_and_membership_changes_and_keeps_primary_members(
    small_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = small_ou
    deploy = deployment(tmp_path, d, monkeypatch)
    deploy.sync()
    ou = d.ou
    conn = d.dc.connect()
    try:
        assert conn.modify(f"CN=frank,{ou}", {"mail": [(MODIFY_REPLACE, ["frank.new@example.test"])]})
        assert conn.modify(f"CN=admins,{ou}", {"member": [(MODIFY_ADD, [f"CN=carol,{ou}"])]})
        # staff changes too; pat, whose primary group it is, is not in its member list (trap 5).
        assert conn.modify(f"CN=staff,{ou}", {"member": [(MODIFY_ADD, [f"CN=frank,{ou}"])]})
    finally:
        conn.unbind()
    out = deploy.sync()
    assert out["exit"] == 0 and out["mode"] == "delta", out
    users = deploy.users()
    assert users[d.sam("frank")]["email"] == "frank.new@example.test" and users[d.sam("frank")]["roles"] == ["staff"]
    assert users[d.sam("carol")]["roles"] == ["administration", "staff"]
    assert users[d.sam("pat")]["roles"] == ["staff"]
    assert out["updated"] == 1 and out["rolesChanged"] == 2 and out["archived"] == 0, out
    full = deploy.sync("--full")
    assert full["unchanged"] == 5, full


def test_another_domain_controller_makes_the_delta_a_full_run(
    small_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = small_ou
    deploy = deployment(tmp_path, d, monkeypatch)
    deploy.sync()
    assert deploy.sync()["mode"] == "delta"
    # USNs are per DC (trap 9): a bookmark from another DC is worthless here.
    deploy.set_bookmark("delta.server", "CN=NTDS Settings,CN=DC2,CN=Servers,CN=Default-First-Site-Name#x")
    out = deploy.sync()
    assert out["exit"] == 0 and out["mode"] == "full", out
    assert deploy.bookmark()["delta.server"].startswith("CN=NTDS Settings,CN=DC1,")


def test_a_rule_on_another_attribute_matches_after_a_full_run_and_one_nobody_has_is_a_warning(
    small_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = small_ou
    conn = d.dc.connect()
    try:
        # A title too: the base mapping's rule on title would otherwise warn that nobody has one.
        changes = {"departmentNumber": [(MODIFY_ADD, ["42"])], "title": [(MODIFY_ADD, ["Clerk"])]}
        assert conn.modify(f"CN=frank,{d.ou}", changes), conn.result
    finally:
        conn.unbind()
    deploy = deployment(tmp_path, d, monkeypatch)
    first = deploy.sync()
    assert first["warnings"] == [] and deploy.users()[d.sam("frank")]["roles"] == [], first
    assert deploy.sync()["mode"] == "delta"
    rule = '[[rules]]\nattribute = "{}"\nequals = "42"\nroles = ["engineering"]\n'
    # departmentNumber is read only once a rule names it; the misspelled name is requested too
    # (a DC ignores attribute names its schema does not know) and found on nobody.
    deploy.add_to_mapping(rule.format("departmentNumber") + rule.format("departmentNumbr"))
    out = deploy.sync()
    assert out["exit"] == 0 and out["mode"] == "full" and out["errors"] == [], out
    assert deploy.users()[d.sam("frank")]["roles"] == ["engineering"]
    (warning,) = out["warnings"]
    assert "'departmentnumbr'" in warning and "rule 7" in warning
    assert deploy.history()[0]["warnings"] == [warning]
