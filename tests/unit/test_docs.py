"""The README and the packaging metadata describe what bridge really offers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click

from bridge.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    paths = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = (*prefix, name)
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
        else:
            paths.append(path)
    return paths


def _readme_commands() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return section


def test_every_cli_command_is_in_the_readme_commands_table() -> None:
    table = _readme_commands()
    missing = []
    for path in _command_paths(main):
        *groups, leaf = path
        # A row names the group once ("bridge users list/show") and later leaves alone ("/ `tokens revoke ID`").
        if not re.search(rf"\b{re.escape(leaf)}\b", table) or any(g not in table for g in groups):
            missing.append(" ".join(path))
    assert not missing, f"commands missing from README's Commands table: {missing}"


def test_readme_shows_required_options_of_every_command() -> None:
    table = _readme_commands()
    ctx = click.Context(main)
    for path in _command_paths(main):
        command: click.Command = main
        for part in path:
            assert isinstance(command, click.Group)
            command = command.get_command(ctx, part)  # type: ignore[assignment]
        for param in command.params:
            if isinstance(param, click.Option) and param.required:
                flag = param.opts[0]
                rows = [line for line in table.splitlines() if f"{path[-1]} " in line]
                assert any(flag in row for row in rows), f"`{' '.join(path)}` requires {flag}, not shown in README"


def test_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # A table here is deprecated by setuptools (PEP 639) and announced for removal.
    assert isinstance(project["license"], str)
    assert re.fullmatch(r"[A-Za-z0-9.\-]+( (AND|OR|WITH) [A-Za-z0-9.\-]+)*", project["license"])


def test_example_config_names_a_help_contact_other_than_the_no_reply_sender() -> None:
    config = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    sender = config["email"]["from"]
    for tenant in config["tenants"]:
        contact = tenant.get("support_contact")
        assert contact, f"tenant {tenant['name']} has no support_contact: its mails would name {sender}"
        assert "no-reply" not in contact
