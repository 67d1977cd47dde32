"""Identifiers and the folded form of names: pure functions every store module uses, with no
table of their own. `new_id` makes every primary key that is not an integer; `fold` is the one
normalisation behind case-insensitive lookups and uniqueness (the `*_norm` columns).
"""

from __future__ import annotations

import os
import threading
import time

# os.urandom is a system call each time (about a twentieth of a first sync's apply step, which
# makes four ids a person): each thread takes its random bytes from a block of its own.
_BLOCK = 10 * 256
_random = threading.local()
# A forked child must not hand out the ids its parent's block would give: it starts a block anew.
os.register_at_fork(after_in_child=lambda: _random.__dict__.clear())


def _random_80_bits() -> int:
    pool = _random.__dict__
    block = pool.get("block")
    at = pool.get("at", _BLOCK)
    if block is None or at >= _BLOCK:
        block, at = os.urandom(_BLOCK), 0
        pool["block"] = block
    pool["at"] = at + 10
    return int.from_bytes(block[at : at + 10], "big")


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered ids keep inserts at the right-hand end of the primary-key and foreign-key
    B-trees instead of scattering them: a first sync of 100k accounts wrote its rows in less
    than half the time with the same SQLite page cache (docs/benchmarks.md). The random part is
    as unguessable as before; ids still reveal nothing but their creation time.
    """
    millis = time.time_ns() // 1_000_000
    random_bits = _random_80_bits()  # 80 bits, 74 used
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62
        | (random_bits & 0x3FFF_FFFF_FFFF_FFFF)
    )
    text = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without building the object
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def fold(value: str | None) -> str | None:
    """The normalised form used for case-insensitive lookups and uniqueness (userName, email)."""
    return value.casefold() if value is not None else None
