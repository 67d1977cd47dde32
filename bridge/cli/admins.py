"""`bridge admins`: who may sign in to the console at `{public_url}/admin/`."""

from __future__ import annotations

import click

from bridge.cli.base import State, pass_state, print_json, table, utc_now
from bridge.errors import BridgeError, NotFound


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
    from datetime import timedelta

    from bridge.notify.mail import valid_address
    from bridge.store.admins import invite
    from bridge.store.db import transaction
    from bridge.store.tenants import get_tenant

    if not valid_address(email) or len(email) > 320:
        raise click.UsageError(f"{email!r} is not an email address")
    runtime = state.creating_runtime()
    now = utc_now()
    hours = expires_hours or int(runtime.config.console["invite_expires_hours"])
    with transaction(runtime.engine) as conn:
        tenant_id = get_tenant(conn, tenant).id if tenant else None
        row, token = invite(conn, email, tenant_id, now + timedelta(hours=hours), now)
    link = f"{str(runtime.config.server['public_url']).rstrip('/')}/admin/setup/{token}"
    scope = f"administrator of tenant {tenant}" if tenant else "operator (every tenant)"
    expires = f"{row.setup_expires_at:%Y-%m-%d %H:%M} UTC" if row.setup_expires_at else ""
    if send:
        _send_invitation(runtime, email, tenant, link, row.setup_expires_at or now)
        click.echo(f"{email} invited as {scope}; setup link mailed, valid until {expires}")
        return
    click.echo(f"{email} invited as {scope}; the link works once, until {expires}:")
    click.echo(link)


def _send_invitation(runtime: object, email: str, tenant: str | None, link: str, expires_at: object) -> None:
    """Sent at once over SMTP, not through the outbox: the outbox keeps what it sends, and a
    setup link is a credential that must not sit in the database in clear."""
    import uuid

    from bridge.notify.mail import (
        MailRejected,
        SmtpSender,
        SmtpUnavailable,
        build_message,
        format_date,
        message_id,
        render,
    )
    from bridge.runtime import Runtime

    assert isinstance(runtime, Runtime)
    config = runtime.config
    language = "en"
    rendered = render(
        "admin_invite", language, {"tenant": tenant, "link": link, "expires": format_date(expires_at, language)}
    )  # type: ignore[arg-type]
    from_header = str(config.email["from"])
    message = build_message(
        rendered,
        to=email,
        from_header=from_header,
        msg_id=message_id(f"admin-invite-{uuid.uuid4().hex}", from_header),
        now=utc_now(),
        language=language,
    )
    sender = SmtpSender(config.email, config.origin)
    try:
        sender.send(email, message)
    except (SmtpUnavailable, MailRejected) as exc:
        raise BridgeError(f"the invitation was not sent: {exc}; run the command again without --send") from None
    finally:
        sender.close()


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
    from bridge.store.admins import remove_admin
    from bridge.store.db import transaction

    with transaction(state.runtime.engine) as conn:
        if not remove_admin(conn, email):
            raise NotFound(f"no administrator {email}")
    click.echo(f"{email} removed")
