"""Password hashing with scrypt, a memory-hard function from the standard library:
16 MiB per check makes guessing on GPUs expensive."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024
MIN_LENGTH = 10
# Credentials are rotated (R11): a change that went back to an old password would
# rotate nothing. Five, the current one and the four before it, as bank password
# policies commonly require; each costs one scrypt check per change, not per login.
REUSE_DEPTH = 5


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=_MAXMEM,
        dklen=32,
    )
    return hmac.compare_digest(computed, base64.b64decode(digest))


def password_problem(password: str, user_id: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if user_id.lower() in password.lower():
        return "a password may not contain the user id"
    return None


def reuses(password: str, hashes: Iterable[str]) -> bool:
    """Whether ``password`` is the one behind any of ``hashes``."""
    return any(verify_password(password, stored) for stored in hashes)
