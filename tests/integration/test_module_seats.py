"""Seats per module (issue 19) through a real sync of examples/directory.ldif (SQLite and
PostgreSQL): a module's limit leaves newcomers out with `seat_limit:<module>` (in `users show`,
`explain`, the sync JSON), `tenants list --json` and /metrics count per module, and a seat freed
by a leaver goes to the next person by userName."""

from __future__ import annotations

import json
import re
from typing import Any

from click.testing import CliRunner, Result

from bridge.cli import main
from tests.conftest import Deployment
from tests.fixtures.smtp import SmtpServer

LIMIT = 10
POS_ROLES = {"point_of_sale", "administration"}  # administration: all_modules


def bridge(d: Deployment, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(d.config), *args], catch_exceptions=False)


def sync_json(d: Deployment) -> dict[str, Any]:
    result = bridge(d, "sync", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def users(d: Deployment) -> dict[str, dict[str, Any]]:
    result = bridge(d, "users", "list", "--json")
    assert result.exit_code == 0, result.output
    return {u["userName"]: u for u in json.loads(result.stdout)}


def limit_point_of_sale(d: Deployment, limit: int) -> None:
    text = d.mapping.read_text()
    before = '[modules.point_of_sale]\ntitle = "Point of sale"\n'
    assert before in text  # mappings/example.toml shows the modules
    d.mapping.write_text(text.replace(before, before + f"seat_limit = {limit}\n"))


def pos_seats(accounts: dict[str, dict[str, Any]]) -> list[str]:
    """Who is a seat of the point_of_sale module: a live account with point_of_sale or administration."""
    return sorted(
        (
            name
            for name, u in accounts.items()
            if u["status"] in ("pending", "active", "suspended") and POS_ROLES & set(u["roles"])
        ),
        key=str.casefold,
    )


def waiting(accounts: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(
        (n for n, u in accounts.items() if "seat_limit:point_of_sale" in u["leftOut"].values()), key=str.casefold
    )


def test_a_modules_limit_leaves_newcomers_out_and_a_freed_seat_goes_to_the_next(deployment: Deployment) -> None:
    limit_point_of_sale(deployment, LIMIT)
    first = sync_json(deployment)
    accounts = users(deployment)
    seats = pos_seats(accounts)
    left_out = waiting(accounts)
    assert len(seats) == LIMIT and left_out
    # Newcomers by userName: everyone admitted sorts before everyone waiting.
    assert max(s.casefold() for s in seats) < min(w.casefold() for w in left_out)
    # The administrators (all_modules) took a point_of_sale seat each: they sort first.
    assert {"agarnier", "bmartin", "cdubois"} <= set(seats)
    assert first["seatDeltaByModule"]["point_of_sale"] == LIMIT
    assert first["seatRefused"] == len(left_out)
    # A person left out of the module keeps the rest: the schedule viewer role is free.
    shown = json.loads(bridge(deployment, "users", "show", left_out[0], "--json").stdout)
    assert shown["leftOut"] == {"point_of_sale": "seat_limit:point_of_sale"}
    assert "point_of_sale" not in shown["roles"]
    text = bridge(deployment, "users", "show", left_out[0]).output
    assert "left out: point_of_sale (seat_limit:point_of_sale)" in text
    explained = json.loads(bridge(deployment, "explain", left_out[0], "--json").stdout)
    row = next(r for r in explained["roles"] if r["role"] == "point_of_sale")
    assert row["reason"] == "seat_limit:point_of_sale" and "Point of sale" in row["outcome"]
    assert explained["modules"]["point_of_sale"] == {
        "title": "Point of sale",
        "seat": False,
        "used": LIMIT,
        "limit": LIMIT,
    }
    assert "seat_limit:point_of_sale" in bridge(deployment, "explain", left_out[0]).output

    listed = json.loads(bridge(deployment, "tenants", "list", "--json").stdout)
    (tenant,) = [t for t in listed if t["name"] == "example"]
    assert tenant["seats"]["point_of_sale"] == {"used": LIMIT, "limit": LIMIT}
    fronts = [n for n, u in accounts.items() if {"front_desk", "administration"} & set(u["roles"])]
    assert tenant["seats"]["front_office"] == {"used": len(fronts), "limit": None}

    metrics = _metrics(deployment)
    assert f'bridge_module_seats_used{{module="point_of_sale",tenant="example"}} {LIMIT:.1f}' in metrics
    assert f'bridge_module_seat_limit{{module="point_of_sale",tenant="example"}} {LIMIT:.1f}' in metrics

    # A holder who is not an administrator leaves: the next person waiting takes the seat.
    leaver = next(s for s in seats if "administration" not in accounts[s]["roles"])
    deployment.remove_people([leaver])
    again = sync_json(deployment)
    after = users(deployment)
    assert leaver not in pos_seats(after) and len(pos_seats(after)) == LIMIT
    assert left_out[0] in pos_seats(after)
    assert waiting(after) == left_out[1:]
    assert again["seatDeltaByModule"]["point_of_sale"] == 0  # one out, one in


def test_modules_without_limits_change_nothing_and_count_seats(deployment: Deployment) -> None:
    sync_json(deployment)
    accounts = users(deployment)
    assert not any(u["leftOut"] for u in accounts.values() if u["userType"] == "internal")
    listed = json.loads(bridge(deployment, "tenants", "list", "--json").stdout)
    (tenant,) = [t for t in listed if t["name"] == "example"]
    assert set(tenant["seats"]) == {"front_office", "point_of_sale", "finance"}
    assert tenant["seats"]["point_of_sale"] == {"used": len(pos_seats(accounts)), "limit": None}


def test_a_role_naming_an_unknown_module_stops_the_sync_naming_file_and_key(deployment: Deployment) -> None:
    text = deployment.mapping.read_text()
    deployment.mapping.write_text(text.replace('module = "finance"', 'module = "accounting"'))
    result = CliRunner().invoke(main, ["--config", str(deployment.config), "sync"])
    assert result.exit_code == 2
    assert "mapping.toml: roles.financial_reports.module" in result.output
    assert 'module "accounting" is not defined in [modules]' in result.output


def _metrics(d: Deployment) -> str:
    from bridge.metrics import render
    from bridge.runtime import open_runtime

    runtime = open_runtime(d.config, migrate=False)
    try:
        body, _ = render(runtime)
    finally:
        runtime.engine.dispose()
    return body.decode()


def test_the_console_overview_shows_seats_per_module(deployment: Deployment, smtp_server: SmtpServer) -> None:
    from tests.integration.test_activation_web import serve
    from tests.integration.test_console import IT, set_up

    limit_point_of_sale(deployment, LIMIT)
    for site in serve(deployment, smtp_server):
        session = set_up(site, IT, "--tenant", "example")
        page = session.get(f"{site.base}/admin/t/example/", timeout=10).text
        table = page.split('<table class="modules">', 1)[1].split("</table>", 1)[0]
        row = re.search(r"<tr><td>Point of sale</td>(.*?)</tr>", table)
        assert row is not None, table
        assert re.findall(r'<td class="num">([^<]*)</td>', row.group(1)) == [str(LIMIT), str(LIMIT)]
        assert "<td>Finance</td>" in table and "no limit" in table


def test_a_preview_of_a_lower_module_limit_takes_nobody_s_seat(deployment: Deployment) -> None:
    sync_json(deployment)
    used = len(pos_seats(users(deployment)))
    current = deployment.mapping.read_text()
    limit_point_of_sale(deployment, LIMIT)
    edited = deployment.root / "edited.toml"
    edited.write_text(deployment.mapping.read_text())
    deployment.mapping.write_text(current)  # the tenant keeps its mapping; the edit is previewed
    result = bridge(deployment, "replan", "--tenant", "example", "--dry-run", "--mapping", str(edited), "--json")
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert used > LIMIT
    assert preview["moduleSeats"]["point_of_sale"] == {"before": used, "after": used, "limit": LIMIT}
    assert not any(r["reason"].startswith("seat_limit") for r in preview["refused"])


def test_a_module_seat_freed_by_an_archive_goes_to_the_next_person_at_once(deployment: Deployment) -> None:
    limit_point_of_sale(deployment, LIMIT)
    sync_json(deployment)
    accounts = users(deployment)
    left_out = waiting(accounts)
    holder = next(s for s in pos_seats(accounts) if "administration" not in accounts[s]["roles"])
    # No sync: the archive frees the seat, and the re-plan of the waiting gives it right after.
    archived = bridge(deployment, "users", "archive", holder)
    assert archived.exit_code == 0, archived.output
    after = users(deployment)
    assert after[holder]["status"] == "archived"
    assert "point_of_sale" in after[left_out[0]]["roles"] and not after[left_out[0]]["leftOut"]
    assert waiting(after) == left_out[1:] and len(pos_seats(after)) == LIMIT
