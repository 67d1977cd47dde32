"""A `kind = "csv"` source end to end (issue 19): the shipped staff export (cp1252, `;`, French
headers) synced through the same engine as LDIF, on SQLite and PostgreSQL; a malformed line
aborts the run with the file and line, and archives nobody; dry run and explain work as for LDIF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bridge.cli import main
from tests.conftest import ROOT

SOURCE = """
[[sources]]
name = "payroll"
tenant = "example"
kind = "csv"
path = "staff.csv"
encoding = "cp1252"
[sources.columns]
anchor = "Matricule"
userName = "Courriel"
email = "Courriel"
givenName = "Prénom"
familyName = "Nom"
groups = "Équipes"
active = "Actif"
"""


class CsvDeployment:
    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.csv = root / "staff.csv"
        shutil.copy(ROOT / "examples" / "staff.csv", self.csv)
        shutil.copy(ROOT / "mappings" / "staff.toml", root / "staff.toml")
        self.config = root / "bridge.toml"
        self.config.write_text(
            f'[database]\nurl = "{db_url}"\n\n[[tenants]]\nname = "example"\nmappings = "staff.toml"\n' + SOURCE,
            encoding="utf-8",
        )

    def bridge(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args], catch_exceptions=False)

    def sync(self, *args: str) -> dict[str, Any]:
        result = self.bridge("sync", "--json", *args)
        return {**json.loads(result.output.strip().splitlines()[-1]), "exit": result.exit_code}

    def users(self) -> dict[str, dict[str, Any]]:
        return {u["userName"]: u for u in json.loads(self.bridge("users", "list", "--json").output)}

    def append(self, line: str) -> None:
        with self.csv.open("ab") as f:
            f.write(line.encode("cp1252") + b"\r\n")


@pytest.fixture
def staff(tmp_path: Path, db_url: str) -> CsvDeployment:
    d = CsvDeployment(tmp_path, db_url)
    assert d.bridge("db", "upgrade").exit_code == 0
    return d


def test_the_staff_export_is_synced_with_roles_from_groups_and_columns(staff: CsvDeployment) -> None:
    dry = staff.sync("--dry-run")
    assert dry["exit"] == 0 and dry["created"] == 6 and staff.users() == {}
    ran = staff.sync()
    assert ran["exit"] == 0 and ran["created"] == 6 and ran["errors"] == []
    users = staff.users()
    elodie = users["elodie.garnier@example.org"]
    assert elodie["status"] == "pending"
    assert set(elodie["roles"]) == {"administration", "front_desk", "schedule_viewer"}
    assert set(users["aissatou.ndiaye@example.org"]["roles"]) == {"front_desk", "point_of_sale", "schedule_viewer"}
    assert "financial_reports" in users["chloe.moreau@example.org"]["roles"]  # attribute Service
    contractor = users["ines.rousseau@prestataire.example"]
    assert contractor["userType"] == "external" and contractor["roles"] == ["external_technician"]
    assert users["noel.dubois@example.org"]["status"] in ("suspended", "no_access")  # Actif = non
    explained = json.loads(staff.bridge("explain", "chloe.moreau@example.org", "--json").output)
    matched = [r["rule"] for r in explained["rules"] if r["matched"]]
    assert any("Comptabilité" in rule for rule in matched), explained
    assert "financial_reports" in {r["role"] for r in explained["roles"]}
    assert staff.sync()["unchanged"] == 6  # a second read of the same file changes nothing


def test_a_malformed_line_aborts_the_run_and_nobody_is_taken_for_a_leaver(staff: CsvDeployment) -> None:
    assert staff.sync()["exit"] == 0
    text = staff.csv.read_bytes().decode("cp1252").splitlines()
    # The export is cut and broken: Élodie's line is gone and the new last line has a field too few.
    del text[1]
    staff.csv.write_bytes(("\r\n".join(text) + "\r\n").encode("cp1252"))
    staff.append("1007;Petit;Jules;jules.petit@example.org;Accueil;Accueil;oui")
    ran = staff.sync()
    assert ran["exit"] == 1 and ran["aborted"] and "incomplete read" in ran["reason"]
    assert any(e.startswith(f"{staff.csv}:7: 7 fields where the header has 8") for e in ran["errors"]), ran
    users = staff.users()
    assert users["elodie.garnier@example.org"]["status"] == "pending" and "jules.petit@example.org" not in users


def test_a_file_in_another_encoding_aborts_with_the_line_and_the_advice(staff: CsvDeployment) -> None:
    staff.config.write_text(staff.config.read_text(encoding="utf-8").replace('"cp1252"', '"utf-8"'), encoding="utf-8")
    ran = staff.bridge("sync")
    assert ran.exit_code == 1
    assert "staff.csv:1: not utf-8" in ran.output and 'encoding = "cp1252"' in ran.output
