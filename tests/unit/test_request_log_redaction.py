"""What the SCIM request log keeps of a body (bridge.scim.requestlog): no password, token or
secret value, whatever shape the client gave it."""

from __future__ import annotations

import json

from bridge.scim.requestlog import MAX_BODY, redact_body, stored_path


def kept(body: object) -> str:
    text, cut = redact_body(json.dumps(body).encode())
    assert text is not None and not cut
    return text


def test_a_password_anywhere_is_replaced() -> None:
    text = kept({"userName": "ana", "password": "p1", "x": [{"deep": {"Password": "p2"}}]})
    assert "p1" not in text and "p2" not in text and json.loads(text)["password"] == "[redacted]"
    assert "ana" in text


def test_names_with_secret_or_token_are_replaced_in_any_case() -> None:
    text = kept({"clientSecret": "s1", "API_TOKEN": "s2", "urn:ietf:params:scim:schemas:core:2.0:User:password": "s3"})
    assert not any(s in text for s in ("s1", "s2", "s3"))


def test_a_patch_whose_path_names_a_password_loses_its_value_whatever_its_shape() -> None:
    text = kept(
        {
            "Operations": [
                {"op": "replace", "path": "password", "value": "v1"},
                {"op": "Replace", "PATH": "urn:ietf:params:scim:schemas:core:2.0:User:password", "Value": ["v2"]},
                {"op": "replace", "value": {"password": "v3", "displayName": "Ana"}},
                {"op": "replace", "path": "displayName", "value": "Ana B"},
            ]
        }
    )
    assert not any(v in text for v in ("v1", "v2", "v3")) and "Ana B" in text


def test_an_escaped_name_is_read_as_the_client_meant_it() -> None:
    text, _ = redact_body(b'{"pass\\u0077ord": "hidden-1"}')
    assert text is not None and "hidden-1" not in text


def test_tokens_inside_values_are_masked() -> None:
    text = kept({"note": "Authorization: Bearer abcdefghijklmnop", "other": "brg_0123456789abcdefghij"})
    assert "abcdefghijklmnop" not in text and "0123456789abcdefghij" not in text


def test_a_body_that_is_not_json_is_not_kept() -> None:
    assert redact_body(b'{"password": "half') == ("(not JSON: 18 bytes, not kept)", False)
    assert redact_body(b"") == (None, False)


def test_a_long_body_is_cut_and_marked() -> None:
    text, cut = redact_body(json.dumps({"displayName": "x" * (2 * MAX_BODY)}).encode())
    assert cut and text is not None and len(text) == MAX_BODY


def test_a_query_naming_a_secret_is_not_kept() -> None:
    assert stored_path("/scim/v2/Users", 'filter=password eq "x"') == "/scim/v2/Users?[redacted]"
    assert stored_path("/scim/v2/Users", "count=5") == "/scim/v2/Users?count=5"


def test_a_name_spelt_in_another_alphabets_case_is_still_a_secret() -> None:
    text, _ = redact_body('{"api\u212aey": "k1", "to\u212aen": "k2", "nom": "Élodie"}'.encode())
    assert text is not None and "k2" not in text and "Élodie" in text
