"""The filter transpiler, without a database: what SQL each filter shape becomes."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from bridge.scim.errors import ScimError
from bridge.scim.filter import to_sql
from bridge.scim.filter_syntax import parse


def sql(filter_text: str, resource_type: str = "User", dialect: object = None) -> str:
    compiled = to_sql(resource_type, filter_text, 7).compile(
        dialect=dialect or sqlite.dialect(), compile_kwargs={"literal_binds": True}
    )
    return " ".join(str(compiled).split())


def test_username_compares_the_folded_column_without_upper_so_the_index_serves_it() -> None:
    text = sql('userName eq "Alice@Example.ORG"')
    assert "identities.name_norm = 'alice@example.org'" in text
    assert "upper" not in text.lower() and "lower(" not in text


def test_escaped_quotes_in_strings_are_understood() -> None:
    assert parse('displayName eq "Sales \\"EU\\""').expr.comp_value.value == 'Sales "EU"'
    assert "= 'sales \"eu\"'" in sql('displayName eq "Sales \\"EU\\""', "Group")


def test_and_binds_tighter_than_or() -> None:
    text = sql('userName eq "a" or userName eq "b" and title pr')
    assert text.index(" OR ") < text.index(" AND JSON_EXTRACT")


def test_value_path_filters_become_one_tenant_scoped_semi_join_on_the_emails_table() -> None:
    text = sql('emails[type eq "work" and value co "@X"]')
    assert text.count("identities.id IN (SELECT scim_emails.identity_id") == 1
    assert "scim_emails.tenant_id = 7" in text
    assert "scim_emails.type_norm = 'work'" in text and "scim_emails.value_norm LIKE '%@x%'" in text


def test_entra_value_path_with_sub_attribute() -> None:
    text = sql('emails[type eq "work"].value eq "U@X.org"')
    assert text.count("IN (SELECT") == 1 and "scim_emails.value_norm = 'u@x.org'" in text


def test_like_wildcards_in_values_are_escaped() -> None:
    assert "LIKE 'a\\_b%' ESCAPE '\\'" in sql('userName sw "a_b"')


def test_member_and_id_filter_for_groups() -> None:
    text = sql('id eq "g1" and members[value eq "u1"]', "Group")
    assert "identities.anchor = 'g1'" in text and "memberships.member_anchor = 'u1'" in text


def test_last_modified_compares_datetimes() -> None:
    assert "identities.updated_at > '2011-05-13 04:42:34" in sql('meta.lastModified gt "2011-05-13T04:42:34Z"')


def test_extension_attributes_use_json_paths_on_both_dialects() -> None:
    urn = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert "JSON_EXTRACT(identities.resource" in sql(f'{urn}:department eq "x"')
    assert "#>>" in sql(f'{urn}:department eq "x"', dialect=postgresql.dialect())


def test_not_is_null_safe() -> None:
    # NOT (NULL = x) would drop rows without a title; each comparison first requires presence.
    assert "NOT (lower(JSON_EXTRACT(identities.resource, '$.\"title\"')) IS NOT NULL AND" in sql('not (title eq "x")')


@pytest.mark.parametrize(
    "bad",
    [
        "userName eq",
        'nosuch eq "x"',
        "active gt true",
        "userName eq 12",
        'emails[nosuch eq "x"]',
        'members[value eq "x"]',
        "externalId eq jyoung",
        'userName eq "x" and',
        "(" * 20 + "userName pr" + ")" * 20,
    ],
)
def test_invalid_filters_are_400_invalid_filter(bad: str) -> None:
    with pytest.raises(ScimError) as caught:
        to_sql("User", bad, 7)
    assert caught.value.status == 400 and caught.value.scim_type == "invalidFilter"


def _tree(node: object) -> object:
    if isinstance(node, list):
        return [_tree(n) for n in node]
    fields = getattr(node, "_fields", None)
    if fields is None:
        return (type(node).__name__, node)
    return (type(node).__name__, {f: _tree(getattr(node, f)) for f in fields})


@pytest.mark.parametrize(
    "text",
    [
        'value eq "2819c223-7f76-453a-919d-413861904646"',
        'value EQ "x"',
        'userName eq "Ann O\'Neil@example.org"',
        'displayName eq ""',
        'value eq "é ü 中"',
        # not the fast path's: the parser answers (or refuses) them as before
        'value eq "a\\"b"',
        'value  eq "x"',
        'not eq "x"',
        'value eq "a\tb"',
        "value eq x",
        'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x"',
    ],
)
def test_the_single_equality_shortcut_builds_the_parsers_tree(text: str) -> None:
    from bridge.scim.filter_syntax import FilterLexer, FilterParser, Quoted

    try:
        expected = _tree(FilterParser().parse(FilterLexer().tokenize(text)))
    except Exception:
        with pytest.raises(ScimError):
            parse.__wrapped__(text)
        return
    got = parse.__wrapped__(text)  # uncached
    assert _tree(got) == expected
    value = got.expr.comp_value.value if hasattr(got.expr, "comp_value") else None
    assert value is None or isinstance(value, Quoted) == isinstance(
        FilterParser().parse(FilterLexer().tokenize(text)).expr.comp_value.value, Quoted
    )


def test_the_shortcut_takes_the_plain_equalities_only() -> None:
    from bridge.scim.filter_syntax import _SIMPLE_EQ

    assert _SIMPLE_EQ.fullmatch('value eq "2819c223-7f76-453a-919d-413861904646"')
    assert _SIMPLE_EQ.fullmatch('userName eq "Ann O\'Neil@example.org"')
    for text in ('value eq "a\\"b"', 'value  eq "x"', 'value eq "a\tb"', "value eq x", 'a.b eq "x"'):
        assert _SIMPLE_EQ.fullmatch(text) is None
