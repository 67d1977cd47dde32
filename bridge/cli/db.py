"""`bridge db`: database maintenance."""

from __future__ import annotations

import click

from bridge.cli.base import State, pass_state


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_state
def db_upgrade(state: State) -> None:
    """Apply migrations (idempotent)."""
    from bridge.config import load_config
    from bridge.store.db import make_engine, upgrade

    config = load_config(state.path)
    before, after = upgrade(make_engine(config.database_url, origin=config.origin))
    if before == after:
        click.echo(f"database is up to date (revision {after})")
    else:
        click.echo(f"database upgraded from {before or 'empty'} to {after}")
    state.runtime  # noqa: B018 - declares the config's tenants now
