from pathlib import Path

import pytest

from bridge.core.mapping import decide_roles, load_mapping, names_group, parse_mapping, unseen_attributes
from bridge.core.model import GroupRef, SourceUser
from bridge.errors import ConfigError

MAPPING = {
    "roles": {
        "administration": {"title": "Administration", "max_holders": 2},
        "front_desk": {"title": "Front desk"},
        "point_of_sale": {"title": "Point of sale"},
        "financial_reports": {"title": "Financial reports"},
        "external_technician": {"title": "Technicien externe", "external_allowed": True},
        "viewer": {"title": "Viewer", "billable": False, "external_allowed": True},
    },
    "user_type": {"external_groups": ["cn=Contractors,ou=groups,dc=example,dc=org"]},
    "rules": [
        {"group": "cn=admins,ou=groups,dc=example,dc=org", "roles": ["administration"]},
        {"group_name": "Front Desk", "roles": ["front_desk", "viewer"]},
        {"group_pattern": "^pos-", "roles": ["point_of_sale"]},
        {"attribute": "department", "equals": "Finance", "roles": ["financial_reports"]},
        {"scim_role": "Administrator", "roles": ["administration"]},
        {"group_name": "contractors", "roles": ["external_technician", "front_desk"]},
    ],
}

ADMINS = GroupRef("g1", "admins", "CN=Admins, OU=Groups, DC=example, DC=org")
FRONT = GroupRef("g2", "front desk", "cn=front-desk,ou=groups,dc=example,dc=org")
POS = GroupRef("g3", "POS-cashiers", "cn=pos-cashiers,ou=groups,dc=example,dc=org")
CONTRACTORS = GroupRef("g4", "contractors", "cn=contractors,ou=groups,dc=example,dc=org")


def user(**kw: object) -> SourceUser:
    return SourceUser(anchor="u1", user_name="alice", **kw)  # type: ignore[arg-type]


@pytest.fixture
def mapping():  # type: ignore[no-untyped-def]
    return parse_mapping(MAPPING, "mappings/test.toml")


def test_group_dn_rule_matches_case_and_spacing_insensitively(mapping) -> None:  # type: ignore[no-untyped-def]
    assert set(decide_roles(user(), (ADMINS,), mapping).granted) == {"administration"}


def test_group_name_and_pattern_rules(mapping) -> None:  # type: ignore[no-untyped-def]
    decision = decide_roles(user(), (FRONT, POS), mapping)
    assert set(decision.granted) == {"front_desk", "viewer", "point_of_sale"}


def test_attribute_rule_is_case_insensitive_on_the_value(mapping) -> None:  # type: ignore[no-untyped-def]
    decision = decide_roles(user(attributes={"department": ("finance",)}), (), mapping)
    assert set(decision.granted) == {"financial_reports"}


def test_scim_path_attribute_names_match_plain_names(mapping) -> None:  # type: ignore[no-untyped-def]
    data = dict(MAPPING)
    data["rules"] = [
        {
            "attribute": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "equals": "Finance",
            "roles": ["financial_reports"],
        }
    ]
    decision = decide_roles(user(attributes={"department": ("Finance",)}), (), parse_mapping(data, "x"))
    assert set(decision.granted) == {"financial_reports"}


def test_scim_role_rule(mapping) -> None:  # type: ignore[no-untyped-def]
    assert set(decide_roles(user(scim_roles=("administrator",)), (), mapping).granted) == {"administration"}


def test_person_matching_no_rule_gets_no_role(mapping) -> None:  # type: ignore[no-untyped-def]
    decision = decide_roles(user(attributes={"department": ("Kitchen",)}), (), mapping)
    assert decision.granted == {} and decision.user_type == "internal"


def test_first_matching_rule_in_file_order_is_credited(mapping) -> None:  # type: ignore[no-untyped-def]
    decision = decide_roles(user(scim_roles=("Administrator",)), (ADMINS,), mapping)
    assert decision.granted["administration"].startswith("rule 1:")


def test_external_user_keeps_only_roles_allowed_for_externals(mapping) -> None:  # type: ignore[no-untyped-def]
    decision = decide_roles(user(), (CONTRACTORS, FRONT), mapping)
    assert decision.user_type == "external"
    assert set(decision.granted) == {"external_technician", "viewer"}
    assert decision.denied == {"front_desk": "external_not_allowed"}


