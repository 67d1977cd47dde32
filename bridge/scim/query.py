"""One SCIM list request as a query: filter (a plain `attr eq "x"` lookup or a translated
filter), sorting, paging and the projection, and how it runs on the store. Shared by the Flask
handlers and the fast lane (bridge/scim/lookup.py), so both answer from the same parse.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import Connection

from bridge.scim import discovery, inbound
from bridge.scim.errors import invalid_filter, invalid_value
from bridge.scim.filter import to_sql, translate
from bridge.scim.filter_syntax import MAX_FILTER_LENGTH
from bridge.scim.resources import Projection
from bridge.scim.schema import USER_TYPE, ResourceType
from bridge.store import scim as storage

# `userName eq "x"`: what Entra and Okta send before every create; answered without the parser.
_SIMPLE_EQ = re.compile(r'^\s*(userName|externalId|id|displayName)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.I)


# Every list is ordered by creation last, so pages are stable.
_CREATION_ORDER = (storage.identities.c.created_at, storage.identities.c.id)


class Query:
    """filter, sortBy/sortOrder, startIndex/count and the projection of one list request."""

    def __init__(self) -> None:
        self.where: Any = None
        self.lookup: tuple[str, str] | None = None  # (attribute, value) of a plain `attr eq "value"`
        self.driven_by_subquery = False
        self.order: list[Any] = []
        self.start = 1
        self.count = discovery.DEFAULT_COUNT
        self.projection = Projection()

    @classmethod
    def parse_lookup(cls, rt: ResourceType, params: Any) -> Query | None:
        """The query when its filter is a plain lookup on an indexed attribute (`userName eq
        "x"`), which needs no tenant to parse: the fast lane parses it before it knows the
        caller. None for any other filter."""
        text = param_text(params.get("filter"))
        simple = _SIMPLE_EQ.match(text) if text and len(text) <= MAX_FILTER_LENGTH else None
        kind = "user" if rt is USER_TYPE else "group"
        if simple is None or (kind, simple.group(1).casefold()) not in storage.LOOKUP_ATTRIBUTES:
            return None
        return cls.parse(rt, params, tenant_id=0)  # the tenant only scopes a translated filter

    @classmethod
    def parse(cls, rt: ResourceType, params: Any, tenant_id: int) -> Query:
        from bridge.scim.filter import GROUP_TARGETS, USER_TARGETS, Column

        q = cls()
        text = param_text(params.get("filter"))
        if text:
            inbound.check_text(text, "filter")
        if text and len(text) > MAX_FILTER_LENGTH:
            raise invalid_filter(f"filter longer than {MAX_FILTER_LENGTH} characters")
        simple = _SIMPLE_EQ.match(text) if text else None
        kind = "user" if rt is USER_TYPE else "group"
        if simple and (kind, simple.group(1).casefold()) in storage.LOOKUP_ATTRIBUTES:
            q.lookup = (simple.group(1).casefold(), inbound.filter_string(simple.group(2)))
        elif text:
            q.where, q.driven_by_subquery = translate(rt.name, text, tenant_id)
        q.start = max(inbound.index(params.get("startIndex"), "startIndex", 1), 1)
        q.count = min(
            max(inbound.index(params.get("count"), "count", discovery.DEFAULT_COUNT), 0), discovery.MAX_RESULTS
        )
        q.projection = projection_of(rt, params)
        sort_by = param_text(params.get("sortBy"))
        if sort_by:
            targets = USER_TARGETS if rt is USER_TYPE else GROUP_TARGETS
            key = sort_by.casefold().removeprefix(rt.schema.id.casefold() + ":")
            target = targets.get(key)
            if key in ("emails", "emails.value") and rt is USER_TYPE:
                column: Any = storage.identities.c.email_norm
            elif isinstance(target, Column):
                column = target.column
            else:
                raise invalid_value(f'cannot sort by "{sort_by}"')
            descending = (param_text(params.get("sortOrder")) or "ascending").lower() == "descending"
            q.order.append(column.desc() if descending else column.asc())
        q.order.extend(_CREATION_ORDER)
        return q

    def run(
        self, conn: Connection, tenant_id: int, kind: str, *, offset: int | None = None, limit: int | None = None
    ) -> tuple[list[Any], int]:
        offset = self.start - 1 if offset is None else offset
        limit = self.count if limit is None else limit
        if self.lookup is not None and offset == 0 and len(self.order) == 2 and limit > 0:
            rows = storage.lookup(conn, tenant_id, kind, *self.lookup, limit)
            if len(rows) < limit:
                return rows, len(rows)
        self._translate_lookup(tenant_id, kind)
        sqlite = conn.dialect.name == "sqlite"
        query = storage.base_query(tenant_id, kind, driven_by_subquery=sqlite and self.driven_by_subquery)
        order = self.order
        if self.where is not None:
            query = query.where(self.where)
            if sqlite:
                # Without statistics SQLite walks the (tenant, created) index to honour ORDER BY
                # ... LIMIT and tests the filter on every row; `+column` keeps it on the
                # filter's index and sorts the (few) matches instead.
                order = [_unindexed(o) for o in order]
        rows = list(conn.execute(query.order_by(*order).offset(offset).limit(limit))) if limit > 0 else []
        if offset == 0 and len(rows) < limit:
            return rows, len(rows)  # the whole result fits on this page: no COUNT needed
        return rows, self.total(conn, tenant_id, kind)

    def total(self, conn: Connection, tenant_id: int, kind: str) -> int:
        """How many resources of `kind` the filter matches (totalResults)."""
        self._translate_lookup(tenant_id, kind)
        sqlite = conn.dialect.name == "sqlite"
        count = storage.count_query(tenant_id, kind, self.where, driven_by_subquery=sqlite and self.driven_by_subquery)
        return int(conn.execute(count).scalar_one())

    def _translate_lookup(self, tenant_id: int, kind: str) -> None:
        # A lookup is answered by its index when it can be; anything else (a page past the
        # first, a count) needs it as a where-clause like any other filter.
        if self.lookup is not None and self.where is None:
            name = "User" if kind == "user" else "Group"
            self.where = to_sql(name, f"{self.lookup[0]} eq {json.dumps(self.lookup[1])}", tenant_id)


def _unindexed(clause: Any) -> Any:
    from sqlalchemy import literal_column

    element = getattr(clause, "element", clause)
    modifier = getattr(clause, "modifier", None)
    name = getattr(element, "name", None)
    table = getattr(getattr(element, "table", None), "name", None)
    if name is None or table is None:
        return clause
    plain = literal_column(f"+{table}.{name}")
    from sqlalchemy.sql import operators

    return plain.desc() if modifier is operators.desc_op else plain


def param_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return str(value)


def projection_of(rt: ResourceType, params: Any) -> Projection:
    """`attributes` / `excludedAttributes` of a query string or a search body."""
    return Projection.parse(rt, param_text(params.get("attributes")), param_text(params.get("excludedAttributes")))
