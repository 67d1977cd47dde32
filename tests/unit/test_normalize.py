"""Normalising directory entries (OpenLDAP and AD) into the core's Snapshot."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.core.model import expand_groups
from bridge.directory.ldif import LdifError
from bridge.directory.ldif_source import LdifSource
from bridge.directory.normalize import (
    DirectorySettings,
    RawEntry,
    build_snapshot,
    classify,
    is_within,
    normalize_dn,
)
from bridge.directory.values import decode_anchor, decode_object_guid, decode_sid

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "directory.ldif"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OPENLDAP = DirectorySettings("openldap", "ou=people,dc=example,dc=org", "ou=groups,dc=example,dc=org")
AD = DirectorySettings("ad", "OU=Staff,DC=corp,DC=example", "OU=Groups,DC=corp,DC=example")
DOMAIN_SID = "S-1-5-21-2127521184-1604012920-1887927527"


def anchor(n: int) -> str:
    return str(uuid.UUID(int=n))


def person(uid: str, n: int, *, base: str = "ou=people,dc=example,dc=org", **extra: Sequence[str | bytes]) -> RawEntry:
    attributes: dict[str, Sequence[str | bytes]] = {
        "objectclass": ["inetOrgPerson"],
        "uid": [uid],
        "cn": [uid.title()],
        "sn": [uid.title()],
        "entryuuid": [anchor(n)],
    }
    attributes.update(extra)
    return (f"uid={uid},{base}", attributes)


def group(cn: str, n: int, **extra: Sequence[str | bytes]) -> RawEntry:
    attributes: dict[str, Sequence[str | bytes]] = {
        "objectclass": ["groupOfNames"],
        "cn": [cn],
        "entryuuid": [anchor(n)],
    }
    attributes.update(extra)
    return (f"cn={cn},ou=groups,dc=example,dc=org", attributes)


def sid_bytes(sid: str) -> bytes:
    parts = [int(p) for p in sid.split("-")[1:]]
    revision, authority, subs = parts[0], parts[1], parts[2:]
    return bytes([revision, len(subs)]) + authority.to_bytes(6, "big") + b"".join(s.to_bytes(4, "little") for s in subs)


def ad_user(name: str, n: int, **extra: Sequence[str | bytes]) -> RawEntry:
    attributes: dict[str, Sequence[str | bytes]] = {
        "objectclass": ["top", "person", "organizationalPerson", "user"],
        "samaccountname": [name],
        "cn": [name.title()],
        "objectguid": [uuid.UUID(int=n).bytes_le],
        "useraccountcontrol": ["512"],
        "accountexpires": ["9223372036854775807"],
        "samaccounttype": ["805306368"],
    }
    attributes.update(extra)
    return (f"CN={name.title()},OU=Staff,DC=corp,DC=example", attributes)


def ad_group(name: str, n: int, **extra: Sequence[str | bytes]) -> RawEntry:
    attributes: dict[str, Sequence[str | bytes]] = {
        "objectclass": ["top", "group"],
        "cn": [name],
        "objectguid": [uuid.UUID(int=n).bytes_le],
    }
    attributes.update(extra)
    return (f"CN={name},OU=Groups,DC=corp,DC=example", attributes)


def filetime(moment: datetime) -> str:
    return str((moment - datetime(1601, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 10)


def only_user(entries: list[RawEntry], settings: DirectorySettings = AD):
    snapshot, report = build_snapshot(entries, settings, NOW)
    assert report.errors == []
    (user,) = snapshot.users.values()
    return user


# --- DNs -------------------------------------------------------------------------------------


def test_dns_compare_without_case_or_spaces_around_separators() -> None:
    assert normalize_dn("CN=Ann Lee , OU=People,DC=Example, DC=org") == "cn=ann lee,ou=people,dc=example,dc=org"
    assert normalize_dn("cn = x,dc=y") == "cn=x,dc=y"


def test_dn_escapes_are_kept_in_one_canonical_spelling() -> None:
    canonical = "cn=doe\\, john,ou=people"

    assert normalize_dn("CN=Doe\\, John,OU=People") == canonical
    assert normalize_dn("cn=doe\\2C john,ou=people") == canonical
    assert normalize_dn('cn="Doe, John",ou=people') == canonical
    assert normalize_dn("uid=z\\C3\\ABe,dc=x") == "uid=zëe,dc=x"
    assert normalize_dn("cn=\\ lead\\ ,dc=x") == "cn=\\ lead\\ ,dc=x"


def test_multi_valued_rdns_compare_in_any_order() -> None:
    assert normalize_dn("sn=B + CN=A,dc=x") == normalize_dn("cn=a+sn=b,dc=x")


def test_text_that_is_not_a_dn_is_refused() -> None:
    with pytest.raises(ValueError):
        normalize_dn("just a name")


def test_an_escaped_comma_is_not_a_level_of_the_tree() -> None:
    base = normalize_dn("ou=people,dc=example,dc=org")

    assert is_within(normalize_dn("uid=a,ou=people,dc=example,dc=org"), base)
    assert is_within(base, base)
    assert not is_within(normalize_dn("cn=x\\,ou=people,dc=example,dc=org"), base)
    assert not is_within(normalize_dn("uid=a,ou=xpeople,dc=example,dc=org"), base)


# --- Anchors ---------------------------------------------------------------------------------


def test_object_guid_bytes_are_read_mixed_endian() -> None:
    # The first three fields are little-endian: bytes [3][2][1][0]-[5][4]-[7][6]-[8][9]-[10..15].
    raw = bytes.fromhex("33221100554477668899aabbccddeeff")

    assert decode_object_guid(raw) == "00112233-4455-6677-8899-aabbccddeeff"


def test_object_guid_in_ldap3_brace_form_or_as_a_uuid_string_is_accepted() -> None:
    assert decode_object_guid("{00112233-4455-6677-8899-AABBCCDDEEFF}") == "00112233-4455-6677-8899-aabbccddeeff"
    assert decode_object_guid("00112233-4455-6677-8899-aabbccddeeff") == "00112233-4455-6677-8899-aabbccddeeff"


def test_object_guid_decoded_as_text_by_accident_is_read_as_its_bytes() -> None:
    raw = bytes(range(0x30, 0x40))

    assert decode_object_guid(raw.decode("utf-8")) == decode_object_guid(raw)


def test_binary_sid_is_decoded_with_its_rid_last() -> None:
    raw = bytes.fromhex("010500000000000515000000a065cf7e784b9b5fe77c877001020000")

    assert decode_sid(raw) == f"{DOMAIN_SID}-513"
    assert decode_sid(f"{DOMAIN_SID}-513".lower()) == f"{DOMAIN_SID}-513"


def test_ad_user_is_anchored_on_its_object_guid() -> None:
    user = only_user([ad_user("ann", 7)])

    assert user.anchor == anchor(7)
    assert user.user_name == "ann"


def test_openldap_user_is_anchored_on_its_entry_uuid_lower_cased() -> None:
    entry = person("ann", 1, entryuuid=["{" + anchor(0xABC).upper() + "}"])

    user = only_user([entry], OPENLDAP)

    assert user.anchor == anchor(0xABC)


def test_entry_without_anchor_is_reported_and_left_out_but_the_snapshot_stays_complete() -> None:
    nameless = person("bob", 2)
    del nameless[1]["entryuuid"]  # type: ignore[attr-defined]

    snapshot, report = build_snapshot([person("ann", 1), nameless], OPENLDAP, NOW)

    assert [u.user_name for u in snapshot.users.values()] == ["ann"]
    assert snapshot.complete
    assert len(report.errors) == 1
    assert "uid=bob,ou=people,dc=example,dc=org" in report.errors[0]


def test_entries_sharing_an_anchor_are_both_left_out() -> None:
    snapshot, report = build_snapshot([person("ann", 1), person("bob", 1), person("cid", 3)], OPENLDAP, NOW)

    assert [u.user_name for u in snapshot.users.values()] == ["cid"]
    assert len(report.errors) == 1
    assert "uid=ann" in report.errors[0] and "uid=bob" in report.errors[0]


def test_user_without_user_name_is_reported_and_left_out() -> None:
    entry = person("ann", 1)
    del entry[1]["uid"]  # type: ignore[attr-defined]

    snapshot, report = build_snapshot([entry], OPENLDAP, NOW)

    assert snapshot.users == {}
    assert "no uid" in report.errors[0]


def test_two_people_with_one_user_name_are_kept_with_a_warning() -> None:
    snapshot, report = build_snapshot(
        [person("ann", 1), ("uid=ann,ou=x,ou=people,dc=example,dc=org", person("ann", 2)[1])], OPENLDAP, NOW
    )

    assert len(snapshot.users) == 2
    assert "userName 'ann'" in report.warnings[0]


# --- Classification and scope ----------------------------------------------------------------


def test_ad_computer_accounts_are_not_people() -> None:
    computer = ad_user("ws01$", 9, objectclass=["top", "person", "organizationalPerson", "user", "computer"])

    assert classify(computer[1], "ad") == "other"
    snapshot, _ = build_snapshot([computer, ad_user("ann", 1)], AD, NOW)
    assert [u.user_name for u in snapshot.users.values()] == ["ann"]


def test_ad_trust_accounts_are_not_people() -> None:
    trust = ad_user("partner$", 9, samaccounttype=["805306370"], useraccountcontrol=["2080"])

    assert classify(trust[1], "ad") == "other"


def test_ad_contacts_are_not_people() -> None:
    assert classify({"objectclass": ["top", "person", "organizationalPerson", "contact"]}, "ad") == "other"


def test_openldap_object_classes_decide_people_and_groups() -> None:
    assert classify({"objectclass": ["top", "posixAccount", "shadowAccount"]}, "openldap") == "user"
    assert classify({"objectclass": ["groupOfUniqueNames"]}, "openldap") == "group"
    assert classify({"objectclass": [b"posixGroup"]}, "openldap") == "group"
    assert classify({"objectclass": ["organizationalUnit"]}, "openldap") == "other"


def test_user_outside_the_user_base_is_ignored() -> None:
    outside = person("svc", 2, base="ou=services,dc=example,dc=org")

    snapshot, report = build_snapshot([person("ann", 1), outside], OPENLDAP, NOW)

    assert [u.user_name for u in snapshot.users.values()] == ["ann"]
    assert report.out_of_scope == 1
    assert report.errors == []


def test_scope_ignores_case_and_spaces_in_dns() -> None:
    settings = DirectorySettings("openldap", "OU=People, DC=Example,DC=org", "ou=groups,dc=example,dc=org")

    snapshot, _ = build_snapshot([person("ann", 1)], settings, NOW)

    assert len(snapshot.users) == 1


# --- Disabled accounts -----------------------------------------------------------------------


@pytest.mark.parametrize(("uac", "active"), [("512", True), ("514", False), ("66048", True), ("66050", False)])
def test_user_account_control_disable_bit(uac: str, active: bool) -> None:
    assert only_user([ad_user("ann", 1, useraccountcontrol=[uac])]).active is active


def test_account_expires_zero_means_never() -> None:
    assert only_user([ad_user("ann", 1, accountexpires=["0"])]).active


def test_account_expires_max_value_means_never() -> None:
    assert only_user([ad_user("ann", 1, accountexpires=["9223372036854775807"])]).active


def test_account_expired_in_the_past_is_disabled() -> None:
    assert not only_user([ad_user("ann", 1, accountexpires=[filetime(NOW - timedelta(days=1))])]).active


def test_account_expiring_in_the_future_is_active() -> None:
    assert only_user([ad_user("ann", 1, accountexpires=[filetime(NOW + timedelta(days=1))])]).active


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError):
        build_snapshot([], AD, datetime(2025, 1, 1))


@pytest.mark.parametrize("locked_time", ["000001010000Z", "20250601113000Z"])
def test_ppolicy_locked_account_is_disabled(locked_time: str) -> None:
    # 000001010000Z is an administrator's lock; another time is an intruder lockout, also disabled.
    assert not only_user([person("ann", 1, pwdaccountlockedtime=[locked_time])], OPENLDAP).active


@pytest.mark.parametrize(("value", "active"), [("TRUE", False), ("true", False), ("FALSE", True)])
def test_ns_account_lock_is_compared_case_insensitively(value: str, active: bool) -> None:
    assert only_user([person("ann", 1, nsaccountlock=[value])], OPENLDAP).active is active


# --- User fields -----------------------------------------------------------------------------


def test_user_fields_come_from_the_usual_attributes() -> None:
    entry = person(
        "zoe",
        1,
        cn=["Zoë Lefèvre"],
        givenname=["Zoë"],
        sn=["Lefèvre"],
        mail=["zoe@example.org", "z@example.org"],
        ou=["Finance"],
        title=["Director"],
        preferredlanguage=["fr"],
        userpassword=["{SSHA}secret"],
    )

    user = only_user([entry], OPENLDAP)

    assert (user.user_name, user.email, user.given_name, user.family_name, user.display_name) == (
        "zoe",
        "zoe@example.org",
        "Zoë",
        "Lefèvre",
        "Zoë Lefèvre",
    )
    assert user.dn == "uid=zoe,ou=people,dc=example,dc=org"
    assert user.preferred_language == "fr"
    assert dict(user.attributes) == {"ou": ("Finance",), "title": ("Director",), "preferredlanguage": ("fr",)}


def test_display_name_is_preferred_over_cn() -> None:
    assert only_user([person("ann", 1, displayname=["Ann L."])], OPENLDAP).display_name == "Ann L."


def test_attribute_map_renames_attributes_for_the_mapping_rules() -> None:
    settings = DirectorySettings(
        "openldap",
        "ou=people,dc=example,dc=org",
        "ou=groups,dc=example,dc=org",
        attribute_map={"departmentNumber": "department"},
    )

    user = only_user([person("ann", 1, departmentnumber=["42"], ou=["Kitchen"])], settings)

    assert dict(user.attributes) == {"ou": ("Kitchen",), "department": ("42",)}


def test_user_name_and_anchor_attributes_can_be_chosen() -> None:
    settings = DirectorySettings(
        "ad",
        "OU=Staff,DC=corp,DC=example",
        "OU=Groups,DC=corp,DC=example",
        user_name_attribute="userPrincipalName",
        anchor_attribute="mS-DS-ConsistencyGuid",
    )
    entry = ad_user("ann", 1, userprincipalname=["ann@corp.example"])
    entry[1]["ms-ds-consistencyguid"] = [uuid.UUID(int=99).bytes_le]  # type: ignore[index]

    user = only_user([entry], settings)

    assert (user.user_name, user.anchor) == ("ann@corp.example", anchor(99))


def test_single_values_given_as_scalars_are_read_as_one_value() -> None:
    # ldap3 with a loaded schema returns single-valued attributes as scalars.
    entry = (
        "uid=ann,ou=people,dc=example,dc=org",
        {"objectclass": "inetOrgPerson", "uid": "ann", "entryuuid": anchor(1), "ou": "IT"},
    )

    user = only_user([entry], OPENLDAP)

    assert (user.user_name, dict(user.attributes)) == ("ann", {"ou": ("IT",)})


def test_bytes_values_are_decoded_as_utf8() -> None:
    entry = (
        "uid=ann,ou=people,dc=example,dc=org",
        {"objectclass": [b"inetOrgPerson"], "uid": [b"ann"], "entryuuid": [anchor(1).encode()], "cn": ["Zoë".encode()]},
    )

    user = only_user([entry], OPENLDAP)

    assert (user.user_name, user.display_name, user.anchor) == ("ann", "Zoë", anchor(1))


# --- Memberships -----------------------------------------------------------------------------


def test_member_dns_resolve_to_anchors_on_both_sides() -> None:
    entries = [
        person("ann", 1),
        person("bob", 2),
        group("staff", 10, member=["uid=ann,ou=people,dc=example,dc=org", "UID=Bob, OU=People,DC=Example,DC=Org"]),
    ]

    snapshot, report = build_snapshot(entries, OPENLDAP, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1), anchor(2))
    assert snapshot.groups[anchor(10)].name == "staff"
    assert snapshot.users[anchor(1)].groups == (anchor(10),)
    assert report.unresolved_references == 0


def test_members_that_are_not_in_the_snapshot_are_dropped() -> None:
    entries = [
        person("ann", 1),
        group("staff", 10, member=["cn=admin,dc=example,dc=org", "uid=ann,ou=people,dc=example,dc=org", ""]),
    ]

    snapshot, report = build_snapshot(entries, OPENLDAP, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)
    assert report.unresolved_references == 2


def test_unique_member_uid_suffix_is_stripped() -> None:
    entries = [
        person("ann", 1),
        group(
            "staff",
            10,
            objectclass=["groupOfUniqueNames"],
            uniquemember=["uid=ann,ou=people,dc=example,dc=org#'0101'B"],
        ),
    ]

    snapshot, _ = build_snapshot(entries, OPENLDAP, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)


def test_member_uid_values_resolve_through_user_names() -> None:
    entries = [
        person("ann", 1),
        person("bob", 2),
        group("devs", 10, objectclass=["posixGroup"], memberuid=["ann", "BOB", "ghost"]),
    ]

    snapshot, report = build_snapshot(entries, OPENLDAP, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1), anchor(2))
    assert report.unresolved_references == 1


def test_nested_groups_stay_group_anchors_among_members() -> None:
    entries = [
        person("ann", 1),
        group("admins", 10, member=["uid=ann,ou=people,dc=example,dc=org"]),
        group("managers", 11, member=["cn=admins,ou=groups,dc=example,dc=org"]),
    ]

    snapshot, _ = build_snapshot(entries, OPENLDAP, NOW)

    assert snapshot.groups[anchor(11)].members == (anchor(10),)
    assert snapshot.users[anchor(1)].groups == (anchor(10),)
    assert {g.name for g in expand_groups(snapshot)[anchor(1)]} == {"admins", "managers"}


def test_member_of_on_user_entries_alone_fills_the_groups() -> None:
    # Some exports fill only the user side; AD memberOf also works for groups nested in groups.
    entries = [
        ad_user("ann", 1, memberof=["CN=Sales,OU=Groups,DC=corp,DC=example", "CN=Elsewhere,DC=corp,DC=example"]),
        ad_group("Sales", 10, memberof=["cn=everyone,ou=groups,dc=corp,dc=example"]),
        ad_group("Everyone", 11),
    ]

    snapshot, report = build_snapshot(entries, AD, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)
    assert snapshot.groups[anchor(11)].members == (anchor(10),)
    assert snapshot.users[anchor(1)].groups == (anchor(10),)
    assert report.unresolved_references == 1


def test_stale_member_of_does_not_keep_someone_in_a_group_that_no_longer_lists_them() -> None:
    # The memberof overlay can lag behind the groups, notably on replicas.
    entries = [
        person("ann", 1),
        person("bob", 2, memberof=["cn=admins,ou=groups,dc=example,dc=org"]),
        group("admins", 10, member=["uid=ann,ou=people,dc=example,dc=org"]),
    ]

    snapshot, report = build_snapshot(entries, OPENLDAP, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)
    assert snapshot.users[anchor(2)].groups == ()
    assert "1 memberOf values" in report.warnings[0]


def test_ad_ranged_member_attributes_are_merged() -> None:
    entries = [
        ad_user("ann", 1),
        ad_user("bob", 2),
        ad_group(
            "Big",
            10,
            member=[],
            **{
                "member;range=0-0": ["CN=Ann,OU=Staff,DC=corp,DC=example"],
                "member;range=1-*": ["CN=Bob,OU=Staff,DC=corp,DC=example"],
            },
        ),
    ]

    snapshot, report = build_snapshot(entries, AD, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1), anchor(2))
    assert report.errors == []


def test_ad_member_list_without_its_last_range_is_reported_incomplete() -> None:
    entries = [
        ad_user("ann", 1),
        ad_group("Big", 10, **{"member;range=0-1499": ["CN=Ann,OU=Staff,DC=corp,DC=example"]}),
    ]

    snapshot, report = build_snapshot(entries, AD, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)
    assert "incomplete" in report.errors[0]


def test_primary_group_is_matched_through_primary_group_token() -> None:
    entries = [ad_user("ann", 1, primarygroupid=["1105"]), ad_group("Staff", 10, primarygrouptoken=["1105"])]

    snapshot, _ = build_snapshot(entries, AD, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)
    assert snapshot.users[anchor(1)].groups == (anchor(10),)


def test_primary_group_is_matched_through_the_rid_of_the_group_sid() -> None:
    entries = [
        ad_user("ann", 1, primarygroupid=["513"], objectsid=[sid_bytes(f"{DOMAIN_SID}-1104")]),
        ad_group("Domain Users", 10, objectsid=[sid_bytes(f"{DOMAIN_SID}-513")]),
        ad_group("Other Domain Users", 11, objectsid=[sid_bytes("S-1-5-21-1-2-3-513")]),
    ]

    snapshot, report = build_snapshot(entries, AD, NOW)

    assert snapshot.groups[anchor(10)].members == (anchor(1),)
    assert snapshot.groups[anchor(11)].members == ()
    assert report.warnings == []


def test_primary_group_rid_shared_by_two_domains_is_not_guessed() -> None:
    entries = [
        ad_user("ann", 1, primarygroupid=["513"]),
        ad_group("Domain Users", 10, objectsid=[sid_bytes(f"{DOMAIN_SID}-513")]),
        ad_group("Other Domain Users", 11, objectsid=[sid_bytes("S-1-5-21-1-2-3-513")]),
    ]

    snapshot, report = build_snapshot(entries, AD, NOW)

    assert snapshot.users[anchor(1)].groups == ()
    assert "matches 2 groups" in report.warnings[0]


def test_ad_group_without_cn_is_named_by_sam_account_name() -> None:
    entry = ad_group("x", 10, samaccountname=["Sales Team"])
    del entry[1]["cn"]  # type: ignore[attr-defined]

    snapshot, _ = build_snapshot([entry], AD, NOW)

    assert snapshot.groups[anchor(10)].name == "Sales Team"


def test_entries_can_come_from_a_generator() -> None:
    def entries():
        yield person("ann", 1)
        yield group("staff", 10, member=["uid=ann,ou=people,dc=example,dc=org"])

    snapshot, _ = build_snapshot(entries(), OPENLDAP, NOW)

    assert snapshot.users[anchor(1)].groups == (anchor(10),)


# --- The example directory -------------------------------------------------------------------


def example_snapshot():
    return LdifSource("example-ldif", EXAMPLE, OPENLDAP).fetch(NOW)


def test_example_directory_has_sixty_people_and_no_errors() -> None:
    snapshot, report = example_snapshot()

    assert report.errors == [] and report.warnings == []
    assert len(snapshot.users) == 60
    assert {g.name for g in snapshot.groups.values()} == {
        "admins",
        "front-desk",
        "finance",
        "pos-cashiers",
        "pos-managers",
        "it-contractors",
        "managers",
        "all-staff",
    }
    assert report.out_of_scope == 1  # the till's service account under ou=services


def test_example_directory_locked_person_is_inactive_and_non_ascii_names_survive() -> None:
    snapshot, _ = example_snapshot()
    by_name = {u.user_name: u for u in snapshot.users.values()}

    assert [u.user_name for u in snapshot.users.values() if not u.active] == ["jroussel"]
    assert by_name["zlefevre"].display_name == "Zoë Lefèvre"
    assert by_name["zlefevre"].attributes["ou"] == ("Finance",)


def test_example_directory_managers_include_the_nested_admins() -> None:
    snapshot, _ = example_snapshot()
    by_name = {u.user_name: u for u in snapshot.users.values()}
    groups = {g.name: g for g in snapshot.groups.values()}

    assert groups["admins"].anchor in groups["managers"].members
    effective = expand_groups(snapshot)
    assert {"admins", "managers", "all-staff"} <= {g.name for g in effective[by_name["agarnier"].anchor]}
    assert "managers" not in {g.name for g in effective[by_name["ygarcia"].anchor]}
    assert "all-staff" in {g.name for g in effective[by_name["ygarcia"].anchor]}  # through pos-cashiers


def test_example_directory_has_people_in_no_group() -> None:
    snapshot, _ = example_snapshot()
    effective = expand_groups(snapshot)

    loners = sorted(u.user_name for u in snapshot.users.values() if not effective[u.anchor])

    assert loners == ["ablanchard", "driviere", "zbrun"]


def test_ldif_source_with_an_unreadable_file_raises_ldif_error(tmp_path: Path) -> None:
    with pytest.raises(LdifError):
        LdifSource("x", tmp_path / "missing.ldif", OPENLDAP).fetch(NOW)


def test_settings_fill_flavor_defaults_and_lower_case_names() -> None:
    settings = DirectorySettings(
        "ad", "dc=corp", "dc=corp", email_attribute="userPrincipalName", keep_attributes=("Department",)
    )

    assert (settings.user_name_attribute, settings.anchor_attribute, settings.email_attribute) == (
        "samaccountname",
        "objectguid",
        "userprincipalname",
    )
    assert settings.keep_attributes == ("department",)
    with pytest.raises(ValueError):
        DirectorySettings("novell", "o=x", "o=x")  # type: ignore[arg-type]


def test_an_anchor_decodes_the_same_whoever_read_it() -> None:
    """The one decoder the normaliser and the LDAP source's primary-group read share (they used
    to disagree on these inputs, and the anchor is the key that must never change)."""
    guid = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    raw = guid.bytes_le
    # 16 GUID bytes that a reader handed over as text (they happen to be valid UTF-8)
    ascii_bytes = b"ABCDEFGHIJKLMNOP"
    assert decode_anchor(ascii_bytes.decode(), "objectguid", "ad") == str(uuid.UUID(bytes_le=ascii_bytes))
    assert decode_anchor(bytearray(raw), "objectguid", "ad") == str(guid)
    assert decode_anchor(raw, "ms-ds-consistencyguid", "ad") == str(guid)
    # a consistency GUID on an OpenLDAP flavour is an ordinary string anchor, not AD's layout
    assert decode_anchor("ABC-123", "ms-ds-consistencyguid", "openldap") == "abc-123"
    assert decode_anchor(str(guid).upper(), "entryuuid", "openldap") == str(guid)


def test_the_ldap_source_has_no_decoder_of_its_own() -> None:
    from bridge.directory import ldap_source, normalize

    assert ldap_source.decode_anchor is normalize.decode_anchor
    assert not hasattr(ldap_source, "_anchor_text") and not hasattr(ldap_source, "_strip_uid")


# --- logonHours (issue 19) ------------------------------------------------------------------


def test_ad_logon_hours_are_kept_as_hex_bytes_whatever_the_reader_gave() -> None:
    from bridge.core.login_hours import encode_logon_hours
    from bridge.directory.ldif import parse_ldif

    raw = encode_logon_hours([(day, 8, 17) for day in range(5)])
    user = only_user([ad_user("alice", 1, logonhours=[raw])])
    assert user.attributes["logonhours"] == (raw.hex(),)
    # All zeros ("never") is valid UTF-8: an LDIF reader must still hand over the bytes.
    text = (
        "dn: CN=Bob,OU=Staff,DC=corp,DC=example\nobjectClass: user\nsAMAccountName: bob\n"
        "objectGUID:: AAAAAAAAAAAAAAAAAAAAAg==\nlogonHours:: AAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    )
    ((dn, attributes),) = [(e.dn, e.attributes) for e in parse_ldif(text, "t.ldif")]
    assert attributes["logonhours"] == [bytes(21)]
    assert only_user([(dn, attributes)]).attributes["logonhours"] == ("00" * 21,)


def test_an_ad_logon_hours_of_the_wrong_length_is_a_warning_and_no_restriction() -> None:
    snapshot, report = build_snapshot([ad_user("alice", 1, logonhours=[b"\xff" * 20])], AD, NOW)
    (user,) = snapshot.users.values()
    assert "logonhours" not in user.attributes
    assert any("logonHours has 20 bytes" in w for w in report.warnings)


def test_openldap_entries_keep_no_logon_hours() -> None:
    user = only_user([person("alice", 1, logonhours=[b"\xff" * 21])], OPENLDAP)
    assert "logonhours" not in user.attributes
