"""The mapping impact preview (issue 16): what an edited mapping would do to a tenant, with
nothing applied.

The edited text goes through the same parser and checks as a mapping file at start-up
(`core.mapping.mapping_from_text`), so a broken one gives the same one-line `ConfigError`
naming the key. Every live account of the tenant is then planned against it exactly as
`bridge replan --dry-run` plans them (`engine.replan.plan_source`: each source's people from
their stored identities, the tenant's seat limit, every role's `max_holders`, the seats and
limited roles of the other sources as they stand), all in one read-only transaction: nothing is
written, not even the `denied` reasons a real re-plan would store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.core.mapping import RoleMapping, mapping_from_text
from bridge.core.plan import GrantRoles, RevokeRoles
from bridge.engine.replan import plan_source
from bridge.provision.replan import TenantView, tenant_view
from bridge.runtime import Runtime
from bridge.store.accounts import live_accounts, refused_accounts, seat_counts, seats_outside
from bridge.store.db import read_only_transaction

ORIGIN = "<pasted mapping>"


@dataclass(frozen=True)
class RoleMove:
    user_name: str
    account_id: str | None
    role: str
    rule: str | None = None  # the rule that grants it (gains only)


@dataclass(frozen=True)
class Refused:
    user_name: str
    account_id: str | None
    role: str
    reason: str  # seat_limit, max_holders, external_not_allowed


@dataclass
class Preview:
    tenant: str
    considered: int  # live accounts planned
    seat_limit: int | None
    seats_before: int  # under the current mapping, as the accounts stand
    seats_after: int  # under the edited mapping, once its plan were applied
    gains: list[RoleMove] = field(default_factory=list)
    losses: list[RoleMove] = field(default_factory=list)
    refusals: list[Refused] = field(default_factory=list)
    status_changes: list[tuple[str, str, str]] = field(default_factory=list)  # user, before, after
    # Seats per module of the edited mapping's [modules]: before (under the current mapping, a
    # module it does not have counts 0), after, and the edited limit.
    modules: dict[str, dict[str, int | None]] = field(default_factory=dict)

    @property
    def seat_delta(self) -> int:
        return self.seats_after - self.seats_before

    def role_deltas(self) -> dict[str, tuple[int, int]]:
        """role -> (people who gain it, people who lose it)."""
        out: dict[str, tuple[int, int]] = {}
        for move in self.gains:
            up, down = out.get(move.role, (0, 0))
            out[move.role] = (up + 1, down)
        for move in self.losses:
            up, down = out.get(move.role, (0, 0))
            out[move.role] = (up, down + 1)
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "considered": self.considered,
            "seatLimit": self.seat_limit,
            "seatsBefore": self.seats_before,
            "seatsAfter": self.seats_after,
            "seatDelta": self.seat_delta,
            "roles": {r: {"gained": g, "lost": lost} for r, (g, lost) in self.role_deltas().items()},
            "gains": [dataclasses.asdict(m) for m in self.gains],
            "losses": [{k: v for k, v in dataclasses.asdict(m).items() if k != "rule"} for m in self.losses],
            "refused": [dataclasses.asdict(r) for r in self.refusals],
            "statusChanges": [{"userName": u, "from": b, "to": a} for u, b, a in self.status_changes],
            "moduleSeats": {m: dict(v) for m, v in self.modules.items()},
        }


def preview_mapping(
    runtime: Runtime,
    tenant_name: str,
    mapping_text: str,
    *,
    origin: str = ORIGIN,
    now: datetime | None = None,
) -> Preview:
    """Plan every live account of the tenant against `mapping_text` and say who would gain and
    lose which role, the seat count before and after, and who the rules grant a role the seat
    limit, a role's `max_holders` or the user type leaves out. Raises `ConfigError` (one line,
    naming `origin` and the key) for a mapping bridge would refuse at start-up; writes nothing."""
    mapping = mapping_from_text(mapping_text, origin)
    return preview_parsed(runtime, tenant_name, mapping, now=now)


def preview_parsed(runtime: Runtime, tenant_name: str, mapping: RoleMapping, *, now: datetime | None = None) -> Preview:
    now = now or datetime.now(UTC)
    tenant_cfg = runtime.config.tenant_settings(tenant_name)
    current = tenant_cfg.mapping()
    edited_cfg = dataclasses.replace(tenant_cfg, _mapping=[mapping])
    with read_only_transaction(runtime.engine) as conn:
        stored = tenant_view(conn, tenant_cfg)
        view = TenantView(id=stored.id, name=stored.name, seat_limit=stored.seat_limit, config=edited_cfg)
        counts_suspended = tenant_cfg.suspended_counts_as_seat
        seats_before = seats_outside(conn, view.id, current, suspended_counts_as_seat=counts_suspended)
        # The same accounts judged by the edited mapping's billable roles, before its plan changes any.
        seats_after = seats_outside(conn, view.id, mapping, suspended_counts_as_seat=counts_suspended)
        modules_before: dict[str, int] = {}
        modules_after: dict[str, int] = {}
        if mapping.modules:
            modules_before = seat_counts(conn, view.id, current, suspended_counts_as_seat=counts_suspended)[1]
            modules_after = seat_counts(conn, view.id, mapping, suspended_counts_as_seat=counts_suspended)[1]
        live = live_accounts(conn, view.id)
        result = Preview(
            tenant=view.name,
            considered=sum(len(a) for a in live.values()),
            seat_limit=view.seat_limit,
            seats_before=seats_before,
            seats_after=seats_after,
        )
        planned: set[str] = set()
        for source, anchors in sorted(live.items()):
            plan, _ = plan_source(conn, view, source, anchors, now, whole_source=True)
            result.seats_after += plan.seat_delta
            for module_id, delta in plan.seat_delta_by_module.items():
                modules_after[module_id] = modules_after.get(module_id, 0) + delta
            for account in plan.accounts:
                if account.account_id is not None:
                    planned.add(account.account_id)
                for change in account.changes:
                    if isinstance(change, GrantRoles):
                        result.gains += [
                            RoleMove(account.user_name, account.account_id, role, rule)
                            for role, rule in sorted(change.roles.items())
                        ]
                    elif isinstance(change, RevokeRoles):
                        result.losses += [
                            RoleMove(account.user_name, account.account_id, role) for role in change.roles
                        ]
                if account.before is not None and account.before is not account.after:
                    result.status_changes.append((account.user_name, account.before.value, account.after.value))
                result.refusals += [
                    Refused(account.user_name, account.account_id, role, why)
                    for role, why in sorted(account.denied.items())
                ]
        # Whoever the plan leaves as they are keeps the refusals stored with them (a plan that
        # does not change a person's `denied` is not listed in it).
        kept, _ = refused_accounts(conn, view.id, limit=10**9)
        result.refusals += [
            Refused(r.user_name, r.account_id, role, why)
            for r in kept
            if r.account_id not in planned
            for role, why in sorted(r.denied.items())
        ]
    key = lambda m: (m.user_name.casefold(), m.role)  # noqa: E731
    result.gains.sort(key=key)
    result.losses.sort(key=key)
    result.refusals.sort(key=key)
    result.status_changes.sort(key=lambda c: c[0].casefold())
    result.modules = {
        m.id: {"before": modules_before.get(m.id, 0), "after": modules_after.get(m.id, 0), "limit": m.seat_limit}
        for m in mapping.modules.values()
    }
    return result
