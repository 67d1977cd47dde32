"""What every command group shares: the state passed to commands, the group that renders
bridge's errors, the stream that escapes terminal controls, and the output helpers.

Exit codes (contract): 0 success, 1 a failed operation, 2 a usage or configuration error.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import DBAPIError

from bridge.errors import Ambiguous, BridgeError, NotFound
from bridge.runtime import Runtime, config_path, open_runtime


class State:
    def __init__(self, config_option: str | None) -> None:
        self.path: Path = config_path(config_option)
        # Only the commands that set a deployment up create its SQLite file (`creating_runtime`):
        # one that reads, or changes what exists, on a missing file says so instead of reading
        # an empty database it made (docs/operations/deploy.md).
        self.create_database = False

    @cached_property
    def runtime(self) -> Runtime:
        return open_runtime(self.path, create=self.create_database)

    def creating_runtime(self) -> Runtime:
        """The runtime of a set-up command (`tenants add`, `tokens create`, `outbox run`)."""
        self.create_database = True
        return self.runtime

    def checked_runtime(self, *, create: bool = True) -> Runtime:
        """The runtime of a command that runs the tenants' mappings (serve, scheduler, sync):
        every mapping is loaded and checked first, so a broken one stops the start (exit 2)."""
        if "runtime" not in self.__dict__:
            self.create_database = create
            self.__dict__["runtime"] = open_runtime(self.path, check=True, create=create)
        else:
            from bridge.config import check_mappings

            check_mappings(self.runtime.config)
        return self.runtime

    def tenant_name(self, explicit: str | None) -> str:
        if explicit:
            return explicit
        tenants = list(self.runtime.config.tenants)
        if len(tenants) == 1:
            return tenants[0]
        from bridge.store.db import transaction
        from bridge.store.tenants import list_tenants

        with transaction(self.runtime.engine, write=False) as conn:
            names = [t.name for t in list_tenants(conn)]
        if len(names) == 1:
            return names[0]
        raise click.UsageError(f"several tenants ({', '.join(names)}): name one with --tenant")


def _control_escapes(keep: str) -> dict[int, str]:
    """Characters a terminal obeys rather than shows (C0 and C1 controls, DEL, bidirectional
    overrides), mapped to a visible `\\uXXXX`. Inside a JSON string that is the same character
    again, so `--json` output still parses to the stored value."""
    codes = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F]
    codes += [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    return {c: f"\\u{c:04x}" for c in codes if chr(c) not in keep}


class EscapingStream:
    """A text stream that escapes terminal controls: names and addresses come from directories
    and identity providers, and one with an escape sequence must not rewrite an operator's
    terminal or a table. Without `buffer`, click writes through it instead of around it."""

    def __init__(self, stream: Any, keep: str) -> None:
        self._stream = stream
        self._table = _control_escapes(keep)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError("EscapingStream takes text")  # click probes for binary streams with b""
        return self._stream.write(text.translate(self._table))

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self._stream, name)


class BridgeGroup(click.Group):
    """Renders bridge's own errors as one line on stderr with the contract's exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        out, err = sys.stdout, sys.stderr
        # stderr keeps \r: the progress line redraws itself with it.
        sys.stdout, sys.stderr = EscapingStream(out, "\n\t"), EscapingStream(err, "\n\t\r")
        try:
            return self._invoke(ctx)
        finally:
            sys.stdout, sys.stderr = out, err

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (NotFound, Ambiguous) as exc:
            click.echo(f"bridge: {exc}", err=True)
            sys.exit(1)
        except BridgeError as exc:
            click.echo(f"bridge: {exc}", err=True)
            sys.exit(exc.exit_code)
        except DBAPIError as exc:
            from bridge.store.db import is_database_failure, unavailable

            if not is_database_failure(exc):
                raise  # a statement the database refused: a bug, whose traceback is wanted
            # Locked, gone, corrupt or unreachable after the start: one line naming the database.
            runtime = ctx.obj.__dict__.get("runtime") if isinstance(ctx.obj, State) else None
            url = runtime.engine.url if runtime is not None else None
            click.echo(f"bridge: {unavailable(url, exc)}", err=True)
            sys.exit(1)
        except Exception as exc:
            from bridge.directory.ldif import LdifError

            if isinstance(exc, LdifError):
                click.echo(f"bridge: {exc}", err=True)
                sys.exit(2)
            raise


def utc_now() -> datetime:
    return datetime.now(UTC)


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


pass_state = click.make_pass_decorator(State)
