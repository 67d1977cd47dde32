"""`bridge plans`: the plans a safety check held (issue 17): list, show, approve, reject."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table
from bridge.errors import NotFound

_COUNTS = ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in _COUNTS)


def _known(call: Callable[[], Any]) -> Any:
    """A plan id that names no plan is a usage error (exit 2), said in one line."""
    try:
        return call()
    except NotFound as exc:
        click.echo(f"bridge: {exc}", err=True)
        sys.exit(2)


@click.group()
def plans() -> None:
    """Plans a safety check held: review, approve or reject them."""


@plans.command("list")
@click.option("--tenant", default=None, help="One tenant (default: all).")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def plans_list(state: State, tenant: str | None, as_json: bool) -> None:
    from bridge.engine.plans import plans as list_plans
    from bridge.store.db import transaction
    from bridge.store.tenants import get_tenant

    engine = state.runtime.engine
    tenant_id = None
    if tenant:
        with transaction(engine, write=False) as conn:
            tenant_id = get_tenant(conn, tenant).id
    data = list_plans(engine, tenant_id=tenant_id)
    if as_json:
        print_json(data)
        return
    table(
        ["ID", "TENANT", "SOURCE", "REASON", "CREATED", "STATUS", "CHANGES"],
        [
            [d["id"], d["tenant"], d["source"], d["reason"], d["created"], d["status"], _counts(d["counts"])]
            for d in data
        ],
    )


@plans.command("show")
@click.argument("plan_id")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def plans_show(state: State, plan_id: str, as_json: bool) -> None:
    from bridge.engine.plans import show

    data, _ = _known(lambda: show(state.runtime.engine, plan_id))
    if as_json:
        print_json(data)
        return
    click.echo(f"plan {data['id']} ({data['tenant']}, source {data['source']}): {data['status']}")
    click.echo(f"held {data['created']} by {data['createdBy']} ({data['reason']}): {data['detail'] or ''}")
    if data["status"] == "held":
        click.echo(f"expires {data['expires']}")
    elif data["decidedBy"]:
        later = f"; superseded by plan {data['supersededBy']}" if data["supersededBy"] else ""
        click.echo(f"{data['status']} {data['decidedAt']} by {data['decidedBy']}{later}")
    click.echo(f"would change: {_counts(data['counts'])}; seat delta {data['counts']['seatDelta']:+d}")
    click.echo("")
    table(
        ["USER", "KIND", "STATUS", "CHANGES", "REASON"],
        [
            [c["userName"], c["kind"], f"{c['before'] or '-'} -> {c['after']}", ", ".join(c["changes"]), c["reason"]]
            for c in data["changes"]
        ],
    )


@plans.command("approve")
@click.argument("plan_id")
@pass_state
def plans_approve(state: State, plan_id: str) -> None:
    """Apply the held plan, if its source still says what it said when it was held."""
    from bridge.engine.plans import approve

    runtime = state.checked_runtime(create=False)
    decision = _known(lambda: approve(runtime.config, runtime.engine, plan_id, actor=cli_actor()))
    if decision.scim is not None:
        # A SCIM guard's plan: applied from what the identity provider's identities say now.
        click.echo(f"plan {plan_id} approved and applied: {_counts(decision.scim.counts)}")
        for diff in decision.scim.differences:
            click.echo(
                f"  {diff['userName']}: held {diff['held']}, applied {diff['applied']} "
                "(the identity provider changed this person since)"
            )
        return
    result = decision.result
    if decision.refused:
        click.echo(f"plan {plan_id} not applied: {result.reason}", err=True)
        if result.held:
            click.echo(f"plan {result.held} is held instead: bridge plans show {result.held}")
        sys.exit(1)
    counts = result.to_json()
    click.echo(f"plan {plan_id} approved and applied: {_counts(counts)}")
    for error in result.errors:
        click.echo(f"  error: {error}", err=True)
    if result.errors:
        sys.exit(1)


@plans.command("reject")
@click.argument("plan_id")
@pass_state
def plans_reject(state: State, plan_id: str) -> None:
    """Reject the held plan: nothing of it is applied."""
    from bridge.engine.plans import reject

    _known(lambda: reject(state.runtime.engine, plan_id, actor=cli_actor()))
    click.echo(f"plan {plan_id} rejected: nothing of it is applied")
