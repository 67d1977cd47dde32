"""The CSV source (issue 19): encodings and delimiters of spreadsheet exports, the column map,
groups in one column, and bad rows reported with file and line (the read is then incomplete)."""

from __future__ import annotations

import csv
import io
import tomllib
from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.directory.csv_source import CsvError, CsvSettings, detect_delimiter, read_csv
from bridge.errors import ConfigError

HEADER = ["Matricule", "Nom", "Prénom", "Courriel", "Équipes", "Actif", "Fonction"]
ROWS = [
    ["1001", "Garnier", "Élodie", "elodie.garnier@example.org", "Direction;Accueil", "oui", "Directrice"],
    ["1002", "Lefèvre", "Théo", "theo.lefevre@example.org", "accueil", "Non", "Agent d'accueil"],
    ["1003", "Dupont", "Zoë", "zoe.dupont@example.org", "", "1", ""],
]
COLUMNS = {
    "anchor": "Matricule",
    "userName": "Courriel",
    "email": "Courriel",
    "givenName": "Prénom",
    "familyName": "Nom",
    "groups": "Équipes",
    "active": "Actif",
}


def write(path: Path, rows: list[list[str]], *, encoding: str = "utf-8", delimiter: str = ",") -> Path:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_every_encoding_and_delimiter_reads_the_same_people(tmp_path: Path, encoding: str, delimiter: str) -> None:
    path = write(tmp_path / "staff.csv", [HEADER, *ROWS], encoding=encoding, delimiter=delimiter)
    snapshot, report = read_csv(CsvSettings(path=path, columns=COLUMNS, encoding=encoding))
    assert report.errors == [] and snapshot.complete
    elodie, theo, zoe = (snapshot.users[a] for a in ("1001", "1002", "1003"))
    assert (elodie.user_name, elodie.given_name, elodie.family_name) == (
        "elodie.garnier@example.org",
        "Élodie",
        "Garnier",
    )
    assert elodie.display_name == "Élodie Garnier" and elodie.active and not theo.active and zoe.active
    # Groups in one column, split on the separator; one group whatever the case of its name.
    assert elodie.groups == ("csv:direction", "csv:accueil") and theo.groups == ("csv:accueil",) and zoe.groups == ()
    assert snapshot.groups["csv:accueil"].name == "Accueil"
    assert set(snapshot.groups["csv:accueil"].members) == {"1001", "1002"}
    # Every column is an attribute under its header name, lower-cased, for `attribute` rules.
    assert elodie.attributes["fonction"] == ("Directrice",) and "fonction" not in zoe.attributes


def test_the_delimiter_is_the_one_the_header_holds_most_of_outside_quotes() -> None:
    assert detect_delimiter("a;b;c") == ";"
    assert detect_delimiter('"Nom, prénom";Courriel;Actif') == ";"
    assert detect_delimiter("a\tb\tc") == "\t"
    assert detect_delimiter("alone") == ","


def test_bad_rows_are_reported_with_file_and_line_and_make_the_read_incomplete(tmp_path: Path) -> None:
    rows = [
        HEADER,
        ROWS[0],
        ["1002", "Lefèvre", "Théo"],  # line 3: too few fields
        ["", "Sans", "Matricule", "x@example.org", "", "oui", ""],  # line 4: no anchor
        ["1004", "Peut", "Être", "p@example.org", "", "peut-être", ""],  # line 5: neither yes nor no
        ["1001", "Encore", "Elle", "e2@example.org", "", "oui", ""],  # line 6: anchor seen before
        ["1006", "Autre", "Élodie", "ELODIE.garnier@example.org", "", "oui", ""],  # line 7: userName seen
        ROWS[2],
    ]
    path = write(tmp_path / "staff.csv", rows)
    snapshot, report = read_csv(CsvSettings(path=path, columns=COLUMNS))
    assert not snapshot.complete
    assert [e.split(": ", 1)[0] for e in report.errors] == [f"{path}:{n}" for n in (3, 4, 5, 6, 7)]
    assert "3 fields where the header has 7" in report.errors[0]
    assert "'peut-être': neither a yes nor a no" in report.errors[2]
    assert set(snapshot.users) == {"1001", "1003"}  # the good rows are read; the run still aborts


def test_a_file_bridge_cannot_use_is_one_error_naming_file_line_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "staff.csv"
    path.write_bytes("Matricule,Courriel\n1,a@example.org\n2,b\xe9@example.org\n".encode("cp1252"))
    with pytest.raises(CsvError, match=r"staff.csv:3: not utf-8 .*encoding = \"cp1252\""):
        read_csv(CsvSettings(path=path, columns={"anchor": "Matricule", "userName": "Courriel"}))
    with pytest.raises(CsvError, match=r"staff.csv:1: no column 'Mail' \(columns.email\)"):
        read_csv(
            CsvSettings(
                path=path, columns={"anchor": "Matricule", "userName": "Courriel", "email": "Mail"}, encoding="cp1252"
            )
        )
    with pytest.raises(CsvError, match="cannot read"):
        read_csv(CsvSettings(path=tmp_path / "missing.csv", columns=COLUMNS))


def _config(source: str) -> object:
    text = (
        '[database]\nurl = "sqlite:///x.db"\n[[tenants]]\nname = "t"\n'
        f'[[sources]]\nname = "staff"\ntenant = "t"\nkind = "csv"\npath = "staff.csv"\n{source}'
    )
    return parse_config(tomllib.loads(text), Path("bridge.toml"))


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ('columns = { userName = "Courriel" }\n', "sources[1].columns.anchor"),
        ('columns = { anchor = "M", userName = "C", mail = "C" }\n', "sources[1].columns.mail"),
        ('encoding = "latin-9"\ncolumns = { anchor = "M", userName = "C" }\n', "sources[1].encoding"),
        ('delimiter = "|"\ncolumns = { anchor = "M", userName = "C" }\n', "sources[1].delimiter"),
    ],
)
def test_the_config_names_the_bad_key(keys: str, where: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(keys)
    assert str(refused.value).startswith(f"bridge.toml: {where}: ")


def test_a_csv_source_needs_no_ldap_bases() -> None:
    config = _config('delimiter = "\\t"\ncolumns = { anchor = "M", userName = "C" }\n')
    assert config.sources["staff"].get("delimiter") == "\t"  # type: ignore[attr-defined]
