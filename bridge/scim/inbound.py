"""What a SCIM client sends, checked once at the door: bodies, filter literals, paging integers.

Every refusal is a SCIM 400 with its `scimType` (RFC 7644 3.12), raised before any transaction
opens, so a client's mistake never reaches the database (where SQLite would store a NUL that
PostgreSQL refuses) nor a recursive walk deep enough to raise RecursionError.

- JSON is decoded by orjson, which refuses NaN/Infinity, lone surrogates and nesting past 1024;
  bridge's own limit is lower (`MAX_DEPTH`): no SCIM resource nests more than a few levels.
- No string (value or key) may hold NUL or any other C0 control but tab, CR and LF: PostgreSQL
  cannot store NUL, and no identity attribute needs the others.
- Paging integers are bounded (`MAX_INDEX`): the databases' OFFSET is a signed 64-bit integer.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from bridge.scim.errors import invalid_filter, invalid_syntax, invalid_value

MAX_DEPTH = 32
MAX_INDEX = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def body(data: bytes) -> Any:
    """The request body as JSON, or invalidSyntax."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise invalid_syntax("the request body is not valid JSON (UTF-8, no NaN or Infinity)") from None
    check_tree(value)
    return value


def check_tree(value: Any) -> None:
    """Depth and characters of a decoded body, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_chars(item, invalid_syntax)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise invalid_syntax(f"the request body nests deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, sub in item.items():
                    _check_chars(key, invalid_syntax)
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)


def check_text(text: str, name: str) -> str:
    """A query parameter's text: no control characters, no lone surrogates (invalidValue; the
    filter has its own scimType, see `filter_string`)."""
    _check_chars(text, invalid_filter if name == "filter" else invalid_value)
    return text


def filter_string(quoted: str) -> str:
    """The value of a filter's string literal (its text between the quotes, JSON escapes)."""
    if "\\" not in quoted:
        value = quoted
    else:
        try:
            value = orjson.loads(f'"{quoted}"'.encode("utf-8", "surrogatepass"))
        except (orjson.JSONDecodeError, UnicodeEncodeError):
            raise invalid_filter("invalid escape in a filter string") from None
    _check_chars(value, invalid_filter)
    return value  # type: ignore[no-any-return]


def index(value: Any, name: str, default: int) -> int:
    """startIndex / count as an integer (query text, or a JSON number of a SearchRequest)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise invalid_value(f'"{name}" must be an integer')
    if isinstance(value, str):
        text = value.strip()
        if not (text.lstrip("+-").isascii() and text.lstrip("+-").isdigit()) or len(text) > 20:
            raise invalid_value(f'"{name}" must be an integer')
        number = int(text)
    elif isinstance(value, int | float):
        number = int(value)
    else:
        raise invalid_value(f'"{name}" must be an integer')
    if abs(number) > MAX_INDEX:
        raise invalid_value(f'"{name}" must be at most {MAX_INDEX}')
    return number


def _check_chars(text: str, error: Any) -> None:
    if _CONTROL.search(text):
        raise error("control characters (such as NUL) are not allowed")
    if _SURROGATE.search(text):
        raise error("lone surrogates are not allowed (the text is not valid Unicode)")
