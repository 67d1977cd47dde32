"""The `bridge` command: parse arguments, call the core and the store, print.

One module per command group; what they share (state, error rendering, output helpers) is in
`bridge.cli.base`. Every command is added here by name, so the whole command tree can be read in
one place. What a command needs beyond click and `bridge.cli.base` is imported inside it, which
keeps `bridge --help` and every start quick.

Exit codes (contract): 0 success, 1 a failed operation, 2 a usage or configuration error.
"""

from __future__ import annotations

import click

from bridge.cli import admins, audit, db, explain, jobs, outbox, plans, replan, serve, sync, tenants, tokens, users
from bridge.cli.base import BridgeGroup, State


@click.group(cls=BridgeGroup)
@click.option(
    "--config", "config_option", metavar="PATH", help="Config file (default $BRIDGE_CONFIG, then ./bridge.toml)."
)
@click.version_option(package_name="bridge")
@click.pass_context
def main(ctx: click.Context, config_option: str | None) -> None:
    """bridge: provision a product's accounts from a directory or an identity provider."""
    ctx.obj = State(config_option)


main.add_command(db.db)
main.add_command(tenants.tenants)
main.add_command(tokens.tokens)
main.add_command(sync.sync)
main.add_command(replan.replan)
main.add_command(users.users)
main.add_command(explain.explain)
main.add_command(audit.audit)
main.add_command(serve.serve)
main.add_command(jobs.jobs)
main.add_command(jobs.scheduler)
main.add_command(outbox.outbox)
main.add_command(admins.admins)
main.add_command(plans.plans)

__all__ = ["main"]
