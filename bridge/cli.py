"""The `bridge` command: parse arguments, call the core and the store, print.

Exit codes (contract): 0 success, 1 a failed operation, 2 a usage or configuration error.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
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
        from bridge.store.repo import list_tenants

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


def _now() -> datetime:
    return datetime.now(UTC)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


pass_state = click.make_pass_decorator(State)


@click.group(cls=BridgeGroup)
@click.option(
    "--config", "config_option", metavar="PATH", help="Config file (default $BRIDGE_CONFIG, then ./bridge.toml)."
)
@click.version_option(package_name="bridge")
@click.pass_context
def main(ctx: click.Context, config_option: str | None) -> None:
    """bridge: provision a product's accounts from a directory or an identity provider."""
    ctx.obj = State(config_option)


# ---- db ------------------------------------------------------------------------------------


@main.group()
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


# ---- tenants -------------------------------------------------------------------------------


@main.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("add")
@click.argument("name")
@click.option("--seat-limit", type=click.IntRange(min=0), default=None)
@pass_state
def tenants_add(state: State, name: str, seat_limit: int | None) -> None:
    """Add a tenant (idempotent)."""
    from bridge.store.db import transaction
    from bridge.store.repo import ensure_tenant

    with transaction(state.creating_runtime().engine) as conn:
        row = ensure_tenant(conn, name, seat_limit, _now(), update_limit=seat_limit is not None)
    click.echo(
        f"tenant {row.name} (id {row.id}, seat limit {row.seat_limit if row.seat_limit is not None else 'none'})"
    )


@tenants.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def tenants_list(state: State, as_json: bool) -> None:
    from bridge.store.db import transaction
    from bridge.store.repo import list_tenants

    with transaction(state.runtime.engine, write=False) as conn:
        rows = list_tenants(conn)
    configured = state.runtime.config.tenants
    data = [
        {
            "name": t.name,
            "seatLimit": configured[t.name].seat_limit
            if t.name in configured and configured[t.name].seat_limit is not None
            else t.seat_limit,
            "configured": t.name in configured,
            "created": t.created_at.isoformat(),
        }
        for t in rows
    ]
    if as_json:
        _print_json(data)
    else:
        _table(
            ["NAME", "SEAT LIMIT", "IN CONFIG", "CREATED"],
            [[d["name"], d["seatLimit"], d["configured"], d["created"]] for d in data],
        )


# ---- tokens --------------------------------------------------------------------------------


