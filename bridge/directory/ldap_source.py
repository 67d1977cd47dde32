"""A live directory source: Active Directory or OpenLDAP read with ldap3.

One connection per run (authentik#22886 opened one per user), referrals never chased (trap 14),
every page and every ranged read checked: anything short of a complete, successful read raises
`SourceUnavailable`, so the sync engine aborts and archives nobody (trap 18, gitea#4402, glpi#984).

Full reads stream users, then groups, through `build_snapshot`; no page outlives the next one
(trap 8: authentik keeps pages in a cache and ran out of memory). Deltas read only the entries
whose change stamp passed the bookmark (`modifyTimestamp` on OpenLDAP, `uSNChanged` on AD,
trap 9), and resolve the member DNs of changed groups against what the store already knows.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from ldap3 import BASE, DEREF_NEVER, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPOperationResult
from ldap3.utils.conv import escape_filter_chars

from bridge.config import SourceConfig
from bridge.core.model import Snapshot
from bridge.directory import ber
from bridge.directory.normalize import (
    DirectorySettings,
    NormalizeReport,
    build_snapshot,
    classify,
    normalize_dn,
)
from bridge.directory.values import (
    SAM_NORMAL_USER_ACCOUNT,
    decode_anchor,
    decode_object_guid,
    decode_sid,
    strip_unique_member_uid,
    text_of,
)
from bridge.errors import BridgeError, ConfigError, SourceUnavailable

__all__ = ["Bookmark", "DeltaUnavailable", "KnownReferences", "LdapSource", "default_filters"]

log = logging.getLogger(__name__)

# AD answers at most MaxPageSize (default 1000) entries per page (trap 8).
MAX_PAGE_SIZE = 1000
# AD's default MaxValRange; asking for it explicitly also makes Samba (which otherwise returns
# every value) answer in ranges, so the same code path runs against both (trap 7).
DEFAULT_RANGE_SIZE = 1500
# Without contextCSN the bookmark comes from our clock: leave room for skew between the hosts.
CLOCK_FALLBACK_OVERLAP = timedelta(minutes=5)

_RESULT_SUCCESS = 0

_COMMON_USER_ATTRIBUTES = ("objectClass", "cn", "displayName", "givenName", "sn", "uid", "mail", "preferredLanguage")
_AD_USER_ATTRIBUTES = (
    "sAMAccountName",
    "userPrincipalName",
    "userAccountControl",
    "accountExpires",
    "primaryGroupID",
    "objectSid",
    "sAMAccountType",
    "logonHours",  # when the person may sign in (bridge/core/login_hours.py)
    "memberOf",
)
_OPENLDAP_USER_ATTRIBUTES = ("pwdAccountLockedTime", "nsAccountLock", "memberOf")
_GROUP_ATTRIBUTES = ("objectClass", "cn", "member", "uniqueMember", "memberUid", "memberOf")
_AD_GROUP_ATTRIBUTES = ("objectClass", "cn", "sAMAccountName", "objectSid", "memberOf")


class DeltaUnavailable(BridgeError):
    """A delta cannot be trusted (the server or the scope changed since the bookmark): run full."""


@dataclass(frozen=True)
class Bookmark:
    """Where the next delta starts: a change stamp, the server it is valid on, the scope it covers."""

    mark: str  # OpenLDAP: "csn:<contextCSN>" or "time:<GeneralizedTime>"; AD: a USN
    server: str  # AD: dsServiceName#invocationId (USNs are per DC, trap 9); OpenLDAP: informational
    scope: str  # fingerprint of bases, filters and attribute choices

    def as_state(self) -> dict[str, str]:
        return {"mark": self.mark, "server": self.server, "scope": self.scope}

    @classmethod
    def from_state(cls, state: Mapping[str, str | None]) -> Bookmark | None:
        if not state.get("mark"):
            return None
        return cls(mark=state["mark"] or "", server=state.get("server") or "", scope=state.get("scope") or "")


@dataclass(frozen=True)
class KnownReferences:
    """What the store knows about entries outside a delta read, to resolve changed groups' members.

    `by_dn`: normalised DN -> anchor (users and groups); `by_login`: lower-cased userName -> anchor
    (posixGroup `memberUid` holds logins, not DNs: trap 12).
    """

    by_dn: Mapping[str, str]
    by_login: Mapping[str, str]
    groups: frozenset[str] = frozenset()  # the anchors in `by_dn` that are groups


def default_filters(flavor: str) -> tuple[str, str]:
    if flavor == "ad":
        # sAMAccountType 805306368 is a normal user account: no computers, trusts or gMSAs (trap 16).
        return f"(&(objectClass=user)(sAMAccountType={SAM_NORMAL_USER_ACCOUNT}))", "(objectClass=group)"
    return (
        "(|(objectClass=person)(objectClass=posixAccount))",
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
    )


class LdapSource:
    """`kind = "ldap"`: `fetch` reads the whole scope, `fetch_delta` what changed since a bookmark.

    After either, `bookmark` holds the position to store once the run has been applied. The
    connection is opened on first use and kept for the run (a delta that turns into a full read
    reuses it); `close()` ends it.
    """

    supports_delta = True

    def __init__(self, source: SourceConfig, settings: DirectorySettings) -> None:
        self.name = source.name
        self.settings = settings
        self.flavor = settings.flavor
        self.origin = source.origin
        where = f"sources.{source.name}"
        urls = [u for u in ([source.get("url")] if source.get("url") else []) + list(source.get("urls") or [])]
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ConfigError(source.origin, f"{where}.urls", "must be a list of ldap:// or ldaps:// URLs")
        for url in urls:
            if urlsplit(url).scheme.lower() not in ("ldap", "ldaps"):
                raise ConfigError(source.origin, f"{where}.url", f"{url!r}: must start with ldap:// or ldaps://")
        self.urls = list(dict.fromkeys(urls))
        self.bind_dn: str | None = source.get("bind_dn")
        self._password = source.secret("bind_password")
        if self.bind_dn and self._password is None:
            raise ConfigError(
                source.origin, f"{where}.bind_password_env", "bind_dn is set but no bind_password_env or _file"
            )
        # ldap3 packs the receive timeout into a C struct: whole seconds only.
        self.timeout = max(1, math.ceil(float(source.get("timeout") or 30)))
        self.start_tls = bool(source.get("start_tls"))
        self.tls_verify = source.get("tls_verify") is not False
        self.ca_file: str | None = source.get("ca_file")
        page_size = int(source.get("page_size") or 500)
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigError(source.origin, f"{where}.page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        self.page_size = page_size
        self.range_size = int(source.get("range_size") or DEFAULT_RANGE_SIZE)
        self.delta_overlap = timedelta(seconds=float(source.get("delta_overlap") or 0))
        default_user, default_group = default_filters(self.flavor)
        self.user_filter = _checked_filter(source.get("user_filter") or default_user, source, "user_filter")
        self.group_filter = _checked_filter(source.get("group_filter") or default_group, source, "group_filter")
        self.user_attributes = self._user_attributes()
        self.group_attributes = self._group_attributes()
        self.scope = self._scope_fingerprint()
        self.bookmark: Bookmark | None = None
        self.server_url: str | None = None
        self._conn: Connection | None = None

    # ---- reading --------------------------------------------------------------------------

    def fetch(self, now: datetime) -> tuple[Snapshot, NormalizeReport]:
        """A complete read of users and groups; raises `SourceUnavailable` unless it completed."""
        mark = self._current_mark(now)
        entries = self._entries(self.user_filter, self.group_filter)
        snapshot, report = build_snapshot(entries, self.settings, now)
        self.bookmark = mark
        return snapshot, report

    def fetch_delta(
        self,
        now: datetime,
        since: Bookmark,
        known: Callable[[], KnownReferences],
        limit: int | None = None,
    ) -> tuple[Snapshot, NormalizeReport]:
        """The users and groups changed since `since`. Raises `DeltaUnavailable` when a delta from
        that bookmark cannot be trusted or, with `limit`, when more than `limit` users changed
        (a full run is then the better tool), and `SourceUnavailable` when the read fails."""
        if since.scope != self.scope:
            raise DeltaUnavailable("the source's bases, filters or attributes changed since the last full run")
        mark = self._current_mark(now)
        if self.flavor == "ad":
            # USNs are per DC and restart meaningfully only on the same database (trap 9).
            if mark.server != since.server:
                raise DeltaUnavailable(f"the domain controller changed ({since.server or '?'} -> {mark.server})")
            if int(mark.mark) < int(since.mark):
                raise DeltaUnavailable("the domain controller's USN went backwards (restored from a backup?)")
            clause = f"(uSNChanged>={int(since.mark) + 1})"
        elif since.mark.startswith("csn:"):
            # entryCSN has microseconds; modifyTimestamp only seconds, so a bookmark in the same
            # second as a bulk load would re-read the whole second.
            clause = f"(entryCSN>={escape_filter_chars(since.mark[4:])})"
        else:
            clause = f"(modifyTimestamp>={escape_filter_chars(since.mark.removeprefix('time:'))})"
        user_filter = f"(&{self.user_filter}{clause})"
        group_filter = f"(&{self.group_filter}{clause})"
        if limit is not None and self._more_than(self.settings.user_base, user_filter, limit):
            # Counted first on DNs alone (no attribute is sent): a delta inside the clock-overlap
            # window, or after a script touched every user's uSNChanged, would otherwise read (and
            # hold) every entry, and then the full run read them all again.
            raise DeltaUnavailable(f"more than {limit} users changed since the last run")
        # A delta is small by nature; holding it lets the group references be resolved after.
        entries = list(self._entries(user_filter, group_filter))
        snapshot, report = build_snapshot(iter(entries), self.settings, now)
        kinds = [(classify(attrs, self.flavor), dn, attrs) for dn, attrs in entries]
        group_entries = [(dn, attrs) for kind, dn, attrs in kinds if kind == "group"]
        user_entries = [(dn, attrs) for kind, dn, attrs in kinds if kind == "user" and attrs.get("memberof")]
        references: KnownReferences | None = None
        if group_entries and snapshot.groups:
            references = known()
            self._resolve_outside(snapshot, group_entries, references)
        if user_entries and snapshot.users:
            self._resolve_member_of(snapshot, user_entries, references or known())
        self.bookmark = mark
        return snapshot, report

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(LDAPException, OSError):
                conn.unbind()

    # ---- connection -----------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is not None:
            return self._conn
        failures = []
        # Failover in configuration order (ldap3 ServerPool FIRST semantics), done here because
        # the pool only probes TCP reachability and then sleeps POOLING_LOOP_TIMEOUT (10 s) after
        # a failed cycle: a DC whose certificate or bind fails must be skipped too, quickly.
        for url in self.urls:
            try:
                self._conn = self._open(url)
                self.server_url = url
                return self._conn
            except Exception as exc:  # whatever stops one server, the next may work
                failures.append(f"{_redacted(url)}: {_describe(exc)}")
                log.warning("directory %s: cannot use %s: %s", self.name, _redacted(url), _describe(exc))
        raise SourceUnavailable(f"no directory server could be used ({'; '.join(failures)})")

    def _open(self, url: str) -> Connection:
        parts = urlsplit(url)
        use_ssl = parts.scheme.lower() == "ldaps"
        tls = None
        if use_ssl or self.start_tls:
            # ldap3's Tls() verifies nothing unless told to (trap 15).
            tls = Tls(
                validate=ssl.CERT_REQUIRED if self.tls_verify else ssl.CERT_NONE,
                ca_certs_file=self.ca_file,
            )
        server = Server(
            parts.hostname or "localhost",
            port=parts.port or (636 if use_ssl else 389),
            use_ssl=use_ssl,
            tls=tls,
            get_info=NONE,  # raw values only: schema-formatted ones change type (trap 15)
            connect_timeout=self.timeout,
        )
        conn = Connection(
            server,
            user=self.bind_dn,
            password=self._password,
            auto_bind=False,
            auto_referrals=False,  # never chase referrals (trap 14)
            auto_range=False,  # ranges are read here, with every step checked (trap 7)
            return_empty_attributes=False,
            raise_exceptions=True,
            receive_timeout=self.timeout,
            read_only=True,
            check_names=False,
        )
        try:
            conn.open()
            if self.start_tls and not use_ssl:
                conn.start_tls()
            elif not use_ssl and self._password and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
                log.warning("directory %s: binding to %s without TLS sends the password in clear", self.name, url)
            if not conn.bind():
                who = self.bind_dn or "anonymous"
                raise SourceUnavailable(f"bind as {who} refused: {conn.result.get('description')}")
        except BaseException:
            with contextlib.suppress(LDAPException, OSError):
                conn.unbind()
            raise
        ber.install(conn)  # entries as raw bytes only, decoded fast (bridge/directory/ber.py)
        return conn

    def _search(self, base: str, filter_: str, scope: str, attributes: Sequence[str]) -> list[dict[str, Any]]:
        """One non-paged search (rootDSE, base-scope reads); anything but success raises. Entries
        come as `dn` + `raw_attributes` with lower-cased names (bridge/directory/ber.py)."""
        conn = self._connection()
        try:
            conn.search(base, filter_, scope, attributes=list(attributes), dereference_aliases=DEREF_NEVER)
        except LDAPException as exc:
            raise SourceUnavailable(f"search of {base or 'the rootDSE'} failed: {_describe(exc)}") from None
        _check_result(conn, base)
        return [e for e in conn.response or () if e.get("type") == "searchResEntry"]

    def _paged(self, base: str, filter_: str, attributes: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stream a subtree search page by page, checking each page's result.

        Written out instead of ldap3's `paged_search(generator=True)`, which keeps going silently on
        sizeLimitExceeded and timeLimitExceeded (they are in ldap3's DO_NOT_RAISE_EXCEPTIONS):
        exactly the partial read that deactivated every user in gitea#4402 (trap 18).
        """
        for entries, _ in self._pages(base, filter_, list(attributes)):
            for entry in entries:
                yield entry["dn"], entry["raw_attributes"]

    def _pages(self, base: str, filter_: str, attributes: list[str]) -> Iterator[tuple[list[Any], bytes | None]]:
        """Each page's entries, checked, with the cookie of the next page (None after the last).
        The page and its cookie are taken off the connection before they are handed out: the
        caller may search on it meanwhile (an AD group's ranged members)."""
        conn = self._connection()
        cookie: bytes | None = None
        while True:
            try:
                conn.search(
                    base,
                    filter_,
                    SUBTREE,
                    attributes=attributes,
                    dereference_aliases=DEREF_NEVER,
                    # Critical: a server that ignores paging must fail, not answer a capped list (trap 8).
                    paged_size=self.page_size,
                    paged_criticality=True,
                    paged_cookie=cookie,
                )
            except LDAPException as exc:
                raise SourceUnavailable(f"search of {base} failed: {_describe(exc)}") from None
            _check_result(conn, base)
            # Continuation references (searchResRef) are not followed (trap 14).
            entries = [entry for entry in conn.response or () if entry.get("type") == "searchResEntry"]
            conn.response = None  # let the page go as soon as it is consumed
            try:
                cookie = (conn.result.get("controls") or {})["1.2.840.113556.1.4.319"]["value"]["cookie"]
            except (KeyError, TypeError):
                cookie = None
            yield entries, cookie or None
            if not cookie:
                return

    def _more_than(self, base: str, filter_: str, limit: int) -> bool:
        """Whether the search matches more than `limit` entries, read page by page without
        attributes ("1.1") and abandoned (a page size of 0 with the cookie, RFC 2696) as soon as
        the count passes `limit`. The same pages, with the same checks, as `_paged` reads."""
        count = 0
        for entries, cookie in self._pages(base, filter_, ["1.1"]):
            count += len(entries)
            if count > limit:
                if cookie:
                    conn = self._connection()
                    with contextlib.suppress(LDAPException):
                        conn.search(base, filter_, SUBTREE, attributes=["1.1"], paged_size=0, paged_cookie=cookie)
                    conn.response = None
                return True
        return False

    def _entries(self, user_filter: str, group_filter: str) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self._paged(self.settings.user_base, user_filter, self.user_attributes)
        for dn, attributes in self._paged(self.settings.group_base, group_filter, self.group_attributes):
            if self.flavor == "ad":
                attributes = self._complete_ranges(dn, attributes)
            yield dn, attributes

    def _complete_ranges(self, dn: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """Fetch the rest of every `attr;range=low-high` value list until the high bound is `*`.

        AD returns big multi-valued attributes in slices (`member;range=0-1499`) and the client
        asks for the next one with a base-scope read (trap 7); a group cut short would silently
        drop its members' roles (owncloud#20274, adobe user-sync#423).
        """
        ranged = [key for key in attributes if ";range=" in key]
        if not ranged:
            return attributes
        out = {k: v for k, v in attributes.items() if ";range=" not in k}
        for key in ranged:
            name, _, bounds = key.partition(";range=")
            values = list(attributes[key])
            high = bounds.partition("-")[2]
            steps = 0
            while high != "*":
                start = int(high) + 1
                request = f"{name};range={start}-{start + self.range_size - 1}"
                found = self._search(dn, "(objectClass=*)", BASE, [request])
                if not found:
                    raise SourceUnavailable(f"{dn} disappeared while its {name} values were being read")
                got = found[0]["raw_attributes"]
                slice_key = next((k for k in got if k.startswith(f"{name};range=")), None)
                if slice_key is None:
                    raise SourceUnavailable(f"{dn}: the server returned no {name} values from {start} on")
                got_low, _, high = slice_key.partition(";range=")[2].partition("-")
                if not got_low.isdigit() or int(got_low) != start or (high != "*" and not high.isdigit()):
                    raise SourceUnavailable(f"{dn}: unexpected range {slice_key!r} after {start - 1}")
                values.extend(got[slice_key])
                steps += 1
                if steps > 100_000:
                    raise SourceUnavailable(f"{dn}: {name} range retrieval does not end")
            out[name] = [*out.get(name, ()), *values]
        return out

    # ---- bookmarks ------------------------------------------------------------------------

    def _current_mark(self, now: datetime) -> Bookmark:
        """The change stamp to continue from, read *before* the entries so nothing is skipped."""
        # Named rootDSE attributes trip ldap3's schema check on Samba; OpenLDAP lists namingContexts
        # among the operational ones ("+").
        root = self._search("", "(objectClass=*)", BASE, ["*"] if self.flavor == "ad" else ["*", "+"])
        attributes = root[0]["raw_attributes"] if root else {}
        if self.flavor == "ad":
            usn = _first_text(attributes, "highestcommittedusn")
            service = _first_text(attributes, "dsservicename")
            if usn is None or service is None:
                raise SourceUnavailable("the rootDSE has no highestCommittedUSN or dsServiceName: is this AD?")
            invocation = ""
            try:
                found = self._search(service, "(objectClass=*)", BASE, ["invocationId"])
                raw = found[0]["raw_attributes"].get("invocationid") if found else None
                if raw:
                    invocation = decode_object_guid(bytes(raw[0]))
            except SourceUnavailable:
                pass  # the bind account may not read NTDS Settings; dsServiceName still pins the DC
            return Bookmark(mark=usn, server=f"{service}#{invocation}", scope=self.scope)
        # contextCSN (syncprov) is the CSN of the last write on the server, in the server's clock;
        # every later write gets a greater entryCSN. One value per provider in multi-provider set-ups:
        # the latest counts, and `delta_overlap` covers replication lag between providers.
        contexts = [text_of(v) for v in attributes.get("namingcontexts", ())]
        csns: list[str] = []
        for context in _contexts_for(contexts, (self.settings.user_base, self.settings.group_base)):
            found = self._search(context, "(objectClass=*)", BASE, ["contextCSN"])
            values = [text_of(v) for v in (found[0]["raw_attributes"].get("contextcsn", ()) if found else ())]
            if not values or not all(_csn_time(v) for v in values):
                csns = []
                break
            csns.append(max(values))
        server = self.server_url or ""
        if csns:
            csn = min(csns)
            if self.delta_overlap:
                earlier = _csn_time(csn) - self.delta_overlap  # type: ignore[operator]
                csn = earlier.strftime("%Y%m%d%H%M%S.000000Z#000000#000#000000")
            return Bookmark(mark=f"csn:{csn}", server=server, scope=self.scope)
        log.info("directory %s: no contextCSN (syncprov overlay); delta bookmarks use this host's clock", self.name)
        mark_time = now - max(self.delta_overlap, CLOCK_FALLBACK_OVERLAP)
        return Bookmark(mark=f"time:{mark_time.strftime('%Y%m%d%H%M%SZ')}", server=server, scope=self.scope)

    # ---- delta references -----------------------------------------------------------------

    def _resolve_outside(
        self, snapshot: Snapshot, group_entries: list[tuple[str, dict[str, Any]]], known: KnownReferences
    ) -> None:
        """Add to each changed group the members `build_snapshot` could not resolve (unchanged
        users and groups, which a delta does not read), and on AD its primary-group members."""
        by_dn = {g.dn: g for g in snapshot.groups.values()}
        for dn, attributes in group_entries:
            group = by_dn.get(dn)
            if group is None:
                continue
            extra: set[str] = set()
            for key in ("member", "uniquemember"):
                for raw in attributes.get(key, ()):
                    value = text_of(raw)
                    if key == "uniquemember":
                        value = strip_unique_member_uid(value)
                    try:
                        anchor = known.by_dn.get(normalize_dn(value))
                    except ValueError:
                        anchor = None
                    if anchor is not None:
                        extra.add(anchor)
            for raw in attributes.get("memberuid", ()):
                anchor = known.by_login.get(text_of(raw).strip().lower())
                if anchor is not None:
                    extra.add(anchor)
            if self.flavor == "ad":
                extra |= self._primary_members(attributes)
            extra.discard(group.anchor)
            if extra - set(group.members):
                snapshot.groups[group.anchor] = replace(group, members=tuple(sorted(set(group.members) | extra)))

    def _resolve_member_of(
        self, snapshot: Snapshot, user_entries: list[tuple[str, dict[str, Any]]], known: KnownReferences
    ) -> None:
        """Add to each changed user the unchanged groups their `memberOf` names.

        A person moved back into scope is still listed by the groups that kept them, but a full
        run stored those lists without them (they were out of scope), and the groups' own stamps
        did not move. The back-link on the person's entry is the only side that shows it.
        """
        by_dn = {u.dn: u for u in snapshot.users.values()}
        for dn, attributes in user_entries:
            user = by_dn.get(dn)
            if user is None:
                continue
            extra: set[str] = set()
            for raw in attributes.get("memberof", ()):
                try:
                    anchor = known.by_dn.get(normalize_dn(text_of(raw)))
                except ValueError:
                    continue
                if anchor is not None and anchor in known.groups:
                    extra.add(anchor)
            if extra - set(user.groups):
                snapshot.users[user.anchor] = replace(user, groups=tuple(sorted(set(user.groups) | extra)))

    def _primary_members(self, attributes: Mapping[str, Sequence[Any]]) -> set[str]:
        """Users whose primary group this is: `member` never lists them (trap 5)."""
        raw_sid = next(iter(attributes.get("objectsid", ())), None)
        if raw_sid is None:
            return set()
        try:
            sid = decode_sid(bytes(raw_sid) if isinstance(raw_sid, bytearray) else raw_sid)
            rid = int(sid.rpartition("-")[2])
        except ValueError:
            return set()
        anchors = set()
        attribute = self.settings.anchor_attribute or "objectguid"
        filter_ = f"(&{self.user_filter}(primaryGroupID={rid}))"
        for _, entry in self._paged(self.settings.user_base, filter_, [attribute]):
            value = next(iter(entry.get(attribute, ())), None)
            if value is not None:
                try:
                    anchors.add(decode_anchor(value, attribute, self.flavor))
                except ValueError:
                    continue
        return anchors

    # ---- configuration --------------------------------------------------------------------

    def _user_attributes(self) -> list[str]:
        s = self.settings
        names: list[str] = [*_COMMON_USER_ATTRIBUTES]
        names += _AD_USER_ATTRIBUTES if self.flavor == "ad" else _OPENLDAP_USER_ATTRIBUTES
        names += [s.anchor_attribute or "", s.user_name_attribute or "", s.email_attribute, *s.keep_attributes]
        names += list(s.attribute_map)
        return _unique(names)

    def _group_attributes(self) -> list[str]:
        names = [self.settings.anchor_attribute or ""]
        if self.flavor == "ad":
            names += [*_AD_GROUP_ATTRIBUTES, f"member;range=0-{self.range_size - 1}"]
        else:
            names += _GROUP_ATTRIBUTES
        return _unique(names)

    def _scope_fingerprint(self) -> str:
        s = self.settings
        payload = "\n".join(
            [
                self.flavor,
                normalize_dn(s.user_base),
                normalize_dn(s.group_base),
                self.user_filter,
                self.group_filter,
                s.anchor_attribute or "",
                s.user_name_attribute or "",
                s.email_attribute,
                ",".join(sorted(s.keep_attributes)),
                ",".join(f"{k}={v}" for k, v in sorted(s.attribute_map.items())),
                # AD users are read with logonHours since issue 19: the first delta after that
                # change is a full run, so every person's hours arrive, not only the changed ones'.
                *(["logonhours"] if self.flavor == "ad" else []),
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ---- helpers -----------------------------------------------------------------------------


def _checked_filter(text: str, source: SourceConfig, key: str) -> str:
    from ldap3.core.exceptions import LDAPInvalidFilterError
    from ldap3.operation.search import parse_filter

    text = text.strip()
    if not text.startswith("("):
        text = f"({text})"
    try:
        parse_filter(text, None, True, False, None, False)
    except (LDAPInvalidFilterError, LDAPException) as exc:
        raise ConfigError(source.origin, f"sources.{source.name}.{key}", f"not an LDAP filter: {exc}") from None
    return text


def _check_result(conn: Connection, base: str) -> None:
    result = conn.result or {}
    code = result.get("result")
    if code != _RESULT_SUCCESS:
        # sizeLimitExceeded (4), timeLimitExceeded (3), referral (10), noSuchObject (32), busy,
        # unavailable...: none of them is a complete answer (trap 18).
        raise SourceUnavailable(
            f"search of {base or 'the rootDSE'} ended with {result.get('description')} ({code})"
            + (f": {result.get('message')}" if result.get("message") else "")
        )


def _first_text(attributes: Mapping[str, Sequence[Any]], name: str) -> str | None:
    values = attributes.get(name)
    return text_of(values[0]).strip() if values else None


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        if name and name.lower() not in seen:
            seen[name.lower()] = name
    return list(seen.values())


def _contexts_for(contexts: Sequence[str], bases: Sequence[str]) -> list[str]:
    """The naming contexts holding each base (the longest matching suffix)."""
    normalized = [(normalize_dn(c), c) for c in contexts if c]
    out: list[str] = []
    for base in bases:
        b = normalize_dn(base)
        matches = [(len(n), c) for n, c in normalized if b == n or b.endswith("," + n)]
        if matches:
            context = max(matches)[1]
            if context not in out:
                out.append(context)
    return out


def _csn_time(csn: str) -> datetime | None:
    # CSN: YYYYmmddHHMMSS.ffffffZ#count#sid#mod (RFC draft-ietf-ldup-model, as slapd writes it).
    try:
        return datetime.strptime(csn.split("#", 1)[0].split(".", 1)[0].rstrip("Z"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LDAPOperationResult):
        message = f": {exc.message}" if getattr(exc, "message", None) else ""
        return f"{exc.description} ({exc.result}){message}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
