"""Many-row INSERTs on the DB-API cursor of a SQLAlchemy connection, inside its transaction.

A first sync writes about a million rows (identities, accounts, role grants, audit events,
outbox rows, memberships). SQLAlchemy's executemany builds a parameter dict per row through its
generic machinery, about 25 µs a row on the development machine, which was more than SQLite took
to store the row (docs/benchmarks.md). `insert_many` compiles each INSERT once per dialect and
column set, runs SQLAlchemy's own bind processors per column (JSON, aware UTC datetimes, bools),
and hands the rows to the driver's executemany. Database errors come back as SQLAlchemy's
exceptions (`IntegrityError`, ...), so callers handle them exactly as before.

On PostgreSQL, from `_COPY_MIN_ROWS` rows on, the rows go in one `COPY ... FROM STDIN` instead:
psycopg's executemany sends one statement per row through its pipeline, about 200 µs of Python
a row here (a first sync of 20,000 people spent 58 of its 82 s of apply in it); COPY streams
them (same values, same order, so serial ids still grow with the list; an error aborts the
transaction as the INSERT's would and comes back as the same SQLAlchemy exception).

Rows must all carry the same keys (they are built by one function per table); Python-side
column defaults are not applied here, so the callers give every column they need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

_Processor = Callable[[Any], Any] | None
_Compiled = tuple[str, tuple[str, ...] | None, tuple[_Processor, ...]] | None
_compiled: dict[tuple[str, str, tuple[str, ...]], _Compiled] = {}
_COPY_MIN_ROWS = 20


def _compile(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Compiled:
    """(SQL, positional parameter order or None, bind processors in parameter order), or None
    when the INSERT needs more than `keys` (a Python-side default the rows do not carry)."""
    cache_key = (dialect.name, table.name, keys)
    if cache_key in _compiled:
        return _compiled[cache_key]
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.bind_names.values())
    found: _Compiled = None
    if set(names) == set(keys) and len(names) == len(keys):
        order = names if compiled.positional else keys
        processors = tuple(table.c[key].type._cached_bind_processor(dialect) for key in order)
        found = (str(compiled), names if compiled.positional else None, processors)
    _compiled[cache_key] = found
    return found


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    keys = tuple(rows[0])
    key_set = set(keys)
    if any(row.keys() != key_set for row in rows):
        conn.execute(insert(table), list(rows))  # mixed shapes: SQLAlchemy's general path
        return
    dialect = conn.dialect
    compiled = _compile(table, keys, dialect)
    if compiled is None:
        conn.execute(insert(table), list(rows))
        return
    sql, positional, processors = compiled
    order = positional if positional is not None else keys
    copy = dialect.name == "postgresql" and dialect.driver == "psycopg" and len(rows) >= _COPY_MIN_ROWS
    processed = [(i, p, {}) for i, p in enumerate(processors) if p is not None]
    take = itemgetter(*order) if len(order) > 1 else (lambda row: (row[order[0]],))
    params: list[Any] = []
    for row in rows:
        values = list(take(row))
        for i, processor, seen in processed:
            raw = values[i]
            if raw is None:
                continue
            if isinstance(raw, (dict, list)):
                values[i] = processor(raw)  # mutable: never memoised by identity
                continue
            # Rows of one batch share their timestamps (the run's `now`): each distinct value is
            # processed once per column, not once per row. `seen` keeps `raw` alive, so its id
            # cannot be reused by another object meanwhile.
            hit = seen.get(id(raw))
            if hit is None:
                hit = seen[id(raw)] = (raw, processor(raw))
            values[i] = hit[1]
        params.append(tuple(values) if positional is not None or copy else dict(zip(order, values, strict=True)))
    cursor = conn.connection.cursor()
    try:
        if copy:
            preparer = dialect.identifier_preparer
            columns = ", ".join(preparer.quote(table.c[k].name) for k in order)
            sql = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN"
            with cursor.copy(sql) as stream:
                for values in params:
                    stream.write_row(values)
        else:
            cursor.executemany(sql, params)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, params[:1], exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
    finally:
        cursor.close()
