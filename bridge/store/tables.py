"""Tables. Every row carries `tenant_id`, and every query filters on it.

Identities are what a source says (users and groups, keyed by a stable anchor per source);
accounts are the product's users derived from them. For users the account id *is* the identity
id, so a SCIM `id`, an account id and an identity id are one value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names must be stable for Alembic to alter them later, on SQLite as on PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite has no 64-bit autoincrement type distinct from INTEGER; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    seat_limit: Mapped[int | None]
    created_at: Mapped[datetime]
    # What the accounts were last planned with (bridge.core.mapping.mapping_fingerprint); null:
    # never recorded, which counts as a changed mapping.
    mapping_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Since when the tenant is paused (bridge tenants pause): identities update, accounts do not.
    paused_at: Mapped[datetime | None]
    # Resumed, and the SCIM users not yet planned again (bridge.engine.pause.catch_up_scim).
    catch_up_due_at: Mapped[datetime | None]


class ScimToken(Base):
    __tablename__ = "scim_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "kind", "anchor", name="uq_identities_anchor"),
        Index("ix_identities_name", "tenant_id", "kind", "name_norm"),
        Index("ix_identities_email", "tenant_id", "kind", "email_norm"),
        Index("ix_identities_external_id", "tenant_id", "kind", "external_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    source: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))  # "user" or "group"
    anchor: Mapped[str] = mapped_column(String(255))
    external_id: Mapped[str | None] = mapped_column(String(255))
    dn: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(255))  # userName, or a group's name
    name_norm: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    email_norm: Mapped[str | None] = mapped_column(String(320))
    given_name: Mapped[str | None] = mapped_column(String(255))
    family_name: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    scim_roles: Mapped[list[Any]] = mapped_column(JSON, default=list)
    preferred_language: Mapped[str | None] = mapped_column(String(35))
    digest: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)
    # SCIM (migration 0002). The resource as the client sent it (Entra: "store values as sent"),
    # attribute names in canonical case, without id/meta and read-only attributes.
    resource: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A SCIM DELETE marks the identity instead of removing it: its account (same id) is archived
    # and keeps pointing at it. Deleted identities are invisible to SCIM and free their userName.
    deleted_at: Mapped[datetime | None]


# userName (users) and displayName (groups) are unique per tenant among live SCIM identities,
# case-insensitively (RFC 7643 4.1.1: userName caseExact false, uniqueness server; Entra requires
# group displayNames to be unique). Partial so directory sources and deleted identities are free.
Index(
    "uq_identities_scim_name",
    Identity.tenant_id,
    Identity.kind,
    Identity.name_norm,
    unique=True,
    sqlite_where=(Identity.source == "scim") & Identity.deleted_at.is_(None),
    postgresql_where=(Identity.source == "scim") & Identity.deleted_at.is_(None),
)
Index("ix_identities_updated", Identity.tenant_id, Identity.source, Identity.kind, Identity.updated_at)
# SCIM lists page in creation order (stable for Okta's startIndex paging while users are added).
Index("ix_identities_created", Identity.tenant_id, Identity.source, Identity.kind, Identity.created_at, Identity.id)


class Membership(Base):
    """Direct memberships by anchor within one source; nesting is expanded when planning."""

    __tablename__ = "memberships"
    # By member: ix_memberships_member_group below (the older (tenant, source, member) index,
    # a prefix of it, was dropped in migration 0022).
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    group_anchor: Mapped[str] = mapped_column(String(255), primary_key=True)
    member_anchor: Mapped[str] = mapped_column(String(255), primary_key=True)


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source", "anchor", name="uq_accounts_anchor"),
        # A status filter in userName order (the console's list), and counts by status.
        # Migration 0012 (it replaced ix_accounts_status, its prefix).
        Index("ix_accounts_status_name", "tenant_id", "status", "user_name_norm"),
        Index("ix_accounts_user_name", "tenant_id", "user_name_norm"),
        Index("ix_accounts_email", "tenant_id", "email_norm"),
        # The console's prefix search (store.accounts.search_accounts), migration 0012. On
        # PostgreSQL, text_pattern_ops: what serves LIKE 'x%' whatever the database's collation.
        Index(
            "ix_accounts_given_name",
            "tenant_id",
            "given_name_norm",
            postgresql_ops={"given_name_norm": "text_pattern_ops"},
        ),
        Index(
            "ix_accounts_family_name",
            "tenant_id",
            "family_name_norm",
            postgresql_ops={"family_name_norm": "text_pattern_ops"},
        ),
        # The seat count from the index alone (store.accounts.usage_outside), migration 0017.
        Index("ix_accounts_seats", "tenant_id", "status", "held_roles", "source"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id"), unique=True)
    source: Mapped[str] = mapped_column(String(100))
    anchor: Mapped[str] = mapped_column(String(255))
    user_name: Mapped[str] = mapped_column(String(255))
    user_name_norm: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    email_norm: Mapped[str | None] = mapped_column(String(320))
    given_name: Mapped[str | None] = mapped_column(String(255))
    family_name: Mapped[str | None] = mapped_column(String(255))
    # Folded (ids.fold) for the console's search by name (migration 0012).
    given_name_norm: Mapped[str | None] = mapped_column(String(255))
    family_name_norm: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    user_type: Mapped[str] = mapped_column(String(10), default="internal")
    status: Mapped[str] = mapped_column(String(12))
    status_before_suspend: Mapped[str | None] = mapped_column(String(12))
    # The roles in role_grants, as a sorted JSON array (store.accounts.held_roles_text), written
    # with the status by provision.apply (migration 0017). A copy, so that the seat count reads
    # one index instead of joining each billable grant to its account; null (a row written by
    # other means) is counted by that join.
    held_roles: Mapped[str | None] = mapped_column(Text)
    denied: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # role -> why it was left out
    # Archived by an administrator: sync must not bring the account back on its own.
    admin_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None]
    activated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)
    # When the person may sign in (core/login_hours: LoginHours.to_json()), written by the plan
    # like the other fields the source decides; null: no restriction (migration 0021).
    login_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


# The prefix search's userName and email ranges on PostgreSQL (LIKE 'x%'); the indexes above serve
# equality and order in the database's collation, which a LIKE cannot use unless it is "C".
# SQLite compares text byte-wise, so its ix_accounts_user_name and ix_accounts_email serve both.
Index(
    "ix_accounts_user_name_prefix",
    Account.tenant_id,
    Account.user_name_norm,
    postgresql_ops={"user_name_norm": "text_pattern_ops"},
).ddl_if(dialect="postgresql")
Index(
    "ix_accounts_email_prefix",
    Account.tenant_id,
    Account.email_norm,
    postgresql_ops={"email_norm": "text_pattern_ops"},
).ddl_if(dialect="postgresql")


class RoleGrant(Base):
    __tablename__ = "role_grants"
    __table_args__ = (Index("ix_role_grants_role", "tenant_id", "role"),)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    rule: Mapped[str | None] = mapped_column(Text)
    granted_at: Mapped[datetime]


class AuditEvent(Base):
    """Append-only: nothing in bridge updates or deletes these rows."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_tenant_time", "tenant_id", "occurred_at"),
        Index("ix_audit_account", "tenant_id", "account_id"),
        # The console's newest-first pages (keyset on id) and a run's changes. Migration 0012.
        Index("ix_audit_tenant_id", "tenant_id", "id"),
        Index("ix_audit_correlation", "tenant_id", "correlation_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    account_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(50))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime]


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_account", "tenant_id", "account_id"),
        # A tenant's undelivered rows, newest first (the console's mail screen). Migration 0012.
        Index("ix_outbox_tenant_status", "tenant_id", "status", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    account_id: Mapped[str | None] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(10))  # "email" or "webhook"
    topic: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str] = mapped_column(String(100), unique=True)
    status: Mapped[str] = mapped_column(String(12), default="queued")  # queued/sent/dead/superseded
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class Alert(Base):
    """An incident an administrator is told about once (issue 17): opened when it starts, closed
    when it ends; the mail goes out when it opens. Migration 0018."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "tenant_id", "kind", "subject", "closed_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(30))  # source_failing, mail_problems, mail_stuck, plan_held
    subject: Mapped[str] = mapped_column(String(200))  # the source, the plan, "mail"
    summary: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(String(300))  # the console page, under /admin/t/<tenant>/
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_source", "tenant_id", "source", "started_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    source: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(10))  # "full" or "delta"
    correlation_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(12), default="running")  # running/ok/aborted/failed
    reason: Mapped[str | None] = mapped_column(Text)
    # What the run applied; `planned` is what its plan would have done (an aborted or dry run
    # applies nothing: its counts are empty and its plan's are in `planned`).
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    planned: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Who overrode a safety check with --force, and what the plan passed (null when nobody did).
    forced: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    errors: Mapped[list[Any] | None] = mapped_column(JSON)
    # What the run took in but an administrator should look at (a rule's attribute nobody has).
    warnings: Mapped[list[Any] | None] = mapped_column(JSON)


class SourceState(Base):
    """Per-source bookmarks (delta high-water marks, the server they came from)."""

    __tablename__ = "source_state"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class Lease(Base):
    """One runner at a time for a job. `tenant_id` 0 marks deployment-wide jobs (no FK for that)."""

    __tablename__ = "leases"
    tenant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]


class JobRun(Base):
    """One run of a scheduled job. The unique (job, scheduled_for) makes each tick run once
    across every process sharing the database, whatever their clocks' small differences."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "job", "scheduled_for", name="uq_job_runs_tick"),
        Index("ix_job_runs_job", "tenant_id", "job", "started_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(Integer, default=0)  # 0: deployment-wide
    job: Mapped[str] = mapped_column(String(200))
    scheduled_for: Mapped[datetime]
    holder: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(12), default="running")  # running/ok/failed/aborted
    detail: Mapped[str | None] = mapped_column(Text)


