"""The one hashing helper every hash kind is built on: length-prefixed parts, so ("ab", "c")
and ("a", "bc") differ, and the check that a value is a SHA."""

from __future__ import annotations

import hashlib
import re
from typing import Final

import blake3

HASH_ALGORITHM: Final = "sha256"
SHA_RE: Final = re.compile(r"[0-9a-f]{64}")


def hash_parts(*parts: str | bytes) -> str:
    """SHA-256 of the parts, each prefixed by its 8-byte length, so ("ab", "c") != ("a", "bc").

    A str part is hashed as its UTF-8 bytes.
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def blake3_parts(*parts: str | bytes) -> bytes:
    """BLAKE3 of the parts, each prefixed by its 8-byte length (as `hash_parts`)."""
    digest = blake3.blake3()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


def check_sha(value: str, what: str) -> None:
    if not SHA_RE.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex characters, got {value!r}")
