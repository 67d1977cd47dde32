"""`bridge tokens`: the SCIM bearer tokens."""

from __future__ import annotations

import click

from bridge.cli.base import State, pass_state, print_json, table, utc_now
from bridge.errors import NotFound


@click.group()
def tokens() -> None:
    """SCIM bearer tokens."""


@tokens.command("create")
@click.option("--tenant", required=True)
@click.option("--label", default=None)
@click.option("--read-only", is_flag=True, help="For the product: read accounts, roles and status; no writes.")
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Refuse the token after N days (default: valid until revoked).",
)
@pass_state
def tokens_create(state: State, tenant: str, label: str | None, read_only: bool, expires_days: int | None) -> None:
    """Create a token; it is printed once, as the last line. Only its hash is stored."""
    from datetime import timedelta

    from bridge.store.db import transaction
    from bridge.store.tenants import get_tenant
    from bridge.store.tokens import create_token

    now = utc_now()
    expires_at = now + timedelta(days=expires_days) if expires_days else None
    with transaction(state.creating_runtime().engine) as conn:
        row = get_tenant(conn, tenant)
        token_id, token = create_token(conn, row.id, label, read_only, now, expires_at)
    until = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    click.echo(
        f"token {token_id} for tenant {tenant}{' (read-only)' if read_only else ''}{until}; "
        "store it now, it is not shown again:"
    )
    click.echo(token)


@tokens.command("list")
@click.option("--tenant", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def tokens_list(state: State, tenant: str, as_json: bool) -> None:
    from bridge.store.db import transaction
    from bridge.store.tenants import get_tenant
    from bridge.store.tokens import list_tokens

    with transaction(state.runtime.engine, write=False) as conn:
        data = list_tokens(conn, get_tenant(conn, tenant).id)
    if as_json:
        print_json(data)
    else:
        table(
            ["ID", "LABEL", "READ-ONLY", "CREATED", "LAST USED", "EXPIRES", "REVOKED"],
            [
                [d["id"], d["label"], d["readOnly"], d["created"], d["lastUsed"], d["expires"], d["revoked"]]
                for d in data
            ],
        )


@tokens.command("revoke")
@click.argument("token_id")
@pass_state
def tokens_revoke(state: State, token_id: str) -> None:
    from bridge.store.db import transaction
    from bridge.store.tokens import revoke_token

    with transaction(state.runtime.engine) as conn:
        if not revoke_token(conn, token_id, utc_now()):
            raise NotFound(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")