class ActivationToken(Base):
    """One activation link. Only the SHA-256 of the token is kept; the token itself is derived
    from the server secret and the outbox row that mails it (bridge.notify.activation)."""

    __tablename__ = "activation_tokens"
    __table_args__ = (
        Index("ix_activation_tokens_account", "tenant_id", "account_id"),
        Index("ix_activation_tokens_expires", "expires_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    outbox_id: Mapped[int] = mapped_column(BigId, unique=True)  # the activation mail carrying it
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))  # the address the link went to
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]  # a newer link was sent
    reminded_at: Mapped[datetime | None]


class Credential(Base):
    """The password an account set on activation (argon2id, PHC string)."""

    __tablename__ = "credentials"
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    password_hash: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime]


class WebhookEndpoint(Base):
    """Delivery state of a webhook URL; a 410 from the receiver disables it until re-enabled."""

    __tablename__ = "webhook_endpoints"
    url_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


# A person's groups (re-planning one SCIM member, effective_groups) read memberships by member.
# Covering, so SQLite does not prefer the primary key's (tenant, source) prefix and scan every
# membership of the source (2 ms at 10k memberships, growing with them). Migration 0002.
Index(
    "ix_memberships_member_group",
    Membership.tenant_id,
    Membership.source,
    Membership.member_anchor,
    Membership.group_anchor,
)


