"""`bridge explain`: every rule of the tenant's mapping against one person, and the outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge.core.address import ADDRESS_UNUSABLE, OUTSIDE_DOMAINS, address_problem, domain_problem
from bridge.core.lifecycle import Status
from bridge.core.mapping import RoleMapping, decide_roles, decide_user_type, rule_matches
from bridge.core.plan import MODULE_SEAT_LIMIT, RENAMED_PREFIX, build_plan, module_seats_held
from bridge.errors import BridgeError
from bridge.provision.replan import planning_fingerprint, tenant_view
from bridge.runtime import Runtime
from bridge.store.accounts import account_roles, find_account, load_account_states, usage_outside
from bridge.store.db import transaction
from bridge.store.identities import load_subjects
from bridge.store.tenants import get_tenant, stored_fingerprint

_DENIAL_TEXT = {
    "external_not_allowed": "left out: external users may not hold this role",
    "max_holders": "left out: the role's max_holders is reached (holders keep it; newcomers wait in userName order)",
    "seat_limit": "left out: the tenant's seat limit is reached",
}

_STATUS_TEXT = {
    Status.NO_ACCESS: "no_access: known person without roles (not a paid seat)",
    Status.PENDING: "pending: roles granted, waiting for the person to activate via the emailed link",
    Status.ACTIVE: "active: activated and allowed in",
    Status.SUSPENDED: "suspended: disabled in the source; resumes when enabled again",
    Status.ARCHIVED: "archived: left the source's scope or archived by an administrator; roles revoked",
}


def _denial_text(why: str, mapping: RoleMapping) -> str:
    if why.startswith(MODULE_SEAT_LIMIT):
        module_id = why[len(MODULE_SEAT_LIMIT) :]
        module = mapping.modules.get(module_id)
        title = f"{module.title} ({module_id})" if module is not None else module_id
        return (
            f"left out: the seat limit of module {title} is reached "
            f"({why}; holders keep their seat, newcomers wait in userName order)"
        )
    return _DENIAL_TEXT.get(why, why)


def _not_applied(tenant_name: str) -> str:
    # True for every source: a re-plan covers SCIM and directory accounts alike, and the
    # scheduler's job runs one after a mapping change and for whoever waits for room.
    return (
        "not applied yet: the scheduler's replan job applies it (every 5 minutes), "
        f"`bridge replan --tenant {tenant_name}` at once"
    )


def explain_account(runtime: Runtime, tenant_name: str, user: str) -> dict[str, Any]:
    settings = runtime.config.tenant_settings(tenant_name)
    mapping = settings.mapping()
    now = datetime.now(UTC)
    with transaction(runtime.engine, write=False) as conn:
        tenant = get_tenant(conn, tenant_name)
        view = tenant_view(conn, settings)
        account = find_account(conn, tenant.id, user)
        subjects = load_subjects(conn, tenant.id, account.source, [account.anchor])
        held = dict(account_roles(conn, [account.id]).get(account.id, []))
        states = load_account_states(conn, tenant.id, account.source, [account.anchor])
        usage = usage_outside(
            conn,
            tenant.id,
            mapping,
            exclude_ids=[account.id],
            suspended_counts_as_seat=settings.suspended_counts_as_seat,
        )
        mapping_changed = stored_fingerprint(conn, tenant.id) != planning_fingerprint(view)
    held_modules = module_seats_held(states.get(account.anchor), mapping, settings.suspended_counts_as_seat)
    if not subjects:
        raise BridgeError(f"{account.user_name}: the source's record of this person is missing")
    subject = subjects[0]
    # What a re-plan would make of this person now, seats and limited roles counted as they stand:
    # the truth whatever the source, where comparing the rules with what is held is not (the
    # rules know nothing of capacity, and a SCIM account waits for no sync).
    would = None
    if Status(account.status) is not Status.ARCHIVED:
        plan = build_plan(
            account.source,
            [subject],
            states,
            mapping,
            now=now,
            seat_limit=view.seat_limit,
            usage=usage,
            complete_scope=False,
            suspended_counts_as_seat=settings.suspended_counts_as_seat,
            recreate_renamed=settings.recreate_renamed,
        )
        would = plan.accounts[0] if plan.accounts else None
    groups = subject.groups
    direct = set(subject.user.groups)
    decision = decide_roles(subject.user, groups, mapping)

    rules = []
    for rule in mapping.rules:
        because = rule_matches(rule, subject.user, groups)
        via = because.split(" (", 1)[1].rstrip(")") if because and " (member of " in because else None
        rules.append({"rule": rule.describe(), "roles": list(rule.roles), "matched": because is not None, "via": via})
    # The [[login_hours]] entries against this person; `loginHours` (below) is what the last plan
    # stored, which verify-password checks.
    hour_entries = [
        {
            "entry": entry.matcher.describe(),
            "matched": rule_matches(entry.matcher, subject.user, groups) is not None,
            **entry.window.to_json(),
        }
        for entry in mapping.login_hours
    ]

    user_type = decide_user_type(subject.user, groups, mapping)
    if user_type == "external":
        type_reason = "external: member of an external group or matching user_type.external_attribute"
    else:
        type_reason = "internal: no user_type rule marks this person external"

    role_rows = []
    denied = dict(account.denied or {})
    if would is not None:
        denied = dict(would.denied)
    planned = set(would.roles_after) if would is not None else set(held)
    live = Status(account.status) is not Status.ARCHIVED
    for role_id in sorted(set(decision.granted) | set(decision.denied) | set(held) | set(denied)):
        if role_id in held and live and role_id not in planned:
            role_rows.append(
                {
                    "role": role_id,
                    "outcome": f"held, but the rules no longer grant it: revoked, {_not_applied(tenant_name)}",
                    "detail": held[role_id],
                }
            )
        elif role_id in held and live:
            role_rows.append({"role": role_id, "outcome": "held", "detail": held[role_id]})
        elif role_id in denied:
            why = denied[role_id]
            role_rows.append({"role": role_id, "outcome": _denial_text(why, mapping), "reason": why})
        elif role_id in decision.denied:
            why = decision.denied[role_id]
            role_rows.append({"role": role_id, "outcome": _denial_text(why, mapping), "reason": why})
        else:
            role_rows.append(
                {
                    "role": role_id,
                    "outcome": f"granted by the rules, {_not_applied(tenant_name)}"
                    if live
                    else "granted by the rules; the account is archived, so it holds nothing",
                    "detail": decision.granted.get(role_id),
                }
            )

    status = Status(account.status)
    reason = _STATUS_TEXT[status]
    if status is Status.NO_ACCESS and denied:
        reason += f" — roles left out: {', '.join(f'{r} ({w})' for r, w in sorted(denied.items()))}"
    activation = None
    if status is Status.PENDING:
        problem = address_problem(account.email)
        if problem is not None:
            # The mail was refused for good (status failed in `outbox list`); a corrected
            # address in the source queues a new one.
            activation = f"{ADDRESS_UNUSABLE}: {problem}"
            reason += f" — but no activation mail can be sent: {activation}"
        elif (outside := domain_problem(account.email, settings.email_domains)) is not None:
            activation = f"{OUTSIDE_DOMAINS}: {outside}"
            reason += f" — but no activation mail is sent: {activation}"
    if settings.mappings_path is None and status is Status.NO_ACCESS:
        reason += " — the tenant has no mapping file, so no rule grants anyone a role"
    if live and mapping_changed:
        reason += (
            " — the mapping (or seat limit) changed since this tenant's accounts were planned; "
            f"{_not_applied(tenant_name).split(': ', 1)[1]} re-plans them"
        )
    if status is Status.ARCHIVED and account.anchor.startswith(RENAMED_PREFIX):
        reason += (
            ' (renamed in the source, user_name_changes = "recreate": replaced by a new account, '
            "named by renamedTo in this account's history)"
        )
    if status is Status.ARCHIVED and account.admin_hold:
        reason += " (by an administrator: `bridge users reactivate` brings it back)"
    return {
        "id": account.id,
        "userName": account.user_name,
        "source": account.source,
        "status": account.status,
        "statusReason": reason,
        "userType": user_type,
        "userTypeReason": type_reason,
        # `direct`: the person is a member of it themself; otherwise through a nested group.
        "groups": [{"name": g.name, "dn": g.dn, "direct": g.anchor in direct} for g in groups],
        "activationNotSent": activation,
        "mapping": str(settings.mappings_path) if settings.mappings_path else None,
        "rules": rules,
        "roles": role_rows,
        # The modules ([modules.*]) this account is a seat of as it stands, with each module's
        # use and limit (the account's own seat included); {} without modules.
        "modules": {
            m.id: {
                "title": m.title,
                "seat": m.id in held_modules,
                "used": usage.module_seats.get(m.id, 0) + (m.id in held_modules),
                "limit": m.seat_limit,
            }
            for m in mapping.modules.values()
        },
        "loginHoursEntries": hour_entries,
        "loginHours": account.login_hours or None,
    }
