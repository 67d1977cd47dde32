"""LdapSource's handling of answers a healthy test server never gives (limits, broken ranges)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import SourceConfig
from bridge.directory.ldap_source import LdapSource
from bridge.directory.normalize import DirectorySettings
from bridge.errors import ConfigError, SourceUnavailable

PAGED = "1.2.840.113556.1.4.319"


class FakeConnection:
    """Answers searches from a script: each call pops (entries, result code, cookie)."""

    def __init__(self, script: list[tuple[list[dict[str, Any]], int, bytes | None]]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.response: list[dict[str, Any]] | None = None
        self.result: dict[str, Any] = {}

    def search(self, base: str, filter_: str, scope: str, **kwargs: Any) -> bool:
        self.calls.append({"base": base, "filter": filter_, **kwargs})
        entries, code, cookie = self.script.pop(0)
        self.response = entries
        controls = {PAGED: {"value": {"cookie": cookie}}} if cookie is not None else {}
        self.result = {
            "result": code,
            "description": {0: "success", 4: "sizeLimitExceeded"}.get(code, "x"),
            "message": "",
            "controls": controls,
        }
        return code == 0


def entry(dn: str, **attributes: list[Any]) -> dict[str, Any]:
    return {"type": "searchResEntry", "dn": dn, "raw_attributes": attributes}


def source(flavor: str = "ad", **settings: Any) -> LdapSource:
    cfg = SourceConfig(
        name="dir",
        tenant="t",
        kind="ldap",
        origin="bridge.toml",
        settings={"url": "ldap://127.0.0.1:389", "page_size": 2, "flavor": flavor, **settings},
    )
    return LdapSource(cfg, DirectorySettings(flavor=flavor, user_base="dc=x", group_base="dc=x"))  # type: ignore[arg-type]


def test_a_page_ending_in_size_limit_exceeded_aborts_the_read() -> None:
    src = source()
    src._conn = FakeConnection([([entry("cn=a,dc=x")], 0, b"more"), ([entry("cn=b,dc=x")], 4, None)])  # type: ignore[assignment]
    with pytest.raises(SourceUnavailable, match="sizeLimitExceeded"):
        list(src._paged("dc=x", "(objectClass=*)", ["cn"]))


def test_paging_is_critical_and_references_are_skipped() -> None:
    src = source()
    ref = {"type": "searchResRef", "uri": ["ldap://elsewhere/dc=x"]}
    fake = FakeConnection([([entry("cn=a,dc=x"), ref], 0, b"c1"), ([entry("cn=b,dc=x")], 0, b"")])
    src._conn = fake  # type: ignore[assignment]
    assert [dn for dn, _ in src._paged("dc=x", "(objectClass=*)", ["cn"])] == ["cn=a,dc=x", "cn=b,dc=x"]
    assert all(c["paged_criticality"] for c in fake.calls) and fake.calls[1]["paged_cookie"] == b"c1"


def test_ranged_member_values_are_fetched_until_the_star() -> None:
    src = source(range_size=2)
    fake = FakeConnection(
        [
            ([entry("cn=g,dc=x", **{"member;range=2-3": [b"cn=3", b"cn=4"]})], 0, None),
            ([entry("cn=g,dc=x", **{"member;range=4-*": [b"cn=5"]})], 0, None),
        ]
    )
    src._conn = fake  # type: ignore[assignment]
    out = src._complete_ranges("cn=g,dc=x", {"member;range=0-1": [b"cn=1", b"cn=2"], "cn": [b"g"]})
    assert out["member"] == [b"cn=1", b"cn=2", b"cn=3", b"cn=4", b"cn=5"] and "member;range=0-1" not in out
    assert [c["base"] for c in fake.calls] == ["cn=g,dc=x", "cn=g,dc=x"]


def test_a_range_that_does_not_continue_where_the_last_ended_aborts() -> None:
    src = source(range_size=2)
    src._conn = FakeConnection([([entry("cn=g,dc=x", **{"member;range=5-*": [b"cn=9"]})], 0, None)])  # type: ignore[assignment]
    with pytest.raises(SourceUnavailable, match="unexpected range"):
        src._complete_ranges("cn=g,dc=x", {"member;range=0-1": [b"cn=1", b"cn=2"]})


def test_page_size_above_1000_and_bad_filters_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="page_size"):
        source(page_size=5000)
    with pytest.raises(ConfigError, match="user_filter"):
        source(user_filter="(&(objectClass=user)")


def _mapping(*rules: dict[str, Any], user_type: dict[str, Any] | None = None) -> Any:
    from bridge.core.mapping import parse_mapping

    return parse_mapping({"roles": {"r": {}}, "rules": list(rules), "user_type": user_type or {}}, "m.toml")


def _made(mapping: Any, flavor: str = "openldap", **settings: Any) -> LdapSource:
    from bridge.engine.sources import make_source

    cfg = SourceConfig(
        name="dir",
        tenant="t",
        kind="ldap",
        origin="bridge.toml",
        settings={
            "url": "ldap://127.0.0.1:389",
            "flavor": flavor,
            "user_base": "dc=x",
            "group_base": "dc=x",
            **settings,
        },
    )
    made = make_source(cfg, mapping)
    assert isinstance(made, LdapSource)
    return made


def test_the_source_requests_every_attribute_the_mapping_reads() -> None:
    mapping = _mapping(
        {"attribute": "departmentNumber", "equals": "42", "roles": ["r"]},
        {
            "attribute": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter",
            "equals": "9",
            "roles": ["r"],
        },
        {"attribute": "name.givenName", "equals": "Al", "roles": ["r"]},  # a SCIM path no directory has
        {"attribute": "division", "equals": "North", "roles": ["r"]},
        user_type={"external_attribute": {"attribute": "employeeType", "equals": "contractor"}},
    )
    src = _made(mapping, attributes={"businessCategory": "division"})
    requested = {name.lower() for name in src.user_attributes}
    assert {"departmentnumber", "costcenter", "businesscategory", "employeetype"} <= requested
    assert "name.givenname" not in requested and "division" not in requested
    # What is read is kept for the rules, under the mapping's name.
    assert {"departmentnumber", "costcenter", "businesscategory"} <= set(src.settings.keep_attributes)
    assert src.settings.attribute_map["businesscategory"] == "division"
    ad = _made(mapping, flavor="ad")
    assert "departmentnumber" in {name.lower() for name in ad.user_attributes}


def test_a_mapping_reading_another_attribute_changes_the_delta_scope() -> None:
    on_title = _mapping({"attribute": "title", "equals": "Boss", "roles": ["r"]})
    on_number = _mapping({"attribute": "DepartmentNumber", "equals": "42", "roles": ["r"]})
    # title is read anyway: the same scope as a mapping without attribute rules.
    assert _made(on_title).scope == _made(_mapping()).scope == _made(None).scope
    assert _made(on_number).scope != _made(on_title).scope
    assert (
        _made(on_number).scope
        == _made(_mapping({"attribute": "departmentnumber", "equals": "1", "roles": ["r"]})).scope
    )


def test_delta_max_people_below_1_is_a_config_error() -> None:
    import tomllib

    from bridge.config import parse_config

    def config(value: int) -> dict[str, object]:
        return tomllib.loads(
            '[[tenants]]\nname = "t"\n[[sources]]\nname = "dir"\ntenant = "t"\nkind = "ldap"\n'
            'url = "ldap://localhost"\nuser_base = "ou=people,dc=x"\ngroup_base = "ou=groups,dc=x"\n'
            f"delta_max_people = {value}\n"
        )

    assert parse_config(config(50), Path("b.toml")).source("dir").get("delta_max_people") == 50
    with pytest.raises(ConfigError, match=r"sources\[1\]\.delta_max_people"):
        parse_config(config(0), Path("b.toml"))