class ScimEmail(Base):
    """One row per value of a SCIM user's multi-valued `emails`, so that value-path filters such
    as `emails[type eq "work" and value eq "x"]` run as an indexed query (RFC 7644 3.4.2.2)."""

    __tablename__ = "scim_emails"
    __table_args__ = (
        Index("ix_scim_emails_value", "tenant_id", "value_norm"),
        Index("ix_scim_emails_identity", "identity_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id"))
    value: Mapped[str] = mapped_column(String(320))
    value_norm: Mapped[str] = mapped_column(String(320))  # casefolded: emails.value is caseExact false
    type_norm: Mapped[str | None] = mapped_column(String(50))  # casefolded type ("work", "home")
    primary: Mapped[bool] = mapped_column(Boolean, default=False)


class RateLimitHit(Base):
    """Hits counted per limit, key and one-second slot, shared by every process on one PostgreSQL
    (bridge.store.ratelimit). Not tenant data: a client address or a token hash limits across
    tenants. The key is a hash, so no address or user name is stored."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_expires", "expires_at"),)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the slot's second since the epoch
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch: purged after


class Admin(Base):
    """Who signs in to the console: an operator (tenant_id null, every tenant) or a tenant
    administrator (one tenant). Invited by a one-time setup link whose hash is kept until used."""

    __tablename__ = "admins"
    __table_args__ = (
        UniqueConstraint("email_norm", name="uq_admins_email"),
        UniqueConstraint("setup_token_hash", name="uq_admins_setup_token"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_norm: Mapped[str] = mapped_column(String(320))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    password_hash: Mapped[str | None] = mapped_column(Text)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    setup_token_hash: Mapped[str | None] = mapped_column(String(64))
    setup_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class AdminSession(Base):
    """A console session; the cookie holds a random value, this row its SHA-256. `stage` is
    "totp" between the password and the second factor, then "full"."""

    __tablename__ = "admin_sessions"
    __table_args__ = (Index("ix_admin_sessions_admin", "admin_id"),)
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_id: Mapped[str] = mapped_column(ForeignKey("admins.id"))
    stage: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class HeldPlan(Base):
    """A plan a safety check refused, kept for a person to approve or reject (issue 17).

    Source-agnostic: `source` is a `[[sources]]` name, or `scim` for account changes pushed by an
    identity provider; `plan` is the `Plan`'s header (bridge.core.held.plan_header) and its
    accounts are rows of `held_plan_accounts`. `digest` is what the plan was computed from
    (bridge.core.held.inputs_digest): approve applies the stored plan only while it is the same.
    Statuses: held, approved, rejected, expired (also a held plan superseded by a newer hold of
    its source: `superseded_by` names it)."""

    __tablename__ = "held_plans"
    __table_args__ = (
        Index("ix_held_plans_tenant_status", "tenant_id", "status", "created_at"),
        Index("ix_held_plans_source", "tenant_id", "source", "status"),
        Index("ix_held_plans_expiry", "status", "expires_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    source: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(String(50))  # deletion_threshold, empty_read, source_changed, ...
    detail: Mapped[str | None] = mapped_column(Text)  # the check's sentence, as the run said it
    status: Mapped[str] = mapped_column(String(12), default="held")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(400))
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(400))
    superseded_by: Mapped[str | None] = mapped_column(String(36))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)


class ScimDeprovision(Base):
    """One deprovisioning a SCIM write asked for (suspension, archive, loss of every role),
    applied or held: the SCIM guard's sliding window (issue 17). Migration 0020."""

    __tablename__ = "scim_deprovisions"
    __table_args__ = (Index("ix_scim_deprovisions_window", "tenant_id", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    at: Mapped[datetime]
    account_id: Mapped[str | None] = mapped_column(String(36))
    held: Mapped[bool] = mapped_column(Boolean)


class ScimKept(Base):
    """An account whose held SCIM deprovisioning a person rejected, with the identity digest it
    was computed from: re-planning that same identity leaves the account alone. Migration 0020."""

    __tablename__ = "scim_kept"
    account_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    digest: Mapped[str] = mapped_column(String(64))
    plan_id: Mapped[str] = mapped_column(String(36))
    kept_at: Mapped[datetime]


class HeldPlanAccount(Base):
    """One account's part of a held plan, in the plan's order: `payload` is the serialised
    `AccountPlan` (bridge.core.held.account_plan_to_json), `kind` and `reason` its main change,
    kept apart so a review page pages through them without decoding every payload."""

    __tablename__ = "held_plan_accounts"
    plan_id: Mapped[str] = mapped_column(ForeignKey("held_plans.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    account_id: Mapped[str | None] = mapped_column(String(36))
    user_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class AccountEventRow(Base):
    """The product's change feed (`GET /api/v1/events`): every account event the webhooks carry,
    with the webhook's payload, at a `position` in its tenant's commit order (bridge.store.events).
    Migration 0016."""

    __tablename__ = "account_events"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class EventPosition(Base):
    """One row per tenant: the last `position` given to an account event, and the last one purged.
    A writing transaction updates this row as its last step, so its lock orders the tenant's
    writers by commit (bridge.store.events). Migration 0016."""

    __tablename__ = "event_positions"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    purged_through: Mapped[int] = mapped_column(BigInteger, default=0)


class ScimRequest(Base):
    """One SCIM request of a tenant, as its identity provider sent it (issue 16): written after
    the answer by `bridge.scim.requestlog`, bodies already redacted and cut, kept the tenant's
    `request_log_days`. The account changes it caused are the audit events whose correlation id
    is its `request_id`, written while it ran. Migration 0019."""

    __tablename__ = "scim_requests"
    __table_args__ = (
        Index("ix_scim_requests_tenant_id", "tenant_id", "id"),  # the log page, newest first
        Index("ix_scim_requests_tenant_time", "tenant_id", "occurred_at"),  # the purge, the 24-hour counts
        Index("ix_scim_requests_token", "tenant_id", "token_id", "id"),  # each token's last request
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    token_id: Mapped[str | None] = mapped_column(String(36))
    occurred_at: Mapped[datetime]  # when the request arrived
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)  # with the query string, cut to 2,000 characters
    status: Mapped[int] = mapped_column(Integer)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    client: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(64))
    request_body: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)  # a body was cut to 64 KiB
