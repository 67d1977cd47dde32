"""Inviting a console administrator: the one function behind `bridge admins invite` and the
console's Admins page, so both make the same link, mail it the same way and audit it alike."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.errors import BridgeError, InvalidValue
from bridge.notify.mail import (
    MailRejected,
    SmtpSender,
    SmtpUnavailable,
    build_message,
    format_date,
    message_id,
    render,
    valid_address,
)
from bridge.runtime import Runtime
from bridge.store.admins import invite
from bridge.store.audit import record_tenant_event
from bridge.store.db import transaction
from bridge.store.tenants import get_tenant


@dataclass(frozen=True)
class Invitation:
    email: str
    tenant_name: str | None  # None: an operator
    link: str  # the clear setup link: shown or mailed once, never stored
    expires_at: datetime
    sent: bool


def invite_admin(
    runtime: Runtime,
    email: str,
    tenant_name: str | None,
    *,
    actor: str,
    expires_hours: int | None = None,
    send: bool = False,
    now: datetime | None = None,
) -> Invitation:
    """Create the administrator (or renew their link) and, with `send`, mail the link.

    The mail goes straight over SMTP, not through the outbox: the outbox keeps what it sends, and
    a setup link is a credential that must not sit in the database in clear. If the mail fails,
    the link is still valid and the error says to show it instead. An invitation to a tenant is
    audited in that tenant (`admin_invited`); an operator's has no tenant and is logged."""
    email = email.strip()
    if not valid_address(email) or len(email) > 320:
        raise InvalidValue(f"{email!r} is not an email address")
    now = now or datetime.now(UTC)
    hours = expires_hours or int(runtime.config.console["invite_expires_hours"])
    with transaction(runtime.engine) as conn:
        tenant = get_tenant(conn, tenant_name) if tenant_name else None
        row, token = invite(conn, email, tenant.id if tenant else None, now + timedelta(hours=hours), now)
        if tenant is not None:
            record_tenant_event(
                conn,
                tenant.id,
                actor=actor,
                action="admin_invited",
                after={"email": email, "expires": row.setup_expires_at.isoformat() if row.setup_expires_at else None},
                reason=None,
                correlation_id=f"{actor.split(':', 1)[0]}-{uuid.uuid4().hex[:16]}",
                now=now,
            )
    link = f"{str(runtime.config.server['public_url']).rstrip('/')}/admin/setup/{token}"
    expires_at = row.setup_expires_at or now
    if send:
        _mail(runtime, email, tenant_name, link, expires_at, now)
    return Invitation(email=email, tenant_name=tenant_name, link=link, expires_at=expires_at, sent=send)


def _mail(
    runtime: Runtime, email: str, tenant_name: str | None, link: str, expires_at: datetime, now: datetime
) -> None:
    config = runtime.config
    language = "en"
    rendered = render(
        "admin_invite", language, {"tenant": tenant_name, "link": link, "expires": format_date(expires_at, language)}
    )
    from_header = str(config.email["from"])
    message = build_message(
        rendered,
        to=email,
        from_header=from_header,
        msg_id=message_id(f"admin-invite-{uuid.uuid4().hex}", from_header),
        now=now,
        language=language,
    )
    sender = SmtpSender(config.email, config.origin)
    try:
        sender.send(email, message)
    except (SmtpUnavailable, MailRejected) as exc:
        raise BridgeError(
            f"the invitation was not sent: {exc}; invite again without sending to show the link"
        ) from None
    finally:
        sender.close()


def remove_admin_as(runtime: Runtime, email: str, *, actor: str, tenant_id: int | None = None) -> None:
    """Remove an administrator and end their sessions. `tenant_id` scopes it (a tenant
    administrator removes only their own tenant's): anyone else is `NotFound`, like an unknown
    address. Audited in the removed administrator's tenant when they had one."""
    from bridge.errors import NotFound
    from bridge.store.admins import admin_by_email, remove_admin

    now = datetime.now(UTC)
    with transaction(runtime.engine) as conn:
        found = admin_by_email(conn, email)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise NotFound(f"no administrator {email}")
        remove_admin(conn, found.email)
        if found.tenant_id is not None:
            record_tenant_event(
                conn,
                found.tenant_id,
                actor=actor,
                action="admin_removed",
                before={"email": found.email},
                after=None,
                reason=None,
                correlation_id=f"{actor.split(':', 1)[0]}-{uuid.uuid4().hex[:16]}",
                now=now,
            )
