"""The LDIF reader: RFC 2849 records as slapcat, ldapsearch -LLL and ldifde write them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bridge.directory.ldif import LdifEntry, LdifError, parse_ldif, read_ldif_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "directory.ldif"


def parse(text: str) -> list[LdifEntry]:
    return list(parse_ldif(text, "test.ldif"))


def error_of(text: str) -> LdifError:
    with pytest.raises(LdifError) as caught:
        parse(text)
    return caught.value


def test_records_are_separated_by_blank_lines_and_names_lower_cased() -> None:
    entries = parse("dn: cn=a,dc=x\nCN: a\nobjectClass: top\nobjectClass: person\n\n\n\ndn: cn=b,dc=x\ncn: b\n")

    assert [e.dn for e in entries] == ["cn=a,dc=x", "cn=b,dc=x"]
    assert entries[0].attributes == {"cn": ["a"], "objectclass": ["top", "person"]}
    assert [e.line for e in entries] == [1, 8]


def test_version_line_is_read_and_other_versions_refused() -> None:
    assert [e.dn for e in parse("version: 1\ndn: cn=a\ncn: a\n")] == ["cn=a"]
    assert [e.dn for e in parse("version: 1\n\ndn: cn=a\ncn: a\n")] == ["cn=a"]
    assert str(error_of("version: 2\n\ndn: cn=a\n")) == (
        "test.ldif:1: unsupported LDIF version '2' (only version 1 exists)"
    )


def test_comments_are_ignored_even_when_folded_or_inside_a_record() -> None:
    entries = parse("# header\n# folded\n  comment\n\ndn: cn=a\n# inside\ncn: a\n")

    assert entries == [LdifEntry(dn="cn=a", attributes={"cn": ["a"]}, line=5)]


def test_folded_lines_are_joined_without_their_leading_space() -> None:
    (entry,) = parse("dn: cn=a,\n dc=x\ndescription: one\n  two\n  three\n")

    assert entry.dn == "cn=a,dc=x"
    assert entry.attributes["description"] == ["one two three"]


def test_base64_value_is_decoded_as_utf8_text() -> None:
    (entry,) = parse("dn: uid=zoe\ncn:: Wm/DqyBMZWbDqHZyZQ==\n")

    assert entry.attributes["cn"] == ["Zoë Lefèvre"]


def test_base64_dn_is_decoded() -> None:
    encoded = base64.b64encode("cn=Zoë,dc=x".encode()).decode()

    (entry,) = parse(f"dn:: {encoded}\ncn: Zoë\n")

    assert entry.dn == "cn=Zoë,dc=x"


def test_base64_value_that_is_not_utf8_stays_bytes() -> None:
    (entry,) = parse("dn: cn=a\nphotoish:: /9j/4AAQ\n")

    assert entry.attributes["photoish"] == [bytes.fromhex("ffd8ffe00010")]


def test_object_guid_stays_bytes_even_when_its_bytes_happen_to_be_utf8() -> None:
    raw = bytes(range(0x30, 0x40))  # "0123456789:;<=>?" would decode as text
    encoded = base64.b64encode(raw).decode()

    (entry,) = parse(f"dn: cn=a\nobjectGUID:: {encoded}\nuserCertificate;binary:: {encoded}\n")

    assert entry.attributes["objectguid"] == [raw]
    assert entry.attributes["usercertificate;binary"] == [raw]


def test_bad_base64_is_an_error_naming_the_line() -> None:
    error = error_of("dn: cn=a\ncn: a\n\ndn: cn=b\ncn: b\nsn:: not*base64\n")

    assert error.line == 6
    assert str(error) == "test.ldif:6: invalid base64 value for 'sn'"


def test_changetype_modify_is_refused() -> None:
    error = error_of("dn: cn=a\ncn: a\n\ndn: cn=a\nchangetype: modify\nreplace: cn\ncn: b\n-\n")

    assert error.line == 5
    assert "changetype: modify" in error.message


@pytest.mark.parametrize("kind", ["delete", "modrdn", "moddn"])
def test_other_change_records_are_refused(kind: str) -> None:
    assert f"changetype: {kind}" in error_of(f"dn: cn=a\nchangetype: {kind}\n").message


def test_changetype_add_records_are_read_like_content_records() -> None:
    # ldifde writes `changetype: add` on every record of an export.
    (entry,) = parse("dn: CN=Ann,DC=corp\nchangetype: add\ncn: Ann\n")

    assert entry.attributes == {"cn": ["Ann"]}


def test_file_url_values_are_refused() -> None:
    error = error_of("dn: cn=a\njpegPhoto:< file:///etc/shadow\n")

    assert error.line == 2
    assert "refused" in error.message


def test_crlf_line_endings_are_read_like_lf() -> None:
    text = "version: 1\r\n\r\ndn: cn=a,dc=x\r\ncn: a\r\ndescription: fol\r\n ded\r\n\r\ndn: cn=b,dc=x\r\ncn: b\r\n"

    entries = parse(text)

    assert [(e.dn, e.line) for e in entries] == [("cn=a,dc=x", 3), ("cn=b,dc=x", 8)]
    assert entries[0].attributes["description"] == ["folded"]


def test_attribute_options_are_kept_in_the_name() -> None:
    (entry,) = parse("dn: CN=G\nmember;range=0-1499: CN=A\nmember;range=1500-*: CN=B\n")

    assert entry.attributes == {"member;range=0-1499": ["CN=A"], "member;range=1500-*": ["CN=B"]}


def test_empty_values_are_empty_strings() -> None:
    (entry,) = parse("dn: cn=a\ndescription:\nsn::\n")

    assert entry.attributes == {"description": [""], "sn": [""]}


def test_record_not_starting_with_dn_is_refused() -> None:
    assert str(error_of("dn: cn=a\n\ncn: b\n")) == "test.ldif:3: a record must start with 'dn:', found 'cn:'"


def test_line_without_a_colon_is_an_error_naming_the_line() -> None:
    error = error_of("dn: cn=a\ncn: a\n\ndn: cn=b\nthis is not ldif\n")

    assert error.line == 5


def test_continuation_line_with_nothing_to_continue_is_refused() -> None:
    assert error_of("dn: cn=a\n\n continued\n").line == 3


def test_controls_are_refused() -> None:
    assert error_of("dn: cn=a\ncontrol: 1.2.840.113556.1.4.805 true\nchangetype: delete\n").line == 2


def test_the_line_by_line_and_the_fast_path_read_records_alike() -> None:
    # The first record always takes the line-by-line path, later ones the regex path.
    record = (
        "dn: uid=a,ou=people,dc=x\nobjectClass: inetOrgPerson\nCN:  spaced \ndescription: a\n  b\n"
        "sn:: TGVmw6h2cmU=\nobjectGUID:: AAECAwQFBgcICQoLDA0ODw==\nmember;range=0-*: x=y\nempty:\nurlish: http://x:1\n"
    )

    first, second = parse(record + "\n" + record)

    assert first.attributes == second.attributes
    assert first.attributes["cn"] == ["spaced "]
    assert first.attributes["urlish"] == ["http://x:1"]


def test_error_string_is_origin_line_and_message() -> None:
    error = LdifError("dir.ldif", 12, "bad")

    assert str(error) == "dir.ldif:12: bad"
    assert error.exit_code == 2


def test_missing_file_is_an_ldif_error_at_line_zero(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ldif"

    with pytest.raises(LdifError) as caught:
        read_ldif_file(missing)

    assert caught.value.origin == str(missing)
    assert caught.value.line == 0


def test_file_that_is_not_utf8_is_an_ldif_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ldif"
    path.write_bytes("dn: cn=a\ncn: a\n\ndn: cn=b\nsn: Lefèvre\n".encode("latin-1"))

    with pytest.raises(LdifError) as caught:
        read_ldif_file(path)

    assert caught.value.line == 5
    assert "UTF-8" in caught.value.message


def test_utf16_export_with_bom_is_read(tmp_path: Path) -> None:
    # `ldifde -u` writes UTF-16 with a byte-order mark.
    path = tmp_path / "ldifde.ldf"
    path.write_bytes("dn: CN=Zoë,DC=corp\r\nchangetype: add\r\ncn: Zoë\r\n".encode("utf-16"))

    assert [e.dn for e in read_ldif_file(path)] == ["CN=Zoë,DC=corp"]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.ldif"
    path.write_bytes(b"\xef\xbb\xbfversion: 1\n\ndn: cn=a\ncn: a\n")

    assert [e.dn for e in read_ldif_file(path)] == ["cn=a"]


def test_example_directory_is_valid_ldif() -> None:
    entries = read_ldif_file(EXAMPLE)

    assert len(entries) > 60
    assert all("entryuuid" in e.attributes for e in entries)
