"""Passwords: the policy for a new one, and argon2id hashing (argon2-cffi's defaults, RFC 9106's
second recommended profile: t=3, m=64 MiB, p=4), stored as PHC strings so parameters can be
raised later (`needs_rehash`).

A password is hashed in Unicode normal form NFKC (NIST SP 800-63B §5.1.1.2), so the same
password typed on two keyboards (NFC on one, NFD on another) verifies alike. Hashes written
before that took the password as typed: `verify` tries the normalised form first and, only when
it differs from what was typed, the raw form, and reports that the hash must be rewritten."""

from __future__ import annotations

import secrets
import threading
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; this bounds the work one request can ask for
# zxcvbn's estimate, 0-4: 3 is "safely unguessable" against an offline attack on a slow hash.
# It finds common and breached passwords (its 30,000-entry list), words, names, keyboard walks,
# repeats, sequences, dates and the person's own name or address.
MIN_STRENGTH = 3
_STRENGTH_PREFIX = 72  # zxcvbn refuses longer input; a weak prefix is weak enough to refuse

_hasher = PasswordHasher()
_dummy: list[str] = []
_dummy_lock = threading.Lock()
# zxcvbn keeps the user inputs of a call in a module-level dictionary: one call at a time.
_strength_lock = threading.Lock()


def normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    return _hasher.hash(normalize(password))


def dummy_hash() -> str:
    """A hash of a random password with the same cost, verified when the user is unknown, so an
    unknown user takes as long as a wrong password."""
    with _dummy_lock:
        if not _dummy:
            _dummy.append(_hasher.hash(secrets.token_urlsafe(24)))
        return _dummy[0]


@dataclass(frozen=True)
class Verified:
    valid: bool
    rehash: bool  # valid, and the stored hash is of the raw form or has old parameters


def _matches(target: str, password: str) -> bool:
    try:
        return _hasher.verify(target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def verify(stored: str | None, password: str) -> Verified:
    """The same argon2 work whether or not there is a stored hash: it depends on the password
    asked (one verification, two when its normal form differs), never on the account."""
    target = stored or dummy_hash()
    normal = normalize(password)
    ok = _matches(target, normal)
    legacy = False
    if normal != password:
        legacy = _matches(target, password) and not ok
    valid = (ok or legacy) and stored is not None
    return Verified(valid, valid and (legacy or needs_rehash(target)))


def check_password(stored: str | None, password: str) -> bool:
    return verify(stored, password).valid


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def _squeezed(text: str) -> str:
    return "".join(normalize(text).split()).casefold()


def _strength(password: str, user_inputs: list[str]) -> int:
    from zxcvbn import zxcvbn  # 0.1 s of word lists: loaded on the first new password only

    with _strength_lock:
        return int(zxcvbn(password[:_STRENGTH_PREFIX], user_inputs=user_inputs)["score"])


def password_problems(password: str, confirm: str, *, user_name: str | None, email: str | None) -> list[str]:
    """Message keys (see bridge.web.i18n) for what is wrong with a new password. Spaces count
    towards the length (pass phrases), but not as the password: twelve spaces are blank, and the
    address with a space added is still the address."""
    problems = []
    normal = normalize(password)
    if normal != normalize(confirm):
        problems.append("mismatch")
    squeezed = _squeezed(normal)
    if not squeezed:
        problems.append("blank")
    elif len(normal) < MIN_LENGTH:
        problems.append("too_short")
    elif len(normal) > MAX_LENGTH:
        problems.append("too_long")
    identities = [_squeezed(v) for v in (user_name, email) if v]
    local_parts = [v.split("@", 1)[0] for v in identities if "@" in v]
    if squeezed and any(len(v) >= 4 and v in squeezed for v in identities + local_parts):
        problems.append("is_identity")
    elif squeezed and not problems and _strength(normal, identities + local_parts) < MIN_STRENGTH:
        problems.append("too_common")
    return problems
