"""Understand and preview (issue 16) over HTTP against the real app, on SQLite and PostgreSQL: the
mapping impact preview applies nothing, a broken mapping is named by its key, the seat-refusal
report, the access report at a past date and its CSV, and the tenant scope of all three."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from markupsafe import escape
from sqlalchemy import select, update

from bridge.store.tables import Account, AuditEvent, Identity, OutboxMessage, RoleGrant, SyncRun
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import bridge
from tests.integration.test_activation_web import Site, serve
from tests.integration.test_console import IT, OPS, OTHER_TENANT, csrf_of, set_up

SEAT_LIMIT = 40  # the example directory has 44 people with a billable role: 4 are refused


@pytest.fixture
def site(deployment: Deployment, smtp_server: SmtpServer) -> Iterator[Site]:
    yield from serve(deployment, smtp_server, tenant=f"seat_limit = {SEAT_LIMIT}\n", extra=OTHER_TENANT)


def _database(site: Site) -> dict[str, list[Any]]:
    """Every row of the tables a plan writes, in key order: equal dumps are equal databases."""
    tables = {
        "accounts": (Account.__table__, "id"),
        "identities": (Identity.__table__, "id"),
        "role_grants": (RoleGrant.__table__, "account_id"),
        "audit_events": (AuditEvent.__table__, "id"),
        "outbox": (OutboxMessage.__table__, "id"),
        "sync_runs": (SyncRun.__table__, "id"),
    }
    with site.runtime.engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns, table.c[key]))]
            for name, (table, key) in tables.items()
        }


def _preview(session: requests.Session, site: Site, tenant: str, mapping: str) -> requests.Response:
    form = session.get(f"{site.base}/admin/t/example/preview", timeout=10)
    return session.post(
        f"{site.base}/admin/t/{tenant}/preview", data={"csrf": csrf_of(form.text), "mapping": mapping}, timeout=30
    )


def test_a_preview_that_moves_a_role_shows_the_change_and_applies_nothing(site: Site) -> None:
    session = set_up(site, IT, "--tenant", "example")  # the customer's IT admin, for their own tenant
    form = session.get(f"{site.base}/admin/t/example/preview", timeout=10)
    assert form.status_code == 200 and "Preview" in form.text
    current = site.deployment.mapping.read_text()
    assert f'spellcheck="false">\n{escape(current)}</textarea>' in form.text  # a browser drops the first newline
    # The refusals the seat limit made, from the accounts' stored reasons.
    assert "These 4 people were granted billable roles but not admitted: seat limit 40." in form.text

    before = _database(site)
    edited = current.replace(
        'group_pattern = "^pos-"\nroles = ["point_of_sale"]', 'group_pattern = "^pos-"\nroles = ["front_desk"]'
    )
    assert edited != current
    shown = _preview(session, site, "example", edited)
    assert shown.status_code == 200, shown.text
    gains = shown.text.split('id="gains"', 1)[1].split("</table>", 1)[0]
    losses = shown.text.split('id="losses"', 1)[1].split("</table>", 1)[0]
    assert "achevalier</td><td>front_desk" in gains and "achevalier</td><td>point_of_sale" in losses
    assert "Nothing was applied." in shown.text
    assert 'id="seat-delta"' in shown.text
    assert _database(site) == before  # not one row written, read or not

    # The CLI gives the same preview (README: `replan --dry-run --mapping FILE`).
    path = site.deployment.root / "edited.toml"
    path.write_text(edited)
    result = bridge(site.deployment, "replan", "--tenant", "example", "--dry-run", "--mapping", str(path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"user_name": "achevalier", "role": "point_of_sale"} in [
        {k: m[k] for k in ("user_name", "role")} for m in data["losses"]
    ]
    assert data["roles"]["point_of_sale"]["gained"] == 0 and data["roles"]["point_of_sale"]["lost"] > 0
    assert _database(site) == before


def test_a_preview_that_frees_seats_admits_the_refused_and_counts_the_seats(site: Site) -> None:
    session = set_up(site, OPS)
    current = site.deployment.mapping.read_text()
    # Point of sale no longer billable: its holders stop taking seats, the four refused get theirs.
    edited = current.replace(
        '[roles.point_of_sale]\ntitle = "Point of sale"',
        '[roles.point_of_sale]\ntitle = "Point of sale"\nbillable = false',
    )
    assert edited != current
    before = _database(site)
    shown = _preview(session, site, "example", edited)
    assert shown.status_code == 200, shown.text
    delta = shown.text.split('id="seat-delta">', 1)[1].split("</td>", 1)[0]
    seats_before, rest = delta.split(" → ")
    assert int(seats_before) == SEAT_LIMIT and "/ 40" in rest and int(rest.split()[0]) < SEAT_LIMIT
    assert "seat limit reached" not in shown.text.split('id="preview-result"', 1)[1]
    assert _database(site) == before


def test_a_broken_mapping_is_named_by_its_key_and_nothing_runs(site: Site) -> None:
    session = set_up(site, OPS)
    before = _database(site)
    wrong_type = _preview(session, site, "example", "[roles.viewer]\ntitle = 1\n")
    assert wrong_type.status_code == 422
    assert "&lt;pasted mapping&gt;: roles.viewer.title: must be a string, got int" in wrong_type.text
    unknown_role = _preview(
        session, site, "example", '[roles.viewer]\n\n[[rules]]\ngroup_name = "x"\nroles = ["nope"]\n'
    )
    assert unknown_role.status_code == 422 and "rules[1].roles: role &#34;nope&#34; is not defined" in unknown_role.text
    not_toml = _preview(session, site, "example", "[roles\n")
    assert not_toml.status_code == 422 and "invalid TOML" in not_toml.text and "Traceback" not in not_toml.text
    # The pasted text is kept for the next try.
    assert "[roles\n</textarea>" in not_toml.text
    assert _database(site) == before

    path = site.deployment.root / "broken.toml"
    path.write_text("[roles.viewer]\ntitle = 1\n")
    result = bridge(site.deployment, "replan", "--tenant", "example", "--dry-run", "--mapping", str(path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].endswith("broken.toml: roles.viewer.title: must be a string, got int")
    refused = bridge(site.deployment, "replan", "--tenant", "example", "--mapping", str(path))
    assert refused.exit_code == 2 and "--dry-run" in refused.output


def _shift_history(site: Site, days: int) -> None:
    """Move the whole trail (and the grants' dates) `days` back, as if the first sync were that old."""
    events = AuditEvent.__table__
    grants = RoleGrant.__table__
    with site.runtime.engine.begin() as conn:
        for event_id, occurred_at in conn.execute(select(events.c.id, events.c.occurred_at)).all():
            conn.execute(
                update(events).where(events.c.id == event_id).values(occurred_at=occurred_at - timedelta(days=days))
            )
        for account_id, role, granted_at in conn.execute(
            select(grants.c.account_id, grants.c.role, grants.c.granted_at)
        ).all():
            conn.execute(
                update(grants)
                .where(grants.c.account_id == account_id, grants.c.role == role)
                .values(granted_at=granted_at - timedelta(days=days))
            )


def _leave_pos_cashiers(deployment: Deployment, uid: str) -> None:
    records = []
    for record in deployment.records():
        if deployment.dn_of(record).startswith("cn=pos-cashiers,"):
            record = "\n".join(
                ln for ln in record.splitlines() if ln != f"member: uid={uid},ou=people,dc=example,dc=org"
            )
        records.append(record)
    deployment.write_records(records)


def test_the_access_report_at_a_past_date_shows_who_has_since_lost_the_role(site: Site) -> None:
    _shift_history(site, 10)
    _leave_pos_cashiers(site.deployment, "achevalier")
    assert bridge(site.deployment, "sync").exit_code == 0
    session = set_up(site, IT, "--tenant", "example")
    today = datetime.now(UTC).date()

    def report(day: object, **extra: str) -> requests.Response:
        return session.get(
            f"{site.base}/admin/t/example/access", params={"role": "point_of_sale", "at": str(day), **extra}, timeout=10
        )

    past = report(today - timedelta(days=5))
    assert past.status_code == 200
    assert ">achevalier</a>" in past.text and ">bfrancois</a>" in past.text
    assert "group_pattern &#34;^pos-&#34;" in past.text  # by which rule
    # On the day of the first sync he was granted it that day; before it nobody held it.
    assert ">achevalier</a>" in report(today - timedelta(days=10)).text
    assert "0 people held point_of_sale" in report(today - timedelta(days=11)).text
    # Today he held it until the sync took it away; tomorrow he does not.
    assert ">achevalier</a>" in report(today).text
    tomorrow = report(today + timedelta(days=1))
    assert ">achevalier</a>" not in tomorrow.text and ">bfrancois</a>" in tomorrow.text
    assert report("31/12/2026").status_code == 400

    exported = report(today - timedelta(days=5), format="csv")
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    arthur = next(r for r in rows if r["user_name"] == "achevalier")
    assert arthur["role"] == "point_of_sale" and arthur["rule"].startswith('rule 4: group_pattern "^pos-"')
    assert arthur["status"] in ("pending", "active") and arthur["granted_at"] == ""


def test_a_tenant_administrator_gets_404_for_another_tenants_preview_and_report(site: Site) -> None:
    session = set_up(site, IT, "--tenant", "example")
    for path in ("/admin/t/other/preview", "/admin/t/other/access?role=x", "/admin/t/nowhere/preview"):
        assert session.get(f"{site.base}{path}", timeout=10).status_code == 404, path
    assert _preview(session, site, "other", "[roles.viewer]\n").status_code == 404
    bare = session.post(f"{site.base}/admin/t/example/preview", data={"mapping": "[roles.viewer]\n"}, timeout=10)
    assert bare.status_code == 403  # no CSRF field
