"""`bridge users`: list and show accounts, and the manual lifecycle actions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table, utc_now

if TYPE_CHECKING:
    from bridge.provision.manual import AccountAction


def _load_accounts_json(conn: Any, tenant: Any, rows: Sequence[Any]) -> list[dict[str, Any]]:
    from bridge.store.snapshot import account_documents

    return account_documents(conn, tenant.id, tenant.name, rows)


@click.group()
def users() -> None:
    """Accounts and manual lifecycle actions."""


STATUSES = ["no_access", "pending", "active", "suspended", "archived"]


@users.command("list")
@click.option("--tenant", default=None)
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def users_list(state: State, tenant: str | None, status: str | None, as_json: bool) -> None:
    from bridge.store.accounts import list_accounts
    from bridge.store.db import transaction
    from bridge.store.tenants import get_tenant

    with transaction(state.runtime.engine, write=False) as conn:
        tenant_row = get_tenant(conn, state.tenant_name(tenant))
        rows = list_accounts(conn, tenant_row.id, status)
        data = _load_accounts_json(conn, tenant_row, rows)
    if as_json:
        print_json(data)
        return
    table(
        ["ID", "USER", "EMAIL", "STATUS", "TYPE", "ROLES", "GROUPS"],
        [
            [
                d["id"],
                d["userName"],
                d["email"],
                d["status"],
                d["userType"],
                ", ".join(d["roles"]),
                ", ".join(d["groups"]),
            ]
            for d in data
        ],
    )
    counts: dict[str, int] = {}
    for d in data:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    click.echo(f"\n{len(data)} accounts: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES))


@users.command("show")
@click.argument("user")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def users_show(state: State, user: str, tenant: str | None, as_json: bool) -> None:
    from bridge.store.accounts import account_roles, find_account
    from bridge.store.audit import list_audit
    from bridge.store.db import transaction
    from bridge.store.outbox import account_mail
    from bridge.store.tenants import get_tenant

    with transaction(state.runtime.engine, write=False) as conn:
        tenant_row = get_tenant(conn, state.tenant_name(tenant))
        row = find_account(conn, tenant_row.id, user)
        data = _load_accounts_json(conn, tenant_row, [row])[0]
        rules = dict(account_roles(conn, [row.id]).get(row.id, []))
        history = [
            {
                "at": e.occurred_at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "from": (e.before or {}).get("status"),
                "to": (e.after or {}).get("status"),
                "reason": e.reason,
            }
            for e in list_audit(conn, tenant_row.id, account_id=row.id)
        ]
        mail = account_mail(conn, row.id)
    data["roleRules"] = rules
    data["history"] = history
    data["mail"] = mail
    if as_json:
        print_json(data)
        return
    for key in (
        "id",
        "userName",
        "email",
        "givenName",
        "familyName",
        "status",
        "userType",
        "source",
        "externalId",
        "created",
        "lastModified",
        "expires",
    ):
        click.echo(f"{key:>13}: {data[key] if data[key] is not None else ''}")
    click.echo(f"{'roles':>13}: " + (", ".join(data["roles"]) or "(none)"))
    for role, rule in rules.items():
        click.echo(f"{'':>15}{role} <- {rule}")
    for role, why in data["leftOut"].items():
        click.echo(f"{'left out':>13}: {role} ({why})")
    click.echo(f"{'groups':>13}: " + (", ".join(data["groups"]) or "(none)"))
    hours = data["loginHours"]
    if hours is None:
        click.echo(f"{'login hours':>13}: any time")
    for origin, label in (("mapping", "[[login_hours]]"), ("logonHours", "AD logonHours")):
        if hours is not None and origin in hours:
            windows = ", ".join(f"{w['days']} {w['hours']} {w['time_zone']}" for w in hours[origin]) or "never"
            click.echo(f"{'login hours':>13}: {windows} ({label})")
    for m in mail:
        # Mail that did not go out, and why: the first place to look when someone says
        # "I never got the activation mail".
        click.echo(f"{'mail':>13}: {m['topic']} #{m['id']} {m['status']}" + (f": {m['reason']}" if m["reason"] else ""))
    click.echo("\nhistory:")
    table(
        ["AT", "ACTOR", "ACTION", "FROM", "TO", "REASON"],
        [[h["at"], h["actor"], h["action"], h["from"], h["to"], h["reason"]] for h in history],
    )


def _manual(state: State, user: str, tenant: str | None, action: AccountAction) -> str:
    from bridge.provision.manual import run_action

    done = run_action(state.runtime, state.tenant_name(tenant), user, action, actor=cli_actor(), now=utc_now())
    return f"{done.user_name}: {done.before} -> {done.after}"


@users.command("archive")
@click.argument("user")
@click.option("--tenant", default=None)
@pass_state
def users_archive(state: State, user: str, tenant: str | None) -> None:
    """Archive an account now (roles revoked; sync will not bring it back until reactivated)."""
    click.echo(_manual(state, user, tenant, "archive"))


@users.command("reactivate")
@click.argument("user")
@click.option("--tenant", default=None)
@pass_state
def users_reactivate(state: State, user: str, tenant: str | None) -> None:
    """archived -> no_access; the mapping then grants roles again (pending, new activation mail)."""
    click.echo(_manual(state, user, tenant, "reactivate"))


@users.command("resend-activation")
@click.argument("user")
@click.option("--tenant", default=None)
@pass_state
def users_resend(state: State, user: str, tenant: str | None) -> None:
    """Queue a new activation mail; the previous link stops working."""
    click.echo(_manual(state, user, tenant, "resend") + " (new activation mail queued)")
