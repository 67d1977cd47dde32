"""`bridge explain`: why an account has the roles and the status it has."""

from __future__ import annotations

import click

from bridge.cli.base import State, pass_state, print_json


@click.command()
@click.argument("user")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def explain(state: State, user: str, tenant: str | None, as_json: bool) -> None:
    """Which mapping rules grant which roles, and why the status is what it is."""
    from bridge.engine.explain import explain_account

    runtime = state.runtime
    data = explain_account(runtime, state.tenant_name(tenant), user)
    if as_json:
        print_json(data)
        return
    click.echo(f"{data['userName']} ({data['source']}): {data['status']}, {data['userType']}")
    click.echo(f"  user type: {data['userTypeReason']}")
    click.echo("rules:" if data["mapping"] else "rules: (none: the tenant has no mapping file)")
    for rule in data["rules"]:
        mark = "MATCH" if rule["matched"] else "  -  "
        click.echo(
            f"  {mark} {rule['rule']} -> {', '.join(rule['roles'])}" + (f"  ({rule['via']})" if rule.get("via") else "")
        )
    click.echo("roles:")
    for role in data["roles"]:
        click.echo(f"  {role['role']}: {role['outcome']}" + (f" ({role['detail']})" if role.get("detail") else ""))
    if not data["roles"]:
        click.echo("  (none: no rule grants this person a role)")
    if data["modules"]:
        click.echo("modules:")
        for module_id, m in data["modules"].items():
            limit = m["limit"] if m["limit"] is not None else "no limit"
            seat = "a seat" if m["seat"] else "no seat"
            click.echo(f"  {module_id} ({m['title']}): {seat}; {m['used']} used of {limit}")
    hours = data["loginHours"]
    click.echo("login hours:" + ("" if hours or data["loginHoursEntries"] else " any time"))
    for entry in data["loginHoursEntries"]:
        mark = "MATCH" if entry["matched"] else "  -  "
        click.echo(f"  {mark} {entry['entry']} -> {entry['days']} {entry['hours']} {entry['time_zone']}")
    if hours and "logonHours" in hours:
        windows = ", ".join(f"{w['days']} {w['hours']}" for w in hours["logonHours"]) or "no hour at all"
        click.echo(f"  AD logonHours (UTC): {windows}")
    click.echo(f"status: {data['statusReason']}")
