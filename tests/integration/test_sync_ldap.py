"""The live LDAP source against a real slapd (memberof + ppolicy overlays), end to end through the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from bridge.directory.ldap_source import LdapSource
from tests.fixtures.slapd import Slapd
from tests.ldap_deployment import LdapDeployment

PEOPLE = "ou=people,dc=example,dc=org"
GROUPS = "ou=groups,dc=example,dc=org"


def person(uid: str, **extra: str) -> str:
    lines = [
        f"dn: uid={uid},{PEOPLE}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {uid.title()} Tester",
        "sn: Tester",
        f"givenName: {uid.title()}",
        f"mail: {uid}@example.org",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


DIRECTORY = "\n\n".join(
    [
        person("alice"),
        person("bob"),
        person("carol"),
        person("dave"),
        person("erin", title="Boss"),
        person("frank"),
        f"dn: uid=pat,{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: pat\ncn: Pat\nsn: Posix\n"
        f"uidNumber: 1001\ngidNumber: 1001\nhomeDirectory: /home/pat\nmail: pat@example.org\nuserPassword: Secret-pat1",
        "dn: ou=former,dc=example,dc=org\nobjectClass: organizationalUnit\nou: former",
        f"dn: ou=sales,{PEOPLE}\nobjectClass: organizationalUnit\nou: sales",
        "dn: ou=empty,dc=example,dc=org\nobjectClass: organizationalUnit\nou: empty",
        f"dn: cn=admins,{GROUPS}\nobjectClass: groupOfNames\ncn: admins\nmember: uid=alice,{PEOPLE}",
        f"dn: cn=backend,{GROUPS}\nobjectClass: groupOfNames\ncn: backend\nmember: uid=bob,{PEOPLE}",
        f"dn: cn=engineering,{GROUPS}\nobjectClass: groupOfNames\ncn: engineering\nmember: cn=backend,{GROUPS}",
        f"dn: cn=staff,{GROUPS}\nobjectClass: groupOfUniqueNames\ncn: staff\n"
        f"uniqueMember: uid=carol,{PEOPLE}\nuniqueMember: uid=dave,{PEOPLE}",
        f"dn: cn=ops,{GROUPS}\nobjectClass: posixGroup\ncn: ops\ngidNumber: 2000\nmemberUid: pat",
    ]
)


@pytest.fixture
def directory(slapd: Slapd) -> Slapd:
    slapd.add_ldif(DIRECTORY + "\n")
    return slapd


@pytest.fixture
def deploy(tmp_path: Path, db_url: str, directory: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapDeployment:
    return LdapDeployment(
        tmp_path,
        db_url,
        flavor="openldap",
        url=directory.url,
        bind_dn=directory.bind_dn,
        password=directory.password,
        user_base=PEOPLE,
        group_base=GROUPS,
        monkeypatch=monkeypatch,
    )


@pytest.fixture
def deploy_sqlite(tmp_path: Path, directory: Slapd, monkeypatch: pytest.MonkeyPatch) -> LdapDeployment:
    return LdapDeployment(
        tmp_path,
        f"sqlite:///{tmp_path / 'bridge.db'}",
        flavor="openldap",
        url=directory.url,
        bind_dn=directory.bind_dn,
        password=directory.password,
        user_base=PEOPLE,
        group_base=GROUPS,
        monkeypatch=monkeypatch,
    )


def test_first_sync_grants_roles_from_direct_nested_unique_and_posix_groups(deploy: LdapDeployment) -> None:
    out = deploy.sync()
    assert out["exit"] == 0 and not out["aborted"], out
    assert out["mode"] == "full" and out["created"] == 7
    users = deploy.users()
    assert users["alice"]["roles"] == ["administration"] and users["alice"]["status"] == "pending"
    # bob is in backend, which is a member of engineering.
    assert users["bob"]["roles"] == ["engineering"] and {"backend", "engineering"} <= set(users["bob"]["groups"])
    assert users["carol"]["roles"] == ["staff"] and users["dave"]["roles"] == ["staff"]  # groupOfUniqueNames
    assert users["pat"]["roles"] == ["engineering"]  # posixGroup memberUid holds the login, not a DN
    assert users["erin"]["roles"] == ["boss"]  # attribute rule
    assert users["frank"]["status"] == "no_access" and users["frank"]["roles"] == []
    # The first full run leaves a bookmark for deltas: syncprov's contextCSN, read before the entries.
    assert deploy.bookmark()["delta.mark"].startswith("csn:")
    again = deploy.sync("--full")
    assert again["unchanged"] == 7 and again["created"] == again["updated"] == again["rolesChanged"] == 0


def test_rename_and_ou_move_keep_the_same_account(deploy_sqlite: LdapDeployment, directory: Slapd) -> None:
    deploy_sqlite.sync()
    ids = deploy_sqlite.account_ids()
    conn = directory.connect()
    try:
        assert conn.modify_dn(f"uid=alice,{PEOPLE}", "uid=alice.smith"), conn.result
        assert conn.modify_dn(f"uid=bob,{PEOPLE}", "uid=bob", new_superior=f"ou=sales,{PEOPLE}"), conn.result
    finally:
        conn.unbind()
    out = deploy_sqlite.sync("--full")
    assert out["exit"] == 0 and out["created"] == 0 and out["archived"] == 0, out
    after = deploy_sqlite.account_ids()
    assert after["alice.smith"] == ids["alice"] and "alice" not in after
    assert after["bob"] == ids["bob"]
    users = deploy_sqlite.users()
    # The groups follow the DN change (memberof refint), so the roles stay.
    assert users["alice.smith"]["roles"] == ["administration"] and users["bob"]["roles"] == ["engineering"]


def test_person_moved_out_of_scope_is_archived_and_comes_back_as_no_access_then_pending(
    deploy: LdapDeployment, directory: Slapd
) -> None:
    deploy.sync()
    conn = directory.connect()
    try:
        assert conn.modify_dn(f"uid=alice,{PEOPLE}", "uid=alice", new_superior="ou=former,dc=example,dc=org")
        out = deploy.sync("--full")
        assert out["archived"] == 1, out
        gone = deploy.users()["alice"]
        assert gone["status"] == "archived" and gone["roles"] == []
        # memberof-refint rewrote the admins member value on both moves, so the group follows her.
        assert conn.modify_dn("uid=alice,ou=former,dc=example,dc=org", "uid=alice", new_superior=PEOPLE)
    finally:
        conn.unbind()
    out = deploy.sync("--full")
    assert out["reactivated"] == 1, out
    back = deploy.users()["alice"]
    assert back["status"] == "pending" and back["roles"] == ["administration"]
    history = json_history(deploy, "alice")
    assert [h["action"] for h in history][-3:] == ["archive", "reactivate", "grant_roles"]
    assert history[-2]["to"] == "no_access" and history[-1]["to"] == "pending"


def json_history(deploy: LdapDeployment, user: str) -> list[dict[str, Any]]:
    import json

    return json.loads(deploy.bridge("users", "show", user, "--json").output)["history"]


def test_locked_by_ppolicy_is_suspended_and_resumes_when_unlocked(
    deploy_sqlite: LdapDeployment, directory: Slapd
) -> None:
    deploy_sqlite.sync()
    # Five bad passwords: the ppolicy overlay sets pwdAccountLockedTime (trap 11).
    for _ in range(5):
        bad = subprocess.run(
            ["ldapwhoami", "-x", "-H", directory.url, "-D", f"uid=pat,{PEOPLE}", "-w", "wrong"],
            capture_output=True,
            check=False,
        )
        assert bad.returncode != 0
    out = deploy_sqlite.sync("--full")
    assert out["suspended"] == 1, out
    assert deploy_sqlite.users()["pat"]["status"] == "suspended"
    directory.modify(f"uid=pat,{PEOPLE}", {"pwdAccountLockedTime": [(MODIFY_DELETE, [])]})
    out = deploy_sqlite.sync("--full")
    assert deploy_sqlite.users()["pat"]["status"] == "pending", out


def test_directory_stopped_mid_run_aborts_and_archives_nobody(
    deploy: LdapDeployment, directory: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy.sync()
    before = deploy.counts()
    deploy.write_config(page_size=2)
    original = LdapSource._paged

    def stop_after_first_page(self: LdapSource, *args: Any) -> Iterator[Any]:
        for n, entry in enumerate(original(self, *args)):
            yield entry
            if n == 1:
                directory.stop()  # the next page request meets a dead server

    with monkeypatch.context() as patch:
        patch.setattr(LdapSource, "_paged", stop_after_first_page)
        out = deploy.sync("--full")
    assert out["exit"] == 1 and out["aborted"] and "source unavailable" in out["reason"], out
    assert deploy.counts() == before and deploy.archived() == 0
    # A directory that is down from the start aborts the same way.
    out = deploy.sync("--full")
    assert out["exit"] == 1 and "no directory server could be used" in out["reason"]
    assert deploy.counts() == before
    assert [h["outcome"] for h in deploy.history()][:2] == ["aborted", "aborted"]


@pytest.mark.parametrize(
    ("user_base", "reason"),
    [("ou=empty,dc=example,dc=org", "returned no users"), ("ou=nowhere,dc=example,dc=org", "noSuchObject (32)")],
)
def test_wrong_base_dn_aborts_and_archives_nobody(deploy_sqlite: LdapDeployment, user_base: str, reason: str) -> None:
    deploy_sqlite.sync()
    before = deploy_sqlite.counts()
    deploy_sqlite.write_config(user_base=user_base)
    out = deploy_sqlite.sync("--full")
    assert out["exit"] == 1 and out["aborted"] and reason.lower() in out["reason"].lower(), out
    # An empty read is held for review (one `plan_held` audit event); an unreadable base is not.
    held = 1 if out["held"] else 0
    assert held == (reason == "returned no users")
    assert deploy_sqlite.counts() == {**before, "audit_events": before["audit_events"] + held}
    assert deploy_sqlite.archived() == 0


def test_delta_picks_up_an_attribute_change_and_a_membership_change(deploy: LdapDeployment, directory: Slapd) -> None:
    first = deploy.sync()
    assert first["mode"] == "full"  # no bookmark yet
    directory.modify(f"uid=frank,{PEOPLE}", {"mail": [(MODIFY_REPLACE, ["frank.new@example.org"])]})
    directory.modify(f"cn=admins,{GROUPS}", {"member": [(MODIFY_ADD, [f"uid=carol,{PEOPLE}"])]})
    out = deploy.sync()
    assert out["exit"] == 0 and out["mode"] == "delta", out
    assert out["updated"] == 1 and out["rolesChanged"] == 1 and out["created"] == 0, out
    users = deploy.users()
    assert users["frank"]["email"] == "frank.new@example.org"
    assert users["carol"]["roles"] == ["administration", "staff"]
    assert deploy.last_run_mode() == "delta"
    # Nothing changed since: the delta reads nothing new and writes nothing.
    before = deploy.counts()
    quiet = deploy.sync()
    assert quiet["mode"] == "delta" and quiet["created"] == quiet["updated"] == quiet["rolesChanged"] == 0
    assert deploy.counts()["audit_events"] == before["audit_events"]
    # The full run agrees with what the deltas did.
    full = deploy.sync("--full")
    assert full["mode"] == "full" and full["unchanged"] == 7, full


def test_delta_follows_nesting_and_never_archives(deploy_sqlite: LdapDeployment, directory: Slapd) -> None:
    deploy_sqlite.sync()
    # staff joins engineering: carol and dave gain engineering through nesting, though neither
    # their entries nor staff changed.
    directory.modify(f"cn=engineering,{GROUPS}", {"member": [(MODIFY_ADD, [f"cn=staff,{GROUPS}"])]})
    conn = directory.connect()
    try:
        assert conn.delete(f"uid=frank,{PEOPLE}")
    finally:
        conn.unbind()
    out = deploy_sqlite.sync()
    assert out["mode"] == "delta" and out["rolesChanged"] == 2 and out["archived"] == 0, out
    users = deploy_sqlite.users()
    assert users["carol"]["roles"] == ["engineering", "staff"] and users["dave"]["roles"] == ["engineering", "staff"]
    assert users["frank"]["status"] == "no_access"  # deletes wait for the full run
    # A new person in a changed group is created by the delta with the group's role.
    directory.add_ldif(person("gina") + "\n")
    directory.modify(f"cn=backend,{GROUPS}", {"member": [(MODIFY_ADD, [f"uid=gina,{PEOPLE}"])]})
    out = deploy_sqlite.sync()
    assert out["created"] == 1 and deploy_sqlite.users()["gina"]["roles"] == ["engineering"], out
    out = deploy_sqlite.sync("--full")
    assert out["archived"] == 1 and deploy_sqlite.users()["frank"]["status"] == "archived"


def test_changed_scope_makes_the_next_delta_a_full_run(deploy_sqlite: LdapDeployment) -> None:
    deploy_sqlite.sync()
    deploy_sqlite.write_config(user_filter="(objectClass=inetOrgPerson)")
    out = deploy_sqlite.sync()
    assert out["exit"] == 0 and out["mode"] == "full", out
    assert deploy_sqlite.sync()["mode"] == "delta"


def test_a_delta_with_more_changed_people_than_delta_max_people_runs_full(
    deploy_sqlite: LdapDeployment, directory: Slapd
) -> None:
    # One entry a page: the count of changed people stops (and abandons its search) mid-way.
    deploy_sqlite.write_config(delta_max_people=2, page_size=1)
    deploy_sqlite.sync()
    for uid in ("alice", "bob"):
        directory.modify(f"uid={uid},{PEOPLE}", {"mail": [(MODIFY_REPLACE, [f"{uid}.new@example.org"])]})
    out = deploy_sqlite.sync()
    assert out["exit"] == 0 and out["mode"] == "delta" and out["updated"] == 2, out
    for uid in ("carol", "dave", "erin", "pat"):
        directory.modify(f"uid={uid},{PEOPLE}", {"mail": [(MODIFY_REPLACE, [f"{uid}.new@example.org"])]})
    conn = directory.connect()
    try:
        assert conn.delete(f"uid=frank,{PEOPLE}")
    finally:
        conn.unbind()
    # Four changed people: a full run on the same connection, which archives the leaver (a
    # delta never does) and takes the four changes.
    out = deploy_sqlite.sync()
    assert out["exit"] == 0 and out["mode"] == "full", out
    assert out["updated"] == 4 and out["archived"] == 1, out
    users = deploy_sqlite.users()
    assert users["pat"]["email"] == "pat.new@example.org" and users["frank"]["status"] == "archived"
    assert deploy_sqlite.last_run_mode() == "full"
    assert deploy_sqlite.sync()["mode"] == "delta"


def test_failover_to_the_next_url(deploy_sqlite: LdapDeployment, directory: Slapd) -> None:
    from tests.fixtures.slapd import free_port

    deploy_sqlite.write_config(url=None, urls=[f"ldap://127.0.0.1:{free_port()}", directory.url], timeout=2)
    out = deploy_sqlite.sync()
    assert out["exit"] == 0 and out["created"] == 7, out


def test_dry_run_writes_no_bookmark(deploy_sqlite: LdapDeployment) -> None:
    result = deploy_sqlite.bridge("sync", "--dry-run")
    assert result.exit_code == 0 and "alice" in result.output
    assert deploy_sqlite.bookmark() == {} and deploy_sqlite.counts()["accounts"] == 0


DEPARTMENT_RULE = '[[rules]]\nattribute = "departmentNumber"\nequals = "42"\nroles = ["engineering"]\n'


def test_a_rule_on_an_attribute_outside_the_usual_ones_grants_its_role(
    deploy: LdapDeployment, directory: Slapd
) -> None:
    directory.modify(f"uid=frank,{PEOPLE}", {"departmentNumber": [(MODIFY_ADD, ["42"])]})
    deploy.add_to_mapping(DEPARTMENT_RULE)
    out = deploy.sync()
    assert out["exit"] == 0 and out["errors"] == [], out
    assert deploy.users()["frank"]["roles"] == ["engineering"]
    assert out["warnings"] == []


def test_a_mapping_that_reads_another_attribute_makes_the_next_delta_a_full_run(
    deploy_sqlite: LdapDeployment, directory: Slapd
) -> None:
    directory.modify(f"uid=frank,{PEOPLE}", {"departmentNumber": [(MODIFY_ADD, ["42"])]})
    deploy_sqlite.sync()
    assert deploy_sqlite.sync()["mode"] == "delta"
    # frank's entry does not change: only a full read can see that the new rule applies to him.
    deploy_sqlite.add_to_mapping(DEPARTMENT_RULE)
    out = deploy_sqlite.sync()
    assert out["exit"] == 0 and out["mode"] == "full" and out["rolesChanged"] == 1, out
    assert deploy_sqlite.users()["frank"]["roles"] == ["engineering"]
    assert deploy_sqlite.sync()["mode"] == "delta"


def test_a_rule_on_an_attribute_nobody_has_is_a_warning_in_the_result_and_the_history(
    deploy_sqlite: LdapDeployment,
) -> None:
    deploy_sqlite.add_to_mapping(DEPARTMENT_RULE.replace("departmentNumber", "departmentNumbr"))
    out = deploy_sqlite.sync()
    assert out["exit"] == 0 and not out["aborted"] and out["errors"] == [] and out["created"] == 7, out
    (warning,) = out["warnings"]
    assert warning.startswith(
        "no person read has the attribute 'departmentnumbr', so rule 6: attribute departmentnumbr = \"42\" "
        "matches nobody."
    )
    assert deploy_sqlite.history()[0]["warnings"] == [warning]
    text = deploy_sqlite.bridge("sync", "--full")
    assert text.exit_code == 0 and f"  warning: {warning}" in text.output
    table = deploy_sqlite.bridge("sync", "--history").output.splitlines()
    assert "WARNINGS" in table[0]
    # A delta reads a few changed people, so it cannot tell: it says nothing.
    assert deploy_sqlite.sync()["warnings"] == []
