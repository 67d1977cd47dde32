"""`bridge admins`: who may sign in to the console at `{public_url}/admin/`."""

from __future__ import annotations

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table, utc_now


@click.group()
def admins() -> None:
    """Console administrators: operators (every tenant) and tenant administrators."""


@admins.command("invite")
@click.argument("email")
@click.option("--tenant", default=None, help="A tenant administrator (that tenant only); without it: an operator.")
@click.option(
    "--expires-hours",
    type=click.IntRange(1, 24 * 30),
    default=None,
    help="Default: [console] invite_expires_hours (72).",
)
@click.option("--send", is_flag=True, help="Mail the link to EMAIL instead of printing it.")
@pass_state
def admins_invite(state: State, email: str, tenant: str | None, expires_hours: int | None, send: bool) -> None:
    """Invite an administrator; prints the one-time setup link as the last line.

    Inviting someone again gives them a new link (the previous one stops working) and sets
    their scope to what this command says."""
    from bridge.engine.admins import invite_admin
    from bridge.errors import InvalidValue

    try:
        made = invite_admin(
            state.creating_runtime(), email, tenant, actor=cli_actor(), expires_hours=expires_hours, send=send
        )
    except InvalidValue as exc:
        raise click.UsageError(str(exc)) from None
    scope = f"administrator of tenant {tenant}" if tenant else "operator (every tenant)"
    expires = f"{made.expires_at:%Y-%m-%d %H:%M} UTC"
    if send:
        click.echo(f"{email} invited as {scope}; setup link mailed, valid until {expires}")
        return
    click.echo(f"{email} invited as {scope}; the link works once, until {expires}:")
    click.echo(made.link)


@admins.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def admins_list(state: State, as_json: bool) -> None:
    from bridge.store.admins import list_admins
    from bridge.store.db import transaction

    now = utc_now()
    with transaction(state.runtime.engine, write=False) as conn:
        rows = list_admins(conn)
    data = [
        {
            "email": r.email,
            "tenant": r.tenant_name,
            "role": "operator" if r.is_operator else "tenant_admin",
            "status": "active"
            if r.password_hash
            else ("invited" if r.setup_expires_at and r.setup_expires_at > now else "invitation_expired"),
            "totp": r.totp_secret is not None,
            "created": r.created_at.isoformat(),
            "lastLogin": r.last_login_at.isoformat() if r.last_login_at else None,
        }
        for r in rows
    ]
    if as_json:
        print_json(data)
        return
    table(
        ["EMAIL", "TENANT", "ROLE", "STATUS", "TOTP", "LAST LOGIN"],
        [
            [d["email"], d["tenant"] or "(all)", d["role"], d["status"], "yes" if d["totp"] else "no", d["lastLogin"]]
            for d in data
        ],
    )


@admins.command("remove")
@click.argument("email")
@pass_state
def admins_remove(state: State, email: str) -> None:
    """Remove an administrator; their sessions end at once."""
    from bridge.engine.admins import remove_admin_as

    remove_admin_as(state.runtime, email, actor=cli_actor())
    click.echo(f"{email} removed")
