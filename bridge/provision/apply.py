"""Apply a `Plan`: each account's changes, its audit events and its outbox messages commit
together or not at all.

Accounts are applied in batches of transactions (`batch_size` accounts per transaction) for
speed; a batch never splits one account's changes, and when a batch fails it is replayed one
account per transaction so a single bad row cannot hold back the others. Applying the same plan
twice changes nothing the second time: the planner compares against the stored state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from bridge.core.address import ADDRESS_UNUSABLE, address_problem
from bridge.core.lifecycle import Event, Status, apply_event
from bridge.core.plan import RENAMED_PREFIX, AccountPlan, Change, Plan, Recreate
from bridge.store import changes
from bridge.store.accounts import held_roles_text
from bridge.store.changes import AccountMoved as AccountMoved  # raised by changes.write_rows
from bridge.store.db import transaction
from bridge.store.events import queue_event
from bridge.store.identities import identity_values
from bridge.store.ids import fold, new_id

if TYPE_CHECKING:
    from bridge.config import Config

log = logging.getLogger(__name__)


# Product events (webhooks) by the change that causes them.
_EVENT_TOPICS = {
    "create": "account.created",
    "grant_roles": "account.roles_changed",
    "revoke_roles": "account.roles_changed",
    "suspend": "account.suspended",
    "resume": "account.resumed",
    "archive": "account.archived",
    "reactivate": "account.reactivated",
    "activate": "account.activated",
}


@dataclass(frozen=True)
class ApplyContext:
    tenant_id: int
    tenant_name: str
    actor: str
    correlation_id: str
    now: datetime
    webhooks: bool = False  # also post product events as webhooks (an endpoint is configured)
    default_language: str = "en"

    @classmethod
    def for_tenant(
        cls, config: Config, tenant_id: int, tenant_name: str, *, actor: str, correlation_id: str, now: datetime
    ) -> ApplyContext:
        """What every writer of a tenant's accounts derives from the configuration, in one place
        (a door that built its own once forgot the tenant's language for its mails)."""
        return cls(
            tenant_id=tenant_id,
            tenant_name=tenant_name,
            actor=actor,
            correlation_id=correlation_id,
            now=now,
            webhooks=bool(config.webhook.get("url")),
            default_language=config.tenant_settings(tenant_name).default_language,
        )


@dataclass
class ApplyResult:
    applied: int = 0
    errors: list[str] = field(default_factory=list)


def apply_plan(
    engine: Engine, plan: Plan, ctx: ApplyContext, *, batch_size: int = 500, progress: Any = None
) -> ApplyResult:
    result = ApplyResult()
    pending = plan.accounts
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        try:
            with transaction(engine) as conn:
                _write(conn, batch, ctx)
            result.applied += len(batch)
        except SQLAlchemyError:
            log.warning("batch of %d accounts failed; retrying one by one", len(batch))
            for account_plan in batch:
                try:
                    with transaction(engine) as conn:
                        _write(conn, [account_plan], ctx)
                    result.applied += 1
                except SQLAlchemyError as exc:
                    message = f"{account_plan.user_name}: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"
                    log.error("account not applied: %s", message)
                    result.errors.append(message)
        if progress is not None:
            progress(len(batch))
    return result


def apply_account(conn: Connection, plan: AccountPlan, ctx: ApplyContext) -> str:
    """Write one account's plan on `conn` (inside the caller's transaction). Returns the account id."""
    return _write(conn, [plan], ctx)[0]


def apply_accounts(conn: Connection, plans: Sequence[AccountPlan], ctx: ApplyContext) -> list[str]:
    """Write several accounts' plans on `conn` (inside the caller's transaction), as a batch of
    `apply_plan` is written: one executemany per table, in the plans' order. Returns their ids."""
    return _write(conn, plans, ctx) if plans else []


def _snapshot(status: Status | None, roles: Iterable[str]) -> dict[str, Any]:
    return {"status": status.value if status else None, "roles": sorted(roles)}


def _stored_identity_ids(
    conn: Connection, ctx: ApplyContext, batch: Sequence[AccountPlan]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(source, anchor) -> (identity id, digest) for the batch's new accounts, in one query per source."""
    wanted: dict[str, list[str]] = {}
    for p in batch:
        if p.account_id is None and p.user is not None:
            wanted.setdefault(p.source, []).append(p.anchor)
    return changes.stored_identity_ids(conn, ctx.tenant_id, wanted)


def _stored_roles(conn: Connection, batch: Sequence[AccountPlan]) -> dict[str, set[str]]:
    return changes.stored_roles(conn, [p.account_id for p in batch if p.account_id is not None and p.changes])


class _Rows:
    """The rows of one batch, by statement, so each table is written with one executemany."""

    def __init__(self) -> None:
        self.identity_inserts: list[dict[str, Any]] = []
        self.identity_updates: list[dict[str, Any]] = []
        # A rename under `recreate`: the old account's tombstone identity and its detaching UPDATE
        # (written before the new account, which takes the anchor and the identity).
        self.tombstones: list[dict[str, Any]] = []
        self.detaches: list[dict[str, Any]] = []
        self.account_inserts: list[dict[str, Any]] = []
        self.account_updates: dict[frozenset[str], list[dict[str, Any]]] = {}
        self.activations: list[dict[str, Any]] = []
        self.grant_deletes: list[dict[str, Any]] = []
        self.archive_deletes: list[dict[str, Any]] = []
        self.grant_inserts: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.mails_new: dict[str, dict[str, Any]] = {}  # account id -> mail fields (created now)
        self.mails_existing: list[str] = []  # account ids whose fields are read back
        self.mails_regrant: list[str] = []  # roles back on a pending-again account (no resend)
        self.events: list[dict[str, Any]] = []  # the product's events (the feed; webhooks too)
        self.webhooks: list[dict[str, Any]] = []


def _write(conn: Connection, batch: Sequence[AccountPlan], ctx: ApplyContext) -> list[str]:
    stored_identities = _stored_identity_ids(conn, ctx, batch)
    stored_roles = _stored_roles(conn, batch)
    rows = _Rows()
    ids = [_collect(rows, plan, ctx, stored_identities, stored_roles) for plan in batch]
    _flush(conn, rows, ctx)
    return ids


def _collect(
    rows: _Rows,
    plan: AccountPlan,
    ctx: ApplyContext,
    stored_identities: Mapping[tuple[str, str], tuple[str, str | None]],
    stored_roles: Mapping[str, set[str]],
) -> str:
    now = ctx.now
    user = plan.user
    account_id = plan.account_id
    identity_id = account_id
    recreate = plan.changes[0] if plan.changes and isinstance(plan.changes[0], Recreate) else None
    if user is not None and (plan.identity_changed or account_id is None):
        values = identity_values(user, plan.digest)
        # The identity is found by its anchor: an account made by a rename has an id of its own.
        key = {"b_tenant": ctx.tenant_id, "b_source": plan.source, "b_anchor": plan.anchor}
        if account_id is None:
            # A channel may have stored the identity already (SCIM writes it before planning);
            # the account then takes that identity's id.
            identity_id, stored_digest = stored_identities.get((plan.source, plan.anchor), (None, None))
            if identity_id is None:
                identity_id = new_id()
                rows.identity_inserts.append(
                    {
                        "id": identity_id,
                        "tenant_id": ctx.tenant_id,
                        "source": plan.source,
                        "kind": "user",
                        "anchor": plan.anchor,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                        **values,
                    }
                )
            elif plan.identity_changed and stored_digest != plan.digest:
                # Not when the channel stored exactly what the plan saw (a SCIM POST: store/scim
                # writes the digest load_subjects computes), which would only rewrite the row.
                rows.identity_updates.append({**key, "updated_at": now, **values})
            # The old account keeps its id (its history, and what the product knows it by); the
            # new one gets another and the identity (for SCIM: the resource id the IdP keeps).
            account_id = new_id() if recreate is not None else identity_id
        else:
            rows.identity_updates.append({**key, "updated_at": now, **values})
    if not plan.changes:
        if plan.denied_changed and plan.account_id is not None:
            row = {"b_id": plan.account_id, "b_tenant": ctx.tenant_id, "denied": dict(plan.denied), "updated_at": now}
            rows.account_updates.setdefault(frozenset(row), []).append(row)
        return account_id or ""
    assert account_id is not None

    status: Status | None = plan.before
    roles: set[str] = set(stored_roles.get(account_id, ())) if plan.account_id is not None else set()
    fields: dict[str, Any] = {}
    activation_mail = False
    resend = False
    grants: list[dict[str, Any]] = []
    # A new account is inserted once, in its final state (not inserted then updated).
    new_account: dict[str, Any] | None = None
    activated = False
    visible: dict[str, Any] = {}

    if recreate is not None:
        _retire(rows, plan, recreate, account_id, ctx)
    for change in plan.changes:
        if isinstance(change, Recreate):
            continue  # the old account's changes, written by _retire
        before = _snapshot(status, roles)
        status = _status_after(change, status, plan)
        detail: dict[str, Any] = {}
        if change.kind == "create":
            assert user is not None
            new_account = {
                "id": account_id,
                "tenant_id": ctx.tenant_id,
                "identity_id": identity_id,
                "source": plan.source,
                "anchor": plan.anchor,
                "user_type": change.user_type,
                "admin_hold": False,
                "expires_at": change.expires_at,
                "login_hours": change.login_hours,
                "created_at": now,
                "version": 1,
                **_account_fields(user, change.user_type),
            }
            detail = {"userName": user.user_name, "email": user.email, "userType": change.user_type}
            if recreate is not None:
                detail["replaces"] = recreate.replaces
        elif change.kind == "update":
            assert user is not None
            fields = _account_fields(user, plan.user_type)
            if "login_hours" in change.fields:
                fields["login_hours"] = change.fields["login_hours"][1]
            detail = {name: {"from": old, "to": new} for name, (old, new) in change.fields.items()}
            visible = change.product_changes()
        elif change.kind == "grant_roles":
            grants += [
                {"account_id": account_id, "role": role, "tenant_id": ctx.tenant_id, "rule": rule, "granted_at": now}
                for role, rule in change.roles.items()
            ]
            roles.update(change.roles)
            detail = {"granted": dict(change.roles)}
            activation_mail = activation_mail or change.event is Event.GRANT_ROLES
        elif change.kind == "revoke_roles":
            revoked = set(change.roles)
            grants = [g for g in grants if g["role"] not in revoked]
            rows.grant_deletes += [{"b_id": account_id, "b_role": role} for role in sorted(revoked & roles)]
            roles -= revoked
            detail = {"revoked": list(change.roles)}
        elif change.kind == "resend_activation":
            activation_mail = resend = True
        elif change.kind == "activate":
            detail = {"password": change.password}
            activated = True
        after = _snapshot(status, roles)
        topic = _EVENT_TOPICS.get(change.kind)
        # Whether a password was set is for the audit, not for the product's event.
        event_detail = {} if change.kind == "activate" else detail
        if change.kind == "grant_roles" and change.event is Event.GRANT_ROLES:
            topic = "account.pending"
        elif change.kind == "update" and visible:
            # Only what the product sees, by the names it knows (core.plan.PRODUCT_FIELDS).
            topic, event_detail = "account.updated", visible
        _record(rows, ctx, account_id, change, before, after, detail, topic, event_detail)

    assert status is plan.after, f"plan for {plan.user_name} ends in {plan.after}, apply reached {status}"
    # Archiving deletes every grant below, whatever the changes revoked.
    held = () if plan.after is Status.ARCHIVED else roles
    final = {
        "status": status.value,
        "status_before_suspend": plan.status_before_suspend.value if plan.status_before_suspend else None,
        "denied": dict(plan.denied),
        # The seat count's copy of the grants, written with the status (store.accounts.usage_outside).
        "held_roles": held_roles_text(held),
        "updated_at": now,
    }
    if activated:
        # Only the status and the activation time: the rest of the row is the source's business.
        assert plan.before is not None
        rows.activations.append(
            {
                "b_id": account_id,
                "b_tenant": ctx.tenant_id,
                "b_status": plan.before.value,
                "status": status.value,
                "held_roles": final["held_roles"],
                "activated_at": now,
                "updated_at": now,
            }
        )
    elif new_account is not None:
        rows.account_inserts.append({**new_account, **final})
    else:
        update_row = {"b_id": account_id, "b_tenant": ctx.tenant_id, **final, **fields}
        rows.account_updates.setdefault(frozenset(update_row), []).append(update_row)
    if plan.after is Status.ARCHIVED:
        # Archiving revokes access whatever the plan listed: nothing may survive in role_grants.
        grants = []
        rows.archive_deletes.append({"b_id": account_id})
    rows.grant_inserts += grants
    if activation_mail:
        if new_account is not None:
            assert user is not None
            rows.mails_new[account_id] = {
                "email": user.email,
                "user_name": user.user_name,
                "given_name": user.given_name,
                "preferred_language": user.preferred_language,
            }
        elif resend or plan.before is Status.ARCHIVED or any(c.kind == "reactivate" for c in plan.changes):
            # A person back after leaving gets a new activation, never a link from before.
            rows.mails_existing.append(account_id)
        else:
            rows.mails_regrant.append(account_id)
    return account_id


def _record(
    rows: _Rows,
    ctx: ApplyContext,
    account_id: str,
    change: Change,
    before: dict[str, Any],
    after: dict[str, Any],
    detail: dict[str, Any],
    topic: str | None,
    event_detail: dict[str, Any],
    *,
    action: str | None = None,
) -> None:
    """One change's audit event and, when it has a topic, its product event (feed, webhook)."""
    rows.audit.append(
        {
            "tenant_id": ctx.tenant_id,
            "account_id": account_id,
            "actor": ctx.actor,
            "action": action or change.kind,
            "before": before,
            "after": {**after, **({"detail": detail} if detail else {})},
            "reason": change.reason,
            "correlation_id": ctx.correlation_id,
            "occurred_at": ctx.now,
        }
    )
    if topic:
        payload = event_payload(
            ctx.tenant_name,
            topic,
            {"before": before, "after": after, **({"detail": event_detail} if event_detail else {})},
            now=ctx.now,
            account_id=account_id,
        )
        rows.events.append(payload)
        if ctx.webhooks:
            rows.webhooks.append(webhook_row(ctx.tenant_id, payload, ctx.now))


def _retire(rows: _Rows, plan: AccountPlan, change: Recreate, new_account_id: str, ctx: ApplyContext) -> None:
    """The old account of a rename under `recreate`: its roles revoked and its archive audited
    (reason `renamed`, `renamedTo` the new account) with their product events, as any archive's;
    then detached: it moves to a tombstone identity (deleted, invisible to SCIM and to every
    source read) and the anchor `RENAMED_PREFIX + id`, which frees the identity and the anchor for the
    new account under the unique constraints. An account already archived only records the link."""
    old = change.replaces
    link = {"renamedTo": new_account_id, "userName": plan.user_name, "anchor": plan.anchor}
    status, roles = change.old_status, change.old_roles
    if status is Status.ARCHIVED:
        state = _snapshot(status, ())
        _record(rows, ctx, old, change, state, state, link, None, {}, action="renamed")
    else:
        if roles:
            before, after = _snapshot(status, roles), _snapshot(status, ())
            detail = {"revoked": list(roles)}
            topic = "account.roles_changed"
            _record(rows, ctx, old, change, before, after, detail, topic, detail, action="revoke_roles")
        archived, _ = apply_event(status, Event.ARCHIVE)
        before, after = _snapshot(status, ()), _snapshot(archived, ())
        _record(rows, ctx, old, change, before, after, link, "account.archived", link, action="archive")
    tombstone = new_id()
    rows.tombstones.append(
        {
            "id": tombstone,
            "tenant_id": ctx.tenant_id,
            "source": plan.source,
            "kind": "user",
            "anchor": RENAMED_PREFIX + old,
            "name": change.old_user_name,
            "name_norm": change.old_user_name.casefold(),
            "active": False,
            "attributes": {},
            "scim_roles": [],
            "deleted_at": ctx.now,
            "created_at": ctx.now,
            "updated_at": ctx.now,
            "version": 1,
        }
    )
    rows.detaches.append(
        {
            "b_id": old,
            "b_tenant": ctx.tenant_id,
            "identity_id": tombstone,
            "anchor": RENAMED_PREFIX + old,
            "status": Status.ARCHIVED.value,
            "status_before_suspend": None,
            "held_roles": held_roles_text(()),
            "denied": {},
            "updated_at": ctx.now,
        }
    )
    rows.archive_deletes.append({"b_id": old})


def _account_fields(user: Any, user_type: str) -> dict[str, Any]:
    return {
        "user_name": user.user_name,
        "user_name_norm": fold(user.user_name),
        "email": user.email,
        "email_norm": fold(user.email),
        "given_name": user.given_name,
        "family_name": user.family_name,
        "given_name_norm": fold(user.given_name),
        "family_name_norm": fold(user.family_name),
        "display_name": user.display_name,
        "user_type": user_type,
    }


def _flush(conn: Connection, rows: _Rows, ctx: ApplyContext) -> None:
    """Write a batch's rows in dependency order (identities, accounts, grants, audit, outbox)."""
    changes.write_rows(conn, rows)
    mails = dict(rows.mails_new)
    if rows.mails_regrant:
        # Roles taken away and given back within the life of an activation (a group removed
        # and re-added): the activation in flight is kept, so the person gets one mail whose
        # link works, not a second mail that kills the first link.
        kept = _activation_in_flight(conn, ctx, rows.mails_regrant)
        rows.mails_existing += [a for a in rows.mails_regrant if a not in kept]
    if rows.mails_existing:
        # A resend or a changed address: the earlier mail still queued must never go out after
        # the new one, so it is superseded in the same transaction.
        changes.supersede_queued_activations(conn, ctx.tenant_id, rows.mails_existing)
        mails.update(changes.mail_fields(conn, rows.mails_existing))
    outbox_rows = [_activation_row(ctx, account_id, mails[account_id]) for account_id in mails] + rows.webhooks
    if outbox_rows:
        changes.insert_outbox_rows(conn, outbox_rows)
    for payload in rows.events:
        # Written with their positions when the transaction commits (bridge.store.events).
        queue_event(conn, ctx.tenant_id, ctx.now, payload)


def _activation_in_flight(conn: Connection, ctx: ApplyContext, account_ids: Sequence[str]) -> set[str]:
    """The accounts whose newest activation mail still stands, to their current address: queued
    (the worker sends it now that the account is pending again), or sent with a link that is
    neither used, replaced nor expired (it is valid again once the account is pending)."""
    kept = set()
    for row in changes.newest_activations(conn, ctx.tenant_id, account_ids):
        if (row.status == "queued" and (row.payload or {}).get("to") == row.email) or (
            row.status == "sent"
            and row.link_email == row.email
            and row.used_at is None
            and row.revoked_at is None
            and row.expires_at is not None
            and row.expires_at > ctx.now
        ):
            kept.add(row.account_id)
    return kept


def _activation_row(ctx: ApplyContext, account_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    # An address bridge cannot mail (a directory's "@example.org", no address at all) is refused
    # here, for good and with the reason, where `outbox list`, `users show` and `explain` show it;
    # queued, it would only fail in the worker. A corrected address queues a new activation.
    problem = address_problem(fields["email"])
    return {
        "tenant_id": ctx.tenant_id,
        "account_id": account_id,
        "channel": "email",
        "topic": "activation",
        "payload": {
            "to": fields["email"],
            "userName": fields["user_name"],
            "givenName": fields["given_name"],
            "language": fields["preferred_language"] or ctx.default_language,
        },
        "idempotency_key": f"activation:{account_id}:{new_id()}",
        "status": "queued" if problem is None else "failed",
        # Every outbox row carries the same keys (webhook rows too): one INSERT for the batch.
        "last_error": None if problem is None else f"{ADDRESS_UNUSABLE}: {problem}",
        "attempts": 0,
        "next_attempt_at": ctx.now,
        "created_at": ctx.now,
    }


def event_payload(
    tenant_name: str, topic: str, change: dict[str, Any], *, now: datetime, account_id: str | None
) -> dict[str, Any]:
    """The one shape of a product event: the webhook's body and the feed's entry (the worker and
    the feed add who the account is, as it is when they send it). `account_id` None: an event
    about the tenant (`plan.held`, `plan.approved`), whose `account` is null."""
    return {
        "id": new_id(),
        "type": topic,
        "tenant": tenant_name,
        "occurred_at": _isoformat(now),
        "account": {"id": account_id} if account_id is not None else None,
        "change": change,
    }


_last_iso: tuple[datetime, str] | None = None


def _isoformat(now: datetime) -> str:
    """`now.isoformat()`, built once for the run's `now` that every event of a sync shares."""
    global _last_iso
    last = _last_iso
    if last is not None and last[0] is now:
        return last[1]
    text = now.isoformat()
    _last_iso = (now, text)
    return text


def record_product_event(
    conn: Connection,
    tenant_id: int,
    tenant_name: str,
    topic: str,
    change: dict[str, Any],
    *,
    now: datetime,
    account_id: str | None,
    webhooks: bool,
) -> None:
    """A product event outside an account's plan (a held or approved plan), in `conn`'s
    transaction: in the change feed, and in the outbox when a webhook endpoint is configured."""
    payload = event_payload(tenant_name, topic, change, now=now, account_id=account_id)
    queue_event(conn, tenant_id, now, payload)
    if webhooks:
        changes.insert_outbox_rows(conn, [webhook_row(tenant_id, payload, now)])


def webhook_row(tenant_id: int, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The outbox row that posts `payload` (an `event_payload`) to the webhook endpoint."""
    account = payload.get("account")
    return {
        "tenant_id": tenant_id,
        "account_id": account["id"] if account else None,
        "channel": "webhook",
        "topic": payload["type"],
        "payload": payload,
        "idempotency_key": f"webhook:{payload['id']}",
        "status": "queued",
        "last_error": None,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _status_after(change: Change, status: Status | None, plan: AccountPlan) -> Status:
    from bridge.core.lifecycle import apply_event

    if change.kind == "create":
        return Status.NO_ACCESS
    event = getattr(change, "event", None)
    if event is None:
        assert status is not None
        return status
    assert status is not None
    new_status, _ = apply_event(status, event, getattr(change, "target", None))
    return new_status
