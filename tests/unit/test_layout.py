"""The layout rule the import linter cannot state: SQL lives in `bridge/store/`.

A module outside the store may hold a Connection or an Engine and hand it to store functions; it
may not build or run a statement. The filter transpiler is the one exception: it turns a SCIM
filter into the where-clause expressions that `bridge/store/scim.py` runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"

# Building a statement: SQLAlchemy's constructors and expression helpers.
SQL_BUILDERS = {
    "select", "insert", "update", "delete", "text", "func", "bindparam", "literal", "literal_column",
    "and_", "or_", "not_", "case", "cast", "exists", "union", "union_all", "tuple_", "column", "table",
}  # fmt: skip
# Running one.
SQL_RUNNERS = {"execute", "exec_driver_sql", "executemany"}

TRANSPILER = {"scim/filter.py", "scim/query.py"}


def sql_in(path: Path) -> list[str]:
    """What in the module builds or runs SQL, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("sqlalchemy"):
                found += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in SQL_BUILDERS]
            if node.module == "bridge.store.tables" or (
                node.module == "bridge.store" and any(a.name == "tables" for a in node.names)
            ):
                found.append(f"{node.lineno}: imports the tables")
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name == "bridge.store.tables"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_RUNNERS:
            found.append(f"{node.lineno}: runs .{node.func.attr}()")
    return found


def outside_store() -> list[str]:
    return sorted(str(p.relative_to(BRIDGE)) for p in BRIDGE.rglob("*.py") if p.relative_to(BRIDGE).parts[0] != "store")


@pytest.mark.parametrize("module", outside_store())
def test_no_sql_outside_the_store(module: str) -> None:
    found = sql_in(BRIDGE / module)
    if module in TRANSPILER:
        return
    assert not found, f"SQL outside bridge/store/ in {module}: " + "; ".join(found)


def test_the_check_finds_sql() -> None:
    # The rule is only as good as its detector: the store itself must trip it.
    assert sql_in(BRIDGE / "store" / "accounts.py")
    assert sql_in(BRIDGE / "store" / "tokens.py")


def test_the_scim_door_stays_thin() -> None:
    # Issue 14: the door had grown to a 925-line module that held routes, handlers, the query
    # engine and a lifecycle plan; about 400 lines is where a file here should be split.
    long = {p.name: n for p in (BRIDGE / "scim").glob("*.py") if (n := len(p.read_text().splitlines())) > 410}
    assert not long, f"files in bridge/scim/ over about 400 lines: {long}"