@main.group()
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
    from bridge.store.repo import create_token, get_tenant

    now = _now()
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
    from bridge.store.repo import get_tenant, list_tokens

    with transaction(state.runtime.engine, write=False) as conn:
        data = list_tokens(conn, get_tenant(conn, tenant).id)
    if as_json:
        _print_json(data)
    else:
        _table(
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
    from bridge.store.repo import revoke_token

    with transaction(state.runtime.engine) as conn:
        if not revoke_token(conn, token_id, _now()):
            raise NotFound(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")


# ---- sync ----------------------------------------------------------------------------------


def _progress_printer(enabled: bool) -> Callable[[str, int, int], None] | None:
    if not enabled:
        return None

    def show(phase: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        click.echo(f"\r{phase} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", nl=done >= total, err=True)

    return show


def _print_plan(result: Any) -> None:
    plan = result.plan
    if plan is None:
        return
    rows = []
    for account in sorted(plan.accounts, key=lambda a: a.user_name.casefold()):
        if not account.changes:
            continue
        kinds = ", ".join(c.kind for c in account.changes)
        rows.append(
            [
                account.user_name,
                (account.before.value if account.before else "-") + " -> " + account.after.value,
                kinds,
                ", ".join(sorted(account.roles_after)),
                ", ".join(
                    [f"{r}: {why}" for r, why in sorted(account.denied.items())]
                    + [f"activation mail: {p}" for p in [account.activation_problem()] if p]
                ),
            ]
        )
    if rows:
        _table(["USER", "STATUS", "CHANGES", "ROLES", "LEFT OUT"], rows)
        click.echo("")


@main.command()
@click.option("--source", "source_name", default=None, help="One source (default: every configured source).")
@click.option(
    "--full",
    is_flag=True,
    help="Full reconciliation. Without it an LDAP source reads only what changed since its last run "
    "(delta; leavers wait for the next full run); its first run, and LDIF sources, are always full.",
)
@click.option("--dry-run", is_flag=True, help="Plan and print, write nothing.")
@click.option("--force", is_flag=True, help="Override the deletion threshold and the empty-read check.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source, one per line.")
@click.option("--history", is_flag=True, help="Show recent runs instead of running.")
@pass_state
def sync(
    state: State, source_name: str | None, full: bool, dry_run: bool, force: bool, as_json: bool, history: bool
) -> None:
    """Run a directory sync now."""
    from bridge.engine.sync import run_sync

    if history:
        _sync_history(state.runtime, source_name, as_json)
        return
    runtime = state.checked_runtime(create=not dry_run)  # a dry run writes nothing, not even a file
    names = [source_name] if source_name else list(runtime.config.sources)
    if not names:
        raise click.UsageError(f"{runtime.config.origin}: no [[sources]] configured")
    show_progress = sys.stderr.isatty() and not as_json
    failed = False
    for name in names:
        result = run_sync(
            runtime.config,
            runtime.engine,
            name,
            dry_run=dry_run,
            force=force,
            mode="full" if full else "delta",
            progress=_progress_printer(show_progress),
            actor=_actor(),
        )
        failed = failed or result.aborted
        if as_json:
            click.echo(json.dumps(result.to_json(), ensure_ascii=False))
            continue
        if dry_run:
            _print_plan(result)
            if result.seat_refused:
                click.echo(f"left out by the seat limit: {', '.join(result.seat_refused)}")
        data = result.to_json()
        if result.aborted:
            # Nothing was written: what the plan held is what it would have done, never "changed".
            planned = data["planned"] or {}
            verb, shown, seats = "nothing written; would have changed", planned, ""
        else:
            verb, shown = ("would change" if dry_run else "changed"), data
            seats = f"seat delta {data['seatDelta']:+d}; "
            if data["seatRefused"]:
                seats += f"seat limit refused {data['seatRefused']}; "
        counts = ", ".join(
            f"{k} {shown.get(k, 0)}"
            for k in ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")
        )
        click.echo(f"{name} ({result.tenant}, {result.mode}): {verb}: {counts}; {seats}{data['durationSeconds']:.2f}s")
        for error in result.errors:
            click.echo(f"  error: {error}", err=True)
        for warning in result.warnings:
            click.echo(f"  warning: {warning}", err=True)
        if result.aborted:
            click.echo(f"{name}: aborted: {result.reason}", err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.option("--tenant", required=True, help="The tenant whose accounts are re-planned.")
@click.option("--dry-run", is_flag=True, help="Plan and print what would change, write nothing.")
@click.option("--json", "as_json", is_flag=True, help='The sync JSON shape, with source "replan".')
@pass_state
def replan(state: State, tenant: str, dry_run: bool, as_json: bool) -> None:
    """Re-plan every account of a tenant (SCIM and directory alike) from what is stored about it."""
    from bridge.engine.replan import run_replan

    runtime = state.checked_runtime()
    result = run_replan(runtime.config, runtime.engine, tenant, dry_run=dry_run, actor=_actor())
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        if dry_run:
            _print_plan(result)
            if result.seat_refused:
                click.echo(f"left out by the seat limit: {', '.join(result.seat_refused)}")
        data = result.to_json()
        counts = ", ".join(
            f"{k} {data.get(k, 0)}"
            for k in ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")
        )
        seats = f"seat delta {data['seatDelta']:+d}; "
        if data["seatRefused"]:
            seats += f"seat limit refused {data['seatRefused']}; "
        verb = "would change" if dry_run else "changed"
        click.echo(f"replan ({tenant}): {verb}: {counts}; {seats}{data['durationSeconds']:.2f}s")
        for error in result.errors:
            click.echo(f"  error: {error}", err=True)
    if result.errors:
        sys.exit(1)


def _sync_history(runtime: Runtime, source_name: str | None, as_json: bool) -> None:
    from bridge.store.db import transaction
    from bridge.store.repo import recent_sync_runs

    with transaction(runtime.engine, write=False) as conn:
        rows = recent_sync_runs(conn, source=source_name)
    data = [
        {
            "id": r.id,
            "source": r.source,
            "tenant": r.tenant,
            "mode": r.mode,
            "outcome": r.outcome,
            "started": r.started_at.isoformat(),
            "finished": r.finished_at.isoformat() if r.finished_at else None,
            "reason": r.reason,
            "counts": r.counts or {},
            "planned": r.planned,
            "forced": r.forced,
            "errors": len(r.errors or []),
            "warnings": list(r.warnings or []),
            "correlationId": r.correlation_id,
        }
        for r in rows
    ]
    if as_json:
        _print_json(data)
        return
    _table(
        ["ID", "SOURCE", "MODE", "STARTED", "OUTCOME", "CREATED", "ARCHIVED", "ERRORS", "WARNINGS", "REASON"],
        [
            [
                d["id"],
                d["source"],
                d["mode"],
                d["started"],
                d["outcome"],
                _applied(d, "created"),
                _applied(d, "archived"),
                d["errors"],
                len(d["warnings"]),
                d["reason"] or (f"forced by {d['forced']['actor']} ({d['forced']['check']})" if d["forced"] else ""),
            ]
            for d in data
        ],
    )


def _applied(run: dict[str, Any], key: str) -> str:
    """A history count: what the run applied; an aborted run applied nothing (`0, would 7`)."""
    applied = int(run["counts"].get(key, 0))
    if run["outcome"] == "aborted" and (run["planned"] or {}).get(key):
        return f"{applied} (would {run['planned'][key]})"
    return str(applied)


# ---- users ---------------------------------------------------------------------------------


def _account_json(
    tenant: str, row: Any, roles: list[str], groups: list[str], external_id: str | None
) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": tenant,
        "userName": row.user_name,
        "externalId": external_id,
        "email": row.email,
        "givenName": row.given_name,
        "familyName": row.family_name,
        "status": row.status,
        "userType": row.user_type,
        "roles": sorted(roles),
        "groups": groups,
        "source": row.source,
        "created": row.created_at.isoformat(),
        "lastModified": row.updated_at.isoformat(),
        "expires": row.expires_at.isoformat() if row.expires_at else None,
        "leftOut": dict(row.denied or {}),
    }


def _load_accounts_json(conn: Any, tenant: Any, rows: Sequence[Any]) -> list[dict[str, Any]]:
    from bridge.store.identities import account_groups
    from bridge.store.repo import account_roles
    from bridge.store.tables import Identity

    ids = [r.id for r in rows]
    roles = account_roles(conn, ids)
    groups = account_groups(conn, tenant.id, rows)
    ident = Identity.__table__
    external: dict[str, str | None] = {}
    for start in range(0, len(ids), 500):
        for identity_id, external_id, anchor in conn.execute(
            select(ident.c.id, ident.c.external_id, ident.c.anchor).where(ident.c.id.in_(ids[start : start + 500]))
        ):
            external[identity_id] = external_id or anchor
    return [
        _account_json(
            tenant.name, r, [role for role, _ in roles.get(r.id, [])], groups.get(r.id, []), external.get(r.id)
        )
        for r in rows
    ]


@main.group()
def users() -> None:
    """Accounts and manual lifecycle actions."""


STATUSES = ["no_access", "pending", "active", "suspended", "archived"]


@users.command("list")
@click.option("--tenant", default=None)
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def users_list(state: State, tenant: str | None, status: str | None, as_json: bool) -> None:
    from bridge.store.db import transaction
    from bridge.store.repo import accounts as accounts_table
    from bridge.store.repo import get_tenant

    with transaction(state.runtime.engine, write=False) as conn:
        tenant_row = get_tenant(conn, state.tenant_name(tenant))
        query = select(accounts_table).where(accounts_table.c.tenant_id == tenant_row.id)
        if status:
            query = query.where(accounts_table.c.status == status)
        rows = conn.execute(query.order_by(accounts_table.c.user_name_norm)).all()
        data = _load_accounts_json(conn, tenant_row, rows)
    if as_json:
        _print_json(data)
        return
    _table(
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
    from bridge.notify.outbox import account_mail
    from bridge.store.db import transaction
    from bridge.store.repo import account_roles, find_account, get_tenant, list_audit

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
        _print_json(data)
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
    for m in mail:
        # Mail that did not go out, and why: the first place to look when someone says
        # "I never got the activation mail".
        click.echo(f"{'mail':>13}: {m['topic']} #{m['id']} {m['status']}" + (f": {m['reason']}" if m["reason"] else ""))
    click.echo("\nhistory:")
    _table(
        ["AT", "ACTOR", "ACTION", "FROM", "TO", "REASON"],
        [[h["at"], h["actor"], h["action"], h["from"], h["to"], h["reason"]] for h in history],
    )


def _manual(state: State, user: str, tenant: str | None, action: str) -> str:
    from bridge.provision.apply import ApplyContext
    from bridge.provision.replan import (
        archive_account,
        reactivate_account,
        replan_waiting,
        resend_activation,
        room_freed,
        tenant_view,
    )
    from bridge.store.db import transaction
    from bridge.store.repo import account_roles, find_account

    runtime = state.runtime
    name = state.tenant_name(tenant)
    tenant_cfg = runtime.config.tenant_settings(name)
    with transaction(runtime.engine) as conn:
        view = tenant_view(conn, tenant_cfg)
        from bridge.store.repo import get_tenant

        tenant_row = get_tenant(conn, name)
        row = find_account(conn, tenant_row.id, user)
        ctx = ApplyContext(
            tenant_id=tenant_row.id,
            tenant_name=name,
            actor=_actor(),
            correlation_id=f"cli-{uuid.uuid4().hex[:16]}",
            now=_now(),
            webhooks=bool(runtime.config.webhook.get("url")),
            default_language=tenant_cfg.default_language,
        )
        freed = False
        if action == "archive":
            plan = archive_account(conn, row, [r for r, _ in account_roles(conn, [row.id]).get(row.id, [])], ctx)
            freed = room_freed([plan], view)
        elif action == "reactivate":
            reactivate_account(conn, view, row, ctx)
        else:
            resend_activation(conn, row, ctx)
        after = find_account(conn, tenant_row.id, row.id)
    if freed:  # the seat or limited role given up goes to whoever waits for it, at once
        replan_waiting(runtime.engine, tenant_cfg, ctx)
    return f"{after.user_name}: {row.status} -> {after.status}"


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


# ---- explain -------------------------------------------------------------------------------


@main.command()
@click.argument("user")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def explain(state: State, user: str, tenant: str | None, as_json: bool) -> None:
    """Which mapping rules grant which roles, and why the status is what it is."""
    from bridge.engine.explain import explain_account

    runtime = state.runtime
    data = explain_account(runtime, state.tenant_name(tenant), user)
    if as_json:
        _print_json(data)
        return
    click.echo(f"{data['userName']} ({data['source']}): {data['status']}, {data['userType']}")
    click.echo(f"  user type: {data['userTypeReason']}")
    click.echo("rules:" if data["mapping"] else "rules: (none: the tenant has no mapping file)")
    for rule in data["rules"]:
        mark = "MATCH" if rule["matched"] else "  -  "
        click.echo(
            f"  {mark} {rule['rule']} -> {', '.join(rule['roles'])}" + (f"  ({rule['via']})" if rule.get("via") else "")
        )
    click.echo("roles:")
    for role in data["roles"]:
        click.echo(f"  {role['role']}: {role['outcome']}" + (f" ({role['detail']})" if role.get("detail") else ""))
    if not data["roles"]:
        click.echo("  (none: no rule grants this person a role)")
    click.echo(f"status: {data['statusReason']}")


# ---- audit ---------------------------------------------------------------------------------


@main.command()
@click.option("--tenant", default=None)
@click.option("--user", default=None)
@click.option("--since", default=None, metavar="ISO8601")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_state
def audit(state: State, tenant: str | None, user: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Audit events, oldest first."""
    from bridge.store.db import transaction
    from bridge.store.repo import find_account, get_tenant, list_audit

    since_dt = None
    if since:
        try:
            since_dt = datetime.fromisoformat(since)
        except ValueError:
            raise click.BadParameter(f"not an ISO 8601 date or time: {since}", param_hint="--since") from None
        if since_dt.tzinfo is None:
            since_dt = since_dt.replace(tzinfo=UTC)
    with transaction(state.runtime.engine, write=False) as conn:
        tenant_row = get_tenant(conn, state.tenant_name(tenant))
        account_id = find_account(conn, tenant_row.id, user).id if user else None
        events = list_audit(conn, tenant_row.id, account_id=account_id, since=since_dt, limit=limit)
    data = [
        {
            "id": e.id,
            "at": e.occurred_at.isoformat(),
            "tenant": tenant_row.name,
            "account": e.account_id,
            "actor": e.actor,
            "action": e.action,
            "before": e.before,
            "after": e.after,
            "reason": e.reason,
            "correlationId": e.correlation_id,
        }
        for e in events
    ]
    if as_json:
        _print_json(data)
        return
    _table(
        ["AT", "ACTOR", "ACTION", "ACCOUNT", "FROM", "TO", "REASON"],
        [
            [
                d["at"],
                d["actor"],
                d["action"],
                d["account"] or "",
                (d["before"] or {}).get("status"),
                (d["after"] or {}).get("status"),
                d["reason"],
            ]
            for d in data
        ],
    )


# ---- serve ---------------------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Default: [server] host (127.0.0.1).")
@click.option("--port", type=int, default=None, help="Default: [server] port (8080).")
@click.option("--no-scheduler", is_flag=True, help="Serve HTTP only; run jobs elsewhere.")
@click.option(
    "--server",
    "server_name",
    type=click.Choice(["granian", "gunicorn", "waitress"]),
    default="granian",
    show_default=True,
    help="HTTP server. waitress serves from this process (no workers).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Worker processes (granian, gunicorn); 0 is the same as --server waitress.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads per worker. Default: [server] threads (8) with waitress, 4 with granian or gunicorn.",
)
@pass_state
def serve(
    state: State,
    host: str | None,
    port: int | None,
    no_scheduler: bool,
    server_name: str,
    workers: int,
    threads: int | None,
) -> None:
    """Serve the SCIM API, activation pages and health endpoints."""
    from bridge.logs import setup_logging
    from bridge.services import start_background, start_background_process

    if workers == 0:
        server_name = "waitress"
    metrics_dir = None
    if server_name != "waitress" and workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several worker processes: metrics are summed over them through files in this directory
        # (bridge.metrics). Must be set before prometheus_client is first imported.
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="bridge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        runtime = state.checked_runtime()
        from bridge.config import metrics_token

        metrics_token(runtime.config)  # a variable that is not set stops the start, not a scrape
    except BridgeError:
        if metrics_dir is not None:
            os.rmdir(metrics_dir)
        raise
    setup_logging(runtime.config.logging["format"], runtime.config.logging["level"])
    host = host or runtime.config.server["host"]
    port = port if port is not None else runtime.config.server["port"]
    described = server_name
    if server_name != "waitress":
        described += f", {workers} workers x {threads or 4} threads"

    def announce() -> None:
        # Only once the socket is bound: a start that fails to bind never claimed to serve.
        click.echo(
            f"bridge serving on http://{host}:{port} with {described} "
            f"(SCIM base {runtime.config.server['public_url']}/scim/v2)",
            err=True,
        )

    from bridge.wsgi import PortInUse, check_port_free

    try:
        check_port_free(host, port)
    except PortInUse as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if server_name != "waitress":
        # Background services (outbox worker, scheduler) run once, in a spawned process of their
        # own; the workers only answer HTTP, and the master that forks them holds no database
        # connection (bridge/services.py). See docs/benchmarks.md for why granian is the default.
        from bridge.wsgi import serve_granian, serve_gunicorn

        stop_background = start_background_process(state.path, scheduler=not no_scheduler)
        try:
            if server_name == "granian":
                serve_granian(runtime, state.path, host, port, workers, threads or 4, announce)
            else:
                serve_gunicorn(runtime, host, port, workers, threads or 4, announce)
        finally:
            stop_background()
            if metrics_dir is not None:
                import shutil

                shutil.rmtree(metrics_dir, ignore_errors=True)
        return

    from waitress import create_server

    from bridge.app import create_app

    app = create_app(runtime)
    try:
        server = create_server(
            app,
            host=host,
            port=port,
            threads=threads or int(runtime.config.server["threads"]),
            ident="bridge",
        )
    except OSError as exc:  # lost a race for the port since the check
        click.echo(f"{host}:{port} is in use" if exc.errno == errno.EADDRINUSE else f"cannot serve: {exc}", err=True)
        sys.exit(1)
    announce()
    stop_background = start_background(runtime, scheduler=not no_scheduler)
    try:
        server.run()
    except KeyboardInterrupt:  # SIGTERM (bridge.notify.worker) or Ctrl-C: a clean stop
        pass
    finally:
        server.close()
        stop_background()


# Command groups living beside their area ("module:function", the function taking the `main`
# group). Listed explicitly so a broken module fails loudly instead of hiding its commands.
EXTENSIONS: list[str] = ["bridge.cli_jobs:register", "bridge.notify.cli:register"]


def _register_extensions() -> None:
    import importlib

    for entry in EXTENSIONS:
        module_name, _, function = entry.partition(":")
        getattr(importlib.import_module(module_name), function)(main)


_register_extensions()

if __name__ == "__main__":
    main()