def test_external_attribute_decides_user_type() -> None:
    data = dict(MAPPING)
    data["user_type"] = {"external_attribute": {"attribute": "employeeType", "equals": ["contractor", "guest"]}}
    decision = decide_roles(user(attributes={"employeetype": ("Contractor",)}), (ADMINS,), parse_mapping(data, "x"))
    assert decision.user_type == "external"
    assert decision.denied == {"administration": "external_not_allowed"}


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"roles": {"a": {}}, "rules": [{"group": "cn=x", "roles": ["missing"]}]}, "rules[1].roles", "not defined"),
        ({"roles": {"a": {"colour": "red"}}}, "roles.a.colour", "unknown key"),
        (
            {"roles": {"a": {}}, "rules": [{"group": "cn=x", "group_name": "x", "roles": ["a"]}]},
            "rules[1]",
            "exactly one",
        ),
        ({"roles": {"a": {}}, "rules": [{"group_pattern": "([", "roles": ["a"]}]}, "rules[1].group_pattern", "regular"),
        ({"roles": {"a": {"max_holders": True}}}, "roles.a.max_holders", "boolean"),
        ({"roles": {"a": {}}, "rules": [{"attribute": "ou", "roles": ["a"]}]}, "rules[1].equals", "missing"),
        ({"roles": {"a": {}}, "colour": 1}, "colour", "unknown key"),
        ({"roles": {}}, "roles", "no roles"),
    ],
)
def test_bad_mapping_names_file_and_key(data: dict, key: str, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        parse_mapping(data, "mappings/bad.toml")
    assert str(info.value).startswith(f"mappings/bad.toml: {key}: ")
    assert message in str(info.value)


def test_malformed_toml_mapping_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[roles.a\ntitle = 'x'\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_mapping(path)


def test_bundled_example_mapping_loads() -> None:
    mapping = load_mapping(Path(__file__).parents[2] / "mappings" / "example.toml")
    assert "administration" in mapping.roles
    assert mapping.roles["external_technician"].external_allowed


def _with_rules(*rules: dict, user_type: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    return parse_mapping(
        {**MAPPING, "rules": [*MAPPING["rules"], *rules], "user_type": user_type or {}},  # type: ignore[dict-item]
        "m.toml",
    )


def test_attribute_names_are_what_the_rules_and_user_type_read_lower_cased_once() -> None:
    mapping = _with_rules(
        {"attribute": "departmentNumber", "equals": "42", "roles": ["viewer"]},
        {"attribute": "Department", "equals": "Sales", "roles": ["viewer"]},
        user_type={"external_attribute": {"attribute": "employeeType", "equals": "contractor"}},
    )
    assert mapping.attribute_names() == ("department", "departmentnumber", "employeetype")


def test_unseen_attributes_names_each_rule_that_matches_nobody() -> None:
    mapping = _with_rules(
        {"attribute": "departmentNumber", "equals": "42", "roles": ["viewer"]},
        {"attribute": "departmentnumber", "equals": "43", "roles": ["front_desk"]},
        user_type={"external_attribute": {"attribute": "employeeType", "equals": "contractor"}},
    )
    people = [
        user(attributes={"department": ("Finance",)}),
        SourceUser(anchor="u2", user_name="bob", attributes={"employeetype": ("employee",)}),
    ]
    (gap,) = unseen_attributes(mapping, people)
    assert gap.name == "departmentnumber" and len(gap.used_by) == 2
    assert gap.describe().startswith(
        "no person read has the attribute 'departmentnumber', so rule 7: attribute departmentnumber "
        '= "42"; rule 8: attribute departmentnumber = "43" match nobody.'
    )
    assert "ACL" in gap.describe()
    # Someone has each attribute: nothing to say. An empty read says nothing either.
    assert unseen_attributes(mapping, [*people, user(attributes={"departmentnumber": ("42",)})]) == []
    assert unseen_attributes(mapping, []) == []
    hidden = unseen_attributes(mapping, [people[0]])
    assert [g.name for g in hidden] == ["departmentnumber", "employeetype"]
    assert hidden[1].used_by == ("[user_type] external_attribute",)


def test_mapping_fingerprint_follows_what_plans_depend_on_not_the_file() -> None:
    from bridge.core.mapping import mapping_fingerprint

    base = {"roles": {"a": {"title": "A", "max_holders": 2}}, "rules": [{"group_name": "x", "roles": ["a"]}]}
    first = mapping_fingerprint(parse_mapping(base, "one.toml"), seat_limit=5)
    # Another file with the same content (or other comments): the same fingerprint.
    assert mapping_fingerprint(parse_mapping(base, "elsewhere/two.toml"), seat_limit=5) == first
    renamed = {**base, "rules": [{"group_name": "Front Desk", "roles": ["a"]}]}
    fewer = {**base, "roles": {"a": {"title": "A", "max_holders": 1}}}
    pattern = {**base, "rules": [{"group_pattern": "^x", "roles": ["a"]}]}
    others = {
        mapping_fingerprint(parse_mapping(renamed, "one.toml"), seat_limit=5),
        mapping_fingerprint(parse_mapping(fewer, "one.toml"), seat_limit=5),
        mapping_fingerprint(parse_mapping(pattern, "one.toml"), seat_limit=5),
        mapping_fingerprint(parse_mapping(base, "one.toml"), seat_limit=6),
    }
    assert first not in others and len(others) == 4


def test_names_group_is_every_group_that_can_change_a_plan(mapping) -> None:  # type: ignore[no-untyped-def]
    # By DN, by name, by pattern, and as an external group; what it names and no more.
    assert all(names_group(mapping, g) for g in (ADMINS, FRONT, POS, CONTRACTORS))
    external = GroupRef("g5", "vendors", "CN=Contractors,OU=Groups,DC=example,DC=org")
    assert names_group(mapping, external)
    assert not names_group(mapping, GroupRef("g6", "plain team", "cn=plain,ou=groups,dc=example,dc=org"))
    assert not names_group(mapping, GroupRef("g7", "the pos- team"))  # ^pos- is anchored
    # A group it does not name changes nobody's decision.
    plain = GroupRef("g6", "plain team")
    assert decide_roles(user(), (plain,), mapping) == decide_roles(user(), (), mapping)


def test_names_group_counts_login_hours_entries() -> None:
    data = {
        "roles": {"user": {}},
        "login_hours": [{"group_name": "night shift", "hours": "22:00-06:00", "time_zone": "UTC"}],
    }
    mapping = parse_mapping(data, "mappings/t.toml")
    assert names_group(mapping, GroupRef("g1", "Night Shift"))
    assert not names_group(mapping, GroupRef("g2", "day shift"))
