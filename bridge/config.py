"""Configuration: TOML loading and validation.

Every error names the file and the key (`bridge.toml: sources[2].kind: ...`) and exits 2.
Secrets are never literal in the file: a key `X_env` names an environment variable and `X_file`
a file holding the value. Relative paths are resolved against the config file's directory, so
a config works whatever directory the service is started from.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.core.address import address_problem
from bridge.core.mapping import RoleMapping, load_mapping
from bridge.errors import ConfigError

# Keys that would hold a secret in clear. Refused with a hint to use *_env or *_file.
_SECRET_KEYS = {"password", "bind_password", "secret", "token", "api_key", "smtp_password"}

_Spec = dict[str, tuple[type | tuple[type, ...], Any]]

_DATABASE: _Spec = {"url": (str, "sqlite:///bridge.db"), "echo": (bool, False)}
_SERVER: _Spec = {
    "public_url": (str, "http://127.0.0.1:8080"),
    "host": (str, "127.0.0.1"),
    "port": (int, 8080),
    "threads": (int, 8),
    "max_body_bytes": (int, 1024 * 1024),
    # Key for activation links and CSRF tokens; generated beside the database when unset.
    "secret_env": (str, None),
    "secret_file": (str, None),
    # Peers (CIDRs) allowed to set the client address through X-Forwarded-For (a reverse proxy).
    "trusted_proxies": (list, None),
    # Bearer token /metrics then requires (unset: /metrics is open to whoever reaches the port).
    "metrics_token_env": (str, None),
    "metrics_token_file": (str, None),
    # One log line per request (bridge.access): method, path, status, time, tenant, token label.
    "access_log": (bool, True),
}
_EMAIL: _Spec = {
    "smtp_host": (str, "127.0.0.1"),
    "smtp_port": (int, 1025),
    "starttls": (bool, False),
    "ssl": (bool, False),
    "from": (str, "Bridge <no-reply@example.org>"),
    "username": (str, None),
    "password_env": (str, None),
    "password_file": (str, None),
    "timeout": ((int, float), 30),
    "ca_file": (str, None),
    "tls_verify": (bool, True),
    "reminder_before_days": ((int, float), 2),  # reminder this long before a link expires; 0: none
    "connections": (int, 4),  # SMTP connections the outbox worker sends over at once
}
_WEBHOOK: _Spec = {
    "url": (str, None),
    "secret_env": (str, None),
    "secret_file": (str, None),
    "timeout": ((int, float), 10),
}
_LOGGING: _Spec = {"format": (str, "text"), "level": (str, "INFO")}
_SCHEDULES: _Spec = {"dir": (str, "schedules"), "timezone": (str, None)}
_OUTBOX: _Spec = {
    "max_attempts": (int, 8),
    "batch_size": (int, 100),
    "lease_seconds": ((int, float), 60),  # a claim a crashed worker left is taken over after this
    "poll_seconds": ((int, float), 2),
    "retry_base_seconds": ((int, float), 30),
    "retry_max_seconds": ((int, float), 3600),
}
USER_NAME_CHANGES = ("update", "recreate")
_TENANT: _Spec = {
    "name": (str, None),
    "mappings": (str, None),
    "seat_limit": (int, None),
    "default_language": (str, "en"),
    "activation": (str, "password"),
    "login_url": (str, None),
    "activation_expires_days": (int, 7),
    "suspended_counts_as_seat": (bool, True),
    "support_contact": (str, None),
    # Leaver policies (issue 17): archive an account suspended this long (Okta never sends a
    # DELETE: its leavers would keep a seat forever), and mail activations only to these domains.
    "archive_after_suspended_days": (int, None),
    "email_domains": (list, None),
    # A plan a safety check held (issue 17) expires, unapproved, after this many days.
    "held_plan_days": (int, 7),
    # Alerts (issue 17): who is mailed, once per incident, when a source fails this many runs in
    # a row, mail is dead or refused, or the oldest queued mail waits longer than this.
    "alert_emails": (list, None),
    "alert_after_failed_runs": (int, 3),
    "alert_queued_minutes": (int, 60),
    # Days the SCIM request log (issue 16) keeps a request; the purge job deletes older ones.
    "request_log_days": (int, 14),
    # The SCIM guard (issue 17): deprovisioning pushed over SCIM past both this fraction of the
    # tenant's live accounts and this many, within the window, is held for a person to approve.
    "scim_deprovision_limit": ((int, float), 0.10),
    "scim_deprovision_minimum": (int, 5),
    "scim_deprovision_window_minutes": (int, 60),
    # Products whose login name cannot change (issue 19): "recreate" archives an account whose
    # userName the source changed (reason `renamed`) and creates a new one with its own activation.
    "user_name_changes": (str, "update"),
}
_SOURCE: _Spec = {
    "name": (str, None),
    "tenant": (str, None),
    "kind": (str, None),
    "flavor": (str, "openldap"),
    "path": (str, None),
    "url": (str, None),
    "urls": (list, None),
    "bind_dn": (str, None),
    "bind_password_env": (str, None),
    "bind_password_file": (str, None),
    "user_base": (str, None),
    "group_base": (str, None),
    "user_filter": (str, None),
    "group_filter": (str, None),
    "user_name_attribute": (str, None),
    "email_attribute": (str, "mail"),
    "anchor_attribute": (str, None),
    "attributes": (dict, None),
    "page_size": (int, 500),
    "range_size": (int, 1500),  # AD: values asked per `member;range=` step (MaxValRange)
    "delta_overlap": ((int, float), 0),  # seconds a delta re-reads before its bookmark (replication lag)
    # A delta whose changes touch more people than this runs as a full run (bridge.engine.delta).
    "delta_max_people": (int, 10_000),
    "timeout": ((int, float), 30),
    "start_tls": (bool, False),
    "ca_file": (str, None),
    "tls_verify": (bool, True),
    "deletion_threshold": ((int, float), 0.10),
    "deletion_threshold_min": (int, 5),
    # kind = "csv" (issue 19): an HR or spreadsheet export (bridge.directory.csv_source).
    "encoding": (str, "utf-8"),
    "delimiter": (str, None),
    "columns": (dict, None),
    "group_separator": (str, ";"),
}
# What a kind = "csv" source accepts (bridge.directory.csv_source reads by them).
CSV_COLUMN_KEYS = ("anchor", "userName", "email", "givenName", "familyName", "groups", "active", "userType")
CSV_REQUIRED_COLUMNS = ("anchor", "userName")
CSV_ENCODINGS = ("utf-8", "utf-8-sig", "cp1252")
CSV_DELIMITERS = (",", ";", "\t")

_CONSOLE: _Spec = {
    # Every administrator must enrol a second factor (TOTP) before the console shows anything.
    "require_totp": (bool, False),
    "idle_minutes": (int, 30),  # a session unused this long is closed
    "session_hours": (int, 12),  # and any session this old, used or not
    "invite_expires_hours": (int, 72),  # `bridge admins invite` without --expires-hours
}
_API: _Spec = {
    # How long the product's change feed (GET /api/v1/events) keeps an event; the purge job
    # deletes older ones, and a cursor behind them answers 410 (docs/product-integration.md).
    "event_retention_days": (int, 30),
}
_TOP = {
    "database",
    "server",
    "email",
    "webhook",
    "logging",
    "outbox",
    "tenants",
    "sources",
    "schedules",
    "console",
    "api",
}


# What a tenant without a mapping file has: no roles, no rules.
NO_MAPPING = RoleMapping(roles={}, rules=(), origin="<no mapping>")


@dataclass(frozen=True)
class TenantConfig:
    name: str
    mappings_path: Path | None
    seat_limit: int | None
    default_language: str
    activation: str
    login_url: str | None
    activation_expires_days: int
    suspended_counts_as_seat: bool
    support_contact: str | None
    archive_after_suspended_days: int | None = None
    email_domains: tuple[str, ...] = ()
    held_plan_days: int = 7
    alert_emails: tuple[str, ...] = ()
    alert_after_failed_runs: int = 3
    alert_queued_minutes: int = 60
    request_log_days: int = 14
    scim_deprovision_limit: float = 0.10
    scim_deprovision_minimum: int = 5
    scim_deprovision_window_minutes: int = 60
    user_name_changes: str = "update"  # or "recreate" (docs/operations/renames.md)
    _mapping: list[RoleMapping] = field(default_factory=list, compare=False, repr=False)

    @property
    def recreate_renamed(self) -> bool:
        """A changed userName makes a new account (the planner's `recreate_renamed`)."""
        return self.user_name_changes == "recreate"

    def mapping(self) -> RoleMapping:
        """The tenant's mapping, loaded once (a mapping error surfaces as a ConfigError).

        A tenant without a mapping file (declared without `mappings`, or added with `bridge
        tenants add`) has no roles: its accounts are no_access until a mapping is configured.
        `check_mappings` refuses that for a tenant with a directory source."""
        if not self._mapping:
            if self.mappings_path is None:
                self._mapping.append(NO_MAPPING)
            else:
                self._mapping.append(load_mapping(self.mappings_path))
        return self._mapping[0]


@dataclass(frozen=True)
class SourceConfig:
    name: str
    tenant: str
    kind: str
    settings: dict[str, Any]
    origin: str

    def get(self, key: str) -> Any:
        return self.settings.get(key)

    def secret(self, key: str) -> str | None:
        return read_secret(self.settings, key, self.origin, f"sources.{self.name}")


@dataclass(frozen=True)
class Config:
    path: Path
    database_url: str
    server: dict[str, Any]
    email: dict[str, Any]
    webhook: dict[str, Any]
    logging: dict[str, Any]
    outbox: dict[str, Any]
    tenants: dict[str, TenantConfig]
    sources: dict[str, SourceConfig]
    schedules_dir: Path
    schedules_timezone: str | None = None
    console: dict[str, Any] = field(default_factory=lambda: {k: v for k, (_, v) in _CONSOLE.items()})
    api: dict[str, Any] = field(default_factory=lambda: {k: v for k, (_, v) in _API.items()})

    @property
    def origin(self) -> str:
        return str(self.path)

    def source(self, name: str) -> SourceConfig:
        if name not in self.sources:
            known = ", ".join(self.sources) or "none"
            raise ConfigError(self.origin, "sources", f'no source named "{name}" (configured: {known})')
        return self.sources[name]

    def tenant(self, name: str) -> TenantConfig | None:
        return self.tenants.get(name)

    def tenant_settings(self, name: str) -> TenantConfig:
        """The tenant's settings: as configured, or the defaults (and no mapping) for a tenant
        that exists only in the database (`bridge tenants add`)."""
        configured = self.tenants.get(name)
        return (
            configured
            if configured is not None
            else TenantConfig(
                name=name,
                mappings_path=None,
                seat_limit=None,
                default_language="en",
                activation="password",
                login_url=None,
                activation_expires_days=7,
                suspended_counts_as_seat=True,
                support_contact=None,
            )
        )


def check_mappings(config: Config) -> None:
    """Load every tenant's mapping now, so that a mapping bridge cannot use stops `serve`,
    `scheduler` and `sync` at start (exit 2, naming the file and the key) instead of failing
    every request or run of that tenant later. Mappings are cached, so this costs nothing later.

    A tenant with a directory source needs a mapping: a sync without one would only ever create
    no_access accounts, which is never what the administrator meant. A SCIM-only tenant may have
    none (its accounts are no_access, and `explain` says why)."""
    with_sources = {s.tenant for s in config.sources.values()}
    for i, tenant in enumerate(config.tenants.values()):
        if tenant.mappings_path is None:
            if tenant.name in with_sources:
                raise ConfigError(
                    config.origin,
                    f"tenants[{i + 1}].mappings",
                    f'tenant "{tenant.name}" has a directory source but no mapping file: nobody would get a role',
                )
            continue
        tenant.mapping()


def metrics_token(config: Config) -> str | None:
    """The bearer token `/metrics` requires, or None when it is open. Read at start by `serve`, so
    a variable that is not set stops it (exit 2 naming `server.metrics_token_env`)."""
    token = read_secret(config.server, "metrics_token", config.origin, "server")
    if token is not None and not token.strip():
        key = "metrics_token_env" if config.server.get("metrics_token_env") else "metrics_token_file"
        raise ConfigError(config.origin, f"server.{key}", "the metrics token is empty")
    return token


def read_secret(section: dict[str, Any], key: str, origin: str, where: str) -> str | None:
    """The value of `key_env` (environment) or `key_file` (file contents, trailing newline cut)."""
    env_name = section.get(f"{key}_env")
    file_name = section.get(f"{key}_file")
    if env_name:
        value = os.environ.get(env_name)
        if value is None:
            raise ConfigError(origin, f"{where}.{key}_env", f"environment variable {env_name} is not set")
        return value
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(origin, f"{where}.{key}_file", f"cannot read {file_name}: {exc.strerror}") from None
    return None


def _section(raw: Any, spec: _Spec, origin: str, where: str) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(origin, where, "must be a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECRET_KEYS or (key.endswith("password") and not key.endswith(("_env", "_file"))):
            raise ConfigError(
                origin,
                f"{where}.{key}",
                f'secrets are not accepted in the file; use {key}_env = "VARIABLE" '
                f'(environment variable) or {key}_file = "/path/to/file"',
            )
        if key not in spec:
            raise ConfigError(origin, f"{where}.{key}", f"unknown key (known: {', '.join(sorted(spec))})")
        kind = spec[key][0]
        if isinstance(value, bool) and kind in (int, (int, float)):
            raise ConfigError(origin, f"{where}.{key}", "must be a number, not true/false")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else "a number"
            raise ConfigError(origin, f"{where}.{key}", f"must be {expected}, got {type(value).__name__}")
        out[key] = value
    for key, (_, default) in spec.items():
        out.setdefault(key, default)
    return out


def _networks(values: list[Any], origin: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for i, value in enumerate(values):
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ConfigError(
                origin, f"server.trusted_proxies[{i + 1}]", f"{value!r} is not an IP address or CIDR"
            ) from None
    return out


def _resolve(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _check_csv(s: dict[str, Any], origin: str, where: str) -> None:
    """A CSV source's keys (bridge.directory.csv_source): the column map and the file's format."""
    if s["encoding"] not in CSV_ENCODINGS:
        raise ConfigError(origin, f"{where}.encoding", f"must be one of {', '.join(CSV_ENCODINGS)}")
    if s["delimiter"] is not None and s["delimiter"] not in CSV_DELIMITERS:
        raise ConfigError(origin, f"{where}.delimiter", 'must be ",", ";" or "\\t" (or left out: detected)')
    if not s["group_separator"]:
        raise ConfigError(origin, f"{where}.group_separator", "must not be empty")
    columns = s["columns"] or {}
    for key, column in columns.items():
        if key not in CSV_COLUMN_KEYS:
            raise ConfigError(origin, f"{where}.columns.{key}", f"unknown key (one of {', '.join(CSV_COLUMN_KEYS)})")
        if not isinstance(column, str) or not column.strip():
            raise ConfigError(origin, f"{where}.columns.{key}", "must be a column name of the file's header")
    for key in CSV_REQUIRED_COLUMNS:
        if key not in columns:
            raise ConfigError(origin, f"{where}.columns.{key}", "missing (the header name of that column)")


def _database_url(url: str, base: Path) -> str:
    # A relative SQLite path is relative to the config file, like every other path in it.
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(base / url[len(prefix) :])
    return url


def parse_config(data: dict[str, Any], path: Path) -> Config:
    origin = str(path)
    base = path.parent.resolve()
    for key in data:
        if key not in _TOP:
            raise ConfigError(origin, key, f"unknown section (known: {', '.join(sorted(_TOP))})")
    database = _section(data.get("database"), _DATABASE, origin, "database")
    server = _section(data.get("server"), _SERVER, origin, "server")
    server["trusted_proxies"] = _networks(server["trusted_proxies"] or [], origin)
    email = _section(data.get("email"), _EMAIL, origin, "email")
    webhook = _section(data.get("webhook"), _WEBHOOK, origin, "webhook")
    logging = _section(data.get("logging"), _LOGGING, origin, "logging")
    outbox = _section(data.get("outbox"), _OUTBOX, origin, "outbox")
    schedules = _section(data.get("schedules"), _SCHEDULES, origin, "schedules")
    console = _section(data.get("console"), _CONSOLE, origin, "console")
    for key in ("idle_minutes", "session_hours", "invite_expires_hours"):
        if console[key] < 1:
            raise ConfigError(origin, f"console.{key}", "must be at least 1")
    api = _section(data.get("api"), _API, origin, "api")
    if api["event_retention_days"] < 1:
        raise ConfigError(origin, "api.event_retention_days", "must be at least 1")
    if logging["format"] not in ("text", "json"):
        raise ConfigError(origin, "logging.format", 'must be "text" or "json"')

    tenants: dict[str, TenantConfig] = {}
    raw_tenants = data.get("tenants", [])
    if not isinstance(raw_tenants, list):
        raise ConfigError(origin, "tenants", "must be an array of [[tenants]] tables")
    for i, raw in enumerate(raw_tenants):
        where = f"tenants[{i + 1}]"
        t = _section(raw, _TENANT, origin, where)
        if not t["name"]:
            raise ConfigError(origin, f"{where}.name", "missing")
        if t["name"] in tenants:
            raise ConfigError(origin, f"{where}.name", f'tenant "{t["name"]}" is declared twice')
        if t["activation"] not in ("password", "sso"):
            raise ConfigError(origin, f"{where}.activation", 'must be "password" or "sso"')
        if t["activation"] == "sso" and not t["login_url"]:
            raise ConfigError(origin, f"{where}.login_url", 'required when activation = "sso"')
        if t["archive_after_suspended_days"] is not None and t["archive_after_suspended_days"] < 1:
            raise ConfigError(origin, f"{where}.archive_after_suspended_days", "must be at least 1 (or left out)")
        if t["request_log_days"] < 1:
            raise ConfigError(origin, f"{where}.request_log_days", "must be at least 1")
        domains = t["email_domains"] or []
        for j, domain in enumerate(domains):
            if not isinstance(domain, str) or not domain.strip() or "@" in domain or domain != domain.strip():
                raise ConfigError(origin, f"{where}.email_domains[{j + 1}]", f"{domain!r} is not a domain name")
        if t["held_plan_days"] < 1:
            raise ConfigError(origin, f"{where}.held_plan_days", "must be at least 1")
        if not 0 <= float(t["scim_deprovision_limit"]) <= 1:
            raise ConfigError(origin, f"{where}.scim_deprovision_limit", "must be a fraction between 0 and 1")
        if t["scim_deprovision_minimum"] < 0:
            raise ConfigError(origin, f"{where}.scim_deprovision_minimum", "must not be negative")
        if t["scim_deprovision_window_minutes"] < 1:
            raise ConfigError(origin, f"{where}.scim_deprovision_window_minutes", "must be at least 1")
        if t["seat_limit"] is not None and t["seat_limit"] < 0:
            raise ConfigError(origin, f"{where}.seat_limit", "must not be negative")
        alert_emails = t["alert_emails"] or []
        for j, address in enumerate(alert_emails):
            if not isinstance(address, str) or address_problem(address) is not None:
                raise ConfigError(origin, f"{where}.alert_emails[{j + 1}]", f"{address!r} is not an email address")
        for key in ("alert_after_failed_runs", "alert_queued_minutes"):
            if t[key] < 1:
                raise ConfigError(origin, f"{where}.{key}", "must be at least 1")
        if t["user_name_changes"] not in USER_NAME_CHANGES:
            raise ConfigError(origin, f"{where}.user_name_changes", 'must be "update" or "recreate"')
        tenants[t["name"]] = TenantConfig(
            name=t["name"],
            mappings_path=_resolve(base, t["mappings"]),
            seat_limit=t["seat_limit"],
            default_language=t["default_language"],
            activation=t["activation"],
            login_url=t["login_url"],
            activation_expires_days=t["activation_expires_days"],
            suspended_counts_as_seat=t["suspended_counts_as_seat"],
            support_contact=t["support_contact"],
            archive_after_suspended_days=t["archive_after_suspended_days"],
            email_domains=tuple(d.casefold().rstrip(".") for d in domains),
            held_plan_days=t["held_plan_days"],
            alert_emails=tuple(alert_emails),
            alert_after_failed_runs=t["alert_after_failed_runs"],
            alert_queued_minutes=t["alert_queued_minutes"],
            request_log_days=t["request_log_days"],
            scim_deprovision_limit=float(t["scim_deprovision_limit"]),
            scim_deprovision_minimum=t["scim_deprovision_minimum"],
            scim_deprovision_window_minutes=t["scim_deprovision_window_minutes"],
            user_name_changes=t["user_name_changes"],
        )

    sources: dict[str, SourceConfig] = {}
    raw_sources = data.get("sources", [])
    if not isinstance(raw_sources, list):
        raise ConfigError(origin, "sources", "must be an array of [[sources]] tables")
    for i, raw in enumerate(raw_sources):
        where = f"sources[{i + 1}]"
        s = _section(raw, _SOURCE, origin, where)
        for required in ("name", "tenant", "kind"):
            if not s[required]:
                raise ConfigError(origin, f"{where}.{required}", "missing")
        if s["name"] in sources or s["name"] == "scim":
            raise ConfigError(origin, f"{where}.name", f'source name "{s["name"]}" is taken')
        if s["tenant"] not in tenants:
            raise ConfigError(origin, f"{where}.tenant", f'tenant "{s["tenant"]}" is not declared in [[tenants]]')
        if s["kind"] not in ("ldap", "ldif", "csv"):
            raise ConfigError(origin, f"{where}.kind", 'must be "ldap", "ldif" or "csv"')
        if s["flavor"] not in ("openldap", "ad"):
            raise ConfigError(origin, f"{where}.flavor", 'must be "openldap" or "ad"')
        if s["kind"] in ("ldif", "csv") and not s["path"]:
            raise ConfigError(origin, f"{where}.path", f'required for kind = "{s["kind"]}"')
        if s["kind"] == "csv":
            _check_csv(s, origin, where)
        if s["kind"] == "ldap" and not (s["url"] or s["urls"]):
            raise ConfigError(origin, f"{where}.url", 'required for kind = "ldap"')
        for required in ("user_base", "group_base"):
            if not s[required] and s["kind"] != "csv":
                raise ConfigError(origin, f"{where}.{required}", "missing")
        if not 0 <= float(s["deletion_threshold"]) <= 1:
            raise ConfigError(origin, f"{where}.deletion_threshold", "must be a share between 0 and 1")
        if s["delta_max_people"] < 1:
            raise ConfigError(origin, f"{where}.delta_max_people", "must be at least 1")
        for key in ("path", "ca_file", "bind_password_file"):
            if s[key]:
                s[key] = str(_resolve(base, s[key]))
        sources[s["name"]] = SourceConfig(name=s["name"], tenant=s["tenant"], kind=s["kind"], settings=s, origin=origin)

    return Config(
        path=path,
        database_url=_database_url(database["url"], base),
        server=server,
        email=email,
        webhook=webhook,
        logging=logging,
        outbox=outbox,
        tenants=tenants,
        sources=sources,
        schedules_dir=_resolve(base, schedules["dir"]) or base / "schedules",
        schedules_timezone=schedules["timezone"],
        console=console,
        api=api,
    )


def load_config(path: Path) -> Config:
    origin = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(origin, None, "config file not found (use --config PATH or set BRIDGE_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(origin, None, f"cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(origin, None, f"invalid TOML: {exc}") from None
    return parse_config(data, path)
