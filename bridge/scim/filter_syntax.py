"""SCIM filter syntax (RFC 7644 3.4.2.2): scim2-filter-parser's lexer and grammar, with three
fixes, and the limits a filter must stay within (length, nesting, comparisons).

- string values may contain JSON escapes (`displayName eq "Sales \\"EU\\""`); 0.7.0's lexer stops
  at the first inner quote and fails;
- numbers are whole JSON numbers (0.7.0 lexes one digit at a time);
- "and" binds tighter than "or" (RFC 7644 3.4.2.2 order of operations); 0.7.0 gives them the
  same precedence, so `a or b and c` meant `(a or b) and c`.

`bridge.scim.filter` translates the parsed tree to SQL.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from scim2_filter_parser import ast
from scim2_filter_parser.lexer import SCIMLexer
from scim2_filter_parser.parser import SCIMParser, SCIMParserError

from bridge.scim.errors import invalid_filter

MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 16
MAX_TERMS = 64
OPERATORS = ("eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr")


class Quoted(str):
    """A string compValue (quoted in the filter), as opposed to the bare words true/false/null."""

    __slots__ = ()


class FilterLexer(SCIMLexer):
    tokens = SCIMLexer.tokens

    # JSON string (RFC 8259 7): any escaped character may appear, including \" and \\.
    @_(r'"(?:[^"\\]|\\.)*"')  # type: ignore[name-defined]  # noqa: F821
    def COMP_VALUE(self, t: Any) -> Any:
        from bridge.scim.inbound import filter_string

        t.value = Quoted(filter_string(t.value[1:-1]))  # bad escapes, NUL, lone surrogates: invalidFilter
        return t

    @_(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # type: ignore[name-defined]  # noqa: F821
    def NUMBER(self, t: Any) -> Any:
        t.value = float(t.value) if any(c in t.value for c in ".eE") else int(t.value)
        if isinstance(t.value, float) and not math.isfinite(t.value):
            raise ValueError("number out of range")
        return t


def _rebuild_parser() -> type[SCIMParser]:
    # sly builds a grammar from the class body only, so the subclass re-declares the parent's
    # rules (their functions carry the productions) with a corrected precedence table.
    body: dict[str, Any] = {
        name: value for name, value in vars(SCIMParser).items() if callable(value) and hasattr(value, "rules")
    }
    namespace = type(SCIMParser).__prepare__("FilterParser", (SCIMParser,))
    namespace["tokens"] = FilterLexer.tokens
    # Lowest first: or, then and, then not (RFC 7644 3.4.2.2).
    namespace["precedence"] = (("left", "OR"), ("left", "AND"), ("right", "NOT"))
    namespace["error"] = SCIMParser.error
    for name, func_ in body.items():
        for f in _chain(func_):
            namespace[name] = f
    return type(SCIMParser)("FilterParser", (SCIMParser,), namespace)  # type: ignore[no-any-return]


def _chain(func_: Any) -> list[Any]:
    out = []
    while func_ is not None:
        out.append(func_)
        func_ = getattr(func_, "next_func", None)
    return list(reversed(out))


FilterParser = _rebuild_parser()


# One attribute, `eq`, one plain string (no escape, no control character, no surrogate), single
# spaces: anything else goes to the parser.
_SIMPLE_EQ = re.compile(r'([A-Za-z][A-Za-z0-9_-]*) (eq|EQ|Eq|eQ) "([^"\\\x00-\x1f\ud800-\udfff]*)"')
_KEYWORDS = frozenset(("and", "or", "not", "true", "false", "null", *OPERATORS))


@lru_cache(maxsize=1024)
def parse(text: str) -> ast.Filter:
    """The AST of a filter; cached, since clients repeat the same shapes (and the tree is not mutated)."""
    if len(text) > MAX_FILTER_LENGTH:
        raise invalid_filter(f"filter longer than {MAX_FILTER_LENGTH} characters")
    if not text.strip():
        raise invalid_filter("empty filter")
    simple = _SIMPLE_EQ.fullmatch(text)
    if simple is not None and simple.group(1).casefold() not in _KEYWORDS:
        # `value eq "..."`, the whole filter of every `members[value eq "..."]` removal (Entra
        # with aadOptscim062020 sends one per member, up to a thousand a request): the tree the
        # parser builds for it, without the parser's 110 µs (tests/unit/test_scim_filter.py).
        name, op, value = simple.groups()
        return ast.Filter(ast.AttrExpr(op, ast.AttrPath(name, None, None), ast.CompValue(Quoted(value))), False, None)
    if _nesting(text) > MAX_DEPTH:
        raise invalid_filter(f"filter nested deeper than {MAX_DEPTH} levels")
    try:
        tree = FilterParser().parse(FilterLexer().tokenize(text))
    except (SCIMParserError, ValueError, IndexError, AttributeError, TypeError) as exc:
        raise invalid_filter(f"invalid filter: {exc}") from None
    if tree is None:
        raise invalid_filter("invalid filter")
    _check_size(tree)
    return tree  # type: ignore[no-any-return]


def _nesting(text: str) -> int:
    """Deepest nesting of ( ) and [ ] outside string literals."""
    depth = deepest = 0
    quoted = escaped = False
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth -= 1
    return deepest


def comparisons(tree: ast.AST) -> int:
    """How many attribute comparisons a parsed filter holds."""
    terms = 0
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.AttrExpr):
            terms += 1
        if isinstance(node, ast.AST):
            stack.extend(getattr(node, f, None) for f in node._fields)
    return terms


def _check_size(tree: ast.AST) -> None:
    if comparisons(tree) > MAX_TERMS:
        raise invalid_filter(f"filter has more than {MAX_TERMS} comparisons")
