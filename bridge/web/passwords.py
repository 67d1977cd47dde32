"""Password hashing: argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile:
t=3, m=64 MiB, p=4), stored as PHC strings so parameters can be raised later (`needs_rehash`)."""

from __future__ import annotations

import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; this bounds the work one request can ask for

_hasher = PasswordHasher()
_dummy: list[str] = []
_dummy_lock = threading.Lock()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def dummy_hash() -> str:
    """A hash of a random password with the same cost, verified when the user is unknown, so an
    unknown user takes as long as a wrong password."""
    with _dummy_lock:
        if not _dummy:
            _dummy.append(_hasher.hash(secrets.token_urlsafe(24)))
        return _dummy[0]


def check_password(stored: str | None, password: str) -> bool:
    """Always does one argon2 verification, whether or not there is a stored hash."""
    target = stored or dummy_hash()
    try:
        ok = _hasher.verify(target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    return ok and stored is not None


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def password_problems(password: str, confirm: str, *, user_name: str | None, email: str | None) -> list[str]:
    """Message keys (see bridge.web.i18n) for what is wrong with a new password."""
    problems = []
    if password != confirm:
        problems.append("mismatch")
    if len(password) < MIN_LENGTH:
        problems.append("too_short")
    elif len(password) > MAX_LENGTH:
        problems.append("too_long")
    folded = password.casefold()
    if any(v and folded == v.casefold() for v in (user_name, email)):
        problems.append("is_identity")
    return problems
