"""The SCIM guard's rules (issue 17): which account plans take someone's access away, and when
a window of them is more than an identity provider should push without a person looking.

An identity provider deprovisions people one request at a time (Entra sends `active:false` for
each person a scope change left out), so no single write looks alarming: the guard counts them
in a sliding window per tenant and holds those past the limit (bridge.engine.guard).
"""

from __future__ import annotations

import math

from bridge.core.lifecycle import Event
from bridge.core.plan import AccountPlan

# What takes access away: a suspension, an archive, a revocation that leaves no role.
DEPROVISIONING = frozenset({Event.SUSPEND, Event.ARCHIVE, Event.REVOKE_ALL_ROLES})

# The identity digest a DELETE is held and kept under: the identity is gone, not changed.
DELETED = "deleted"


def deprovisions(plan: AccountPlan) -> bool:
    """Whether the plan takes an existing account's access away."""
    return plan.account_id is not None and any(
        getattr(change, "event", None) in DEPROVISIONING for change in plan.changes
    )


def allowed(live_accounts: int, limit: float, minimum: int) -> int:
    """How many deprovisionings the window lets through: `limit` of the live accounts, and never
    fewer than `minimum` (a small tenant's few leavers are not a mass deprovisioning)."""
    return max(math.floor(limit * live_accounts), minimum)


def over_limit(count: int, live_accounts: int, limit: float, minimum: int) -> bool:
    """Whether `count` deprovisionings in the window (this one included) is past both limits."""
    return count > allowed(live_accounts, limit, minimum)
