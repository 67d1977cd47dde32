"""Prebuilt SELECTs run on the DB-API cursor, for the few queries on a hot request path.

Executing a Core statement through a SQLAlchemy `Connection` costs about 200 µs of Python per
statement on the development machine (execution context, events, parameter and cache-key
handling), while SQLite answers an indexed lookup in about 25 µs: an identity provider's
`userName eq` lookup ran three statements plus BEGIN/COMMIT and spent most of its time there
(docs/benchmarks.md). A `FastQuery` is still written in SQLAlchemy Core, compiled once per
dialect (SQLite and PostgreSQL alike), and decodes its columns with SQLAlchemy's own result
processors, so rows come back exactly as `Connection.execute` would give them, as named tuples.

Only for statements whose parameters are plain values (no expanding IN, no bind processors);
`FastQuery` refuses others when it compiles them.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select
from sqlalchemy.engine import Dialect


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # parameter names in order, for qmark/format styles
    fixed: Mapping[str, Any]  # values bound in the statement itself (literals)
    processors: tuple[Callable[[Any], Any] | None, ...]
    row: type


class FastQuery:
    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        fixed: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            if bind.expanding or bind.type._cached_bind_processor(dialect) is not None:
                raise ValueError(f"FastQuery cannot bind {name!r}: expanding or processed parameter")
            if not bind.required:
                fixed[name] = bind.effective_value
        columns = list(self.statement.selected_columns)
        processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        return _Compiled(
            sql=str(compiled),
            positional=tuple(compiled.positiontup or ()) if compiled.positional else None,
            fixed=fixed,
            processors=processors,
            row=namedtuple("FastRow", [c.key for c in columns], rename=True),  # type: ignore[misc]
        )

    def rows(self, cursor: Any, dialect: Dialect, params: Mapping[str, Any]) -> list[Any]:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        values = {**compiled.fixed, **params} if compiled.fixed else params
        if compiled.positional is not None:
            cursor.execute(compiled.sql, tuple(values[name] for name in compiled.positional))
        else:
            cursor.execute(compiled.sql, values)
        processors, make = compiled.processors, compiled.row._make  # type: ignore[attr-defined]
        return [
            make(value if p is None else p(value) for p, value in zip(processors, raw, strict=True))
            for raw in cursor.fetchall()
        ]


@contextmanager
def raw_cursor(engine: Engine) -> Iterator[Any]:
    """A DB-API cursor on a pooled connection, for reads; the connection goes back to the pool
    (rolled back, as the pool resets every connection it takes back) when the block ends."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
    finally:
        connection.close()
