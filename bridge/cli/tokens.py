"""`bridge tokens`: the SCIM bearer tokens."""

from __future__ import annotations

import click

from bridge.cli.base import State, cli_actor, pass_state, print_json, table, utc_now


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
    from bridge.provision.manual import create_scim_token

    made = create_scim_token(
        state.creating_runtime(),
        tenant,
        label=label,
        read_only=read_only,
        expires_days=expires_days,
        actor=cli_actor(),
        now=utc_now(),
    )
    until = f", expires {made.expires_at:%Y-%m-%d %H:%M} UTC" if made.expires_at else ""
    click.echo(
        f"token {made.id} for tenant {tenant}{' (read-only)' if read_only else ''}{until}; "
        "store it now, it is not shown again:"
    )
    click.echo(made.token)


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
    from bridge.provision.manual import revoke_scim_token

    revoke_scim_token(state.runtime, token_id, actor=cli_actor(), now=utc_now())
    click.echo(f"token {token_id} revoked")
