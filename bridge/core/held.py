"""Held plans: a `Plan` a safety check refused, written down so that it can be reviewed and then
applied exactly as it was reviewed (issue 17).

Pure: turning a plan into JSON and back (the round trip gives an equal `Plan`, which
`provision.apply` carries out as it would have the first time), the digest of what a plan was
computed from, and the one line per account a review shows. Nothing here knows where the plan
came from: a directory sync and the SCIM guard hold plans alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from bridge.core.lifecycle import Event, Status
from bridge.core.model import SourceUser
from bridge.core.plan import (
    AccountPlan,
    AccountState,
    Activate,
    Archive,
    Change,
    Create,
    GrantRoles,
    Plan,
    Reactivate,
    Recreate,
    ResendActivation,
    Resume,
    RevokeRoles,
    Subject,
    Suspend,
    UpdateAttributes,
    Usage,
    identity_digest,
)

# The statuses of a held plan (contract). A plan superseded by a newer hold of its source is
# `expired` too, with the newer plan's id: no person decided it, time (and the source) did.
HELD, APPROVED, REJECTED, EXPIRED = "held", "approved", "rejected", "expired"
STATUSES = (HELD, APPROVED, REJECTED, EXPIRED)

# Why a plan is held: the safety check that refused it, or an approval that found the source
# changed since the plan it was asked to approve (the new plan is held instead).
DELETION_THRESHOLD, EMPTY_READ, SOURCE_CHANGED = "deletion_threshold", "empty_read", "source_changed"
# The SCIM guard's plans (bridge.engine.guard): deprovisioning pushed over SCIM past the window's limit.
SCIM_DEPROVISION_LIMIT = "scim_deprovision_limit"
# In a SCIM guard's account part: the identity digest the held change was computed from.
HELD_DIGEST = "heldDigest"

# The counts of `sync --json`, kept with a held plan.
COUNT_KEYS = ("created", "updated", "rolesChanged", "suspended", "archived", "reactivated", "unchanged")

_CHANGES: dict[str, type] = {
    "recreate": Recreate,
    "create": Create,
    "update": UpdateAttributes,
    "grant_roles": GrantRoles,
    "revoke_roles": RevokeRoles,
    "suspend": Suspend,
    "resume": Resume,
    "archive": Archive,
    "reactivate": Reactivate,
    "resend_activation": ResendActivation,
    "activate": Activate,
}

# The change a review names for an account with several (an archive revokes roles first; the
# archive is what the reviewer must see).
_PRECEDENCE = (
    "recreate",
    "archive",
    "create",
    "reactivate",
    "suspend",
    "resume",
    "grant_roles",
    "revoke_roles",
    "update",
    "resend_activation",
    "activate",
)


def plan_counts(plan: Plan) -> dict[str, int]:
    """The counts `sync --json` prints for this plan, with its seat delta and seat refusals."""
    return {**plan.counts(), "seatDelta": plan.seat_delta, "seatRefused": len(plan.seat_refused)}


# ---- to JSON and back ----------------------------------------------------------------------


def plan_header(plan: Plan) -> dict[str, Any]:
    """The plan without its accounts (those are stored one per row)."""
    return {
        "source": plan.source,
        "unchanged": plan.unchanged,
        "activeBefore": plan.active_before,
        "seatRefused": list(plan.seat_refused),
        "modules": list(plan.modules),
        "moduleRefused": {m: list(names) for m, names in plan.module_refused.items()},
    }


def plan_from_json(header: Mapping[str, Any], accounts: Iterable[Mapping[str, Any]]) -> Plan:
    return Plan(
        source=header["source"],
        accounts=[account_plan_from_json(a) for a in accounts],
        unchanged=int(header["unchanged"]),
        active_before=int(header["activeBefore"]),
        seat_refused=tuple(header.get("seatRefused") or ()),
        modules=tuple(header.get("modules") or ()),
        module_refused={m: tuple(names) for m, names in (header.get("moduleRefused") or {}).items()},
    )


def _status(value: str | None) -> Status | None:
    return Status(value) if value is not None else None


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def change_to_json(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(change):  # type: ignore[arg-type]
        value = getattr(change, f.name)
        if isinstance(value, Event | Status):
            value = value.value
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif f.name == "fields":
            value = {k: [before, after] for k, (before, after) in value.items()}
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def change_from_json(data: Mapping[str, Any]) -> Change:
    cls = _CHANGES[data["kind"]]
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name == "event":
            value = Event(value) if value is not None else None
        elif f.name in ("target", "old_status"):
            value = Status(value)
        elif f.name == "old_roles":
            value = tuple(value)
        elif f.name == "expires_at":
            value = _parse_when(value)
        elif f.name == "fields":
            value = {k: (pair[0], pair[1]) for k, pair in value.items()}
        elif f.name == "roles" and cls is RevokeRoles:
            value = tuple(value)
        elif f.name == "roles":
            value = dict(value)
        values[f.name] = value
    return cls(**values)  # type: ignore[no-any-return]


def user_to_json(user: SourceUser) -> dict[str, Any]:
    return {
        "anchor": user.anchor,
        "user_name": user.user_name,
        "email": user.email,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "display_name": user.display_name,
        "active": user.active,
        "dn": user.dn,
        "attributes": {k: list(v) for k, v in user.attributes.items()},
        "groups": list(user.groups),
        "scim_roles": list(user.scim_roles),
        "preferred_language": user.preferred_language,
    }


def user_from_json(data: Mapping[str, Any]) -> SourceUser:
    return SourceUser(
        anchor=data["anchor"],
        user_name=data["user_name"],
        email=data["email"],
        given_name=data["given_name"],
        family_name=data["family_name"],
        display_name=data["display_name"],
        active=bool(data["active"]),
        dn=data["dn"],
        attributes={k: tuple(v) for k, v in data["attributes"].items()},
        groups=tuple(data["groups"]),
        scim_roles=tuple(data["scim_roles"]),
        preferred_language=data["preferred_language"],
    )


def account_plan_to_json(plan: AccountPlan) -> dict[str, Any]:
    return {
        "anchor": plan.anchor,
        "source": plan.source,
        "account_id": plan.account_id,
        "user_name": plan.user_name,
        "before": plan.before.value if plan.before else None,
        "after": plan.after.value,
        "status_before_suspend": plan.status_before_suspend.value if plan.status_before_suspend else None,
        "roles_after": sorted(plan.roles_after),
        "changes": [change_to_json(c) for c in plan.changes],
        "granted": dict(plan.granted),
        "denied": dict(plan.denied),
        "user": user_to_json(plan.user) if plan.user is not None else None,
        "identity_changed": plan.identity_changed,
        "seat_before": plan.seat_before,
        "seat_after": plan.seat_after,
        "user_type": plan.user_type,
        "digest": plan.digest,
        "denied_changed": plan.denied_changed,
        "modules_before": sorted(plan.modules_before),
        "modules_after": sorted(plan.modules_after),
    }


def account_plan_from_json(data: Mapping[str, Any]) -> AccountPlan:
    after = _status(data["after"])
    assert after is not None
    return AccountPlan(
        anchor=data["anchor"],
        source=data["source"],
        account_id=data["account_id"],
        user_name=data["user_name"],
        before=_status(data["before"]),
        after=after,
        status_before_suspend=_status(data["status_before_suspend"]),
        roles_after=frozenset(data["roles_after"]),
        changes=[change_from_json(c) for c in data["changes"]],
        granted=dict(data["granted"]),
        denied=dict(data["denied"]),
        user=user_from_json(data["user"]) if data["user"] is not None else None,
        identity_changed=bool(data["identity_changed"]),
        seat_before=bool(data["seat_before"]),
        seat_after=bool(data["seat_after"]),
        user_type=data["user_type"],
        digest=data["digest"],
        denied_changed=bool(data["denied_changed"]),
        modules_before=frozenset(data.get("modules_before") or ()),
        modules_after=frozenset(data.get("modules_after") or ()),
    )


def main_change(plan: AccountPlan) -> tuple[str, str | None]:
    """(kind, reason) of the change a review shows for this account; ("identity", None) for an
    account whose stored identity alone changes."""
    by_kind = {c.kind: c for c in plan.changes}
    for kind in _PRECEDENCE:
        if kind in by_kind:
            return kind, by_kind[kind].reason
    return "identity", None


# ---- what a plan was computed from ---------------------------------------------------------


def _canonical(value: Any) -> Any:
    if isinstance(value, Status | Event):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Mapping):
        return sorted((str(k), _canonical(v)) for k, v in value.items())
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value


def inputs_digest(
    subjects: Iterable[Subject], accounts: Mapping[str, AccountState], usage: Usage, fingerprint: str
) -> str:
    """A digest of everything a plan is computed from: what the source says of each person (the
    identity digest and the effective groups), the source's accounts as they stand, the seats and
    limited roles held outside the plan, and the tenant's mapping fingerprint. Equal digests plan
    alike, so a held plan whose digest still holds is the plan a new read would make; a
    different one means the source, the accounts or the mapping changed since the review."""
    people = sorted(
        (s.user.anchor, identity_digest(s.user), [(g.anchor, g.name, g.dn) for g in s.groups]) for s in subjects
    )
    stored = sorted(
        (anchor, [(f.name, _canonical(getattr(a, f.name))) for f in fields(a)]) for anchor, a in accounts.items()
    )
    payload = {
        "people": people,
        "accounts": stored,
        # Module seats only when there are some, so the digest of a plan without modules is the
        # one it had before modules existed (a plan held across the upgrade stays approvable).
        "usage": [usage.seats, _canonical(usage.holders)]
        + ([_canonical(usage.module_seats)] if usage.module_seats else []),
        "mapping": fingerprint,
    }
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()
