"""Fingerprint: the name of one computation, its code SHA over the sorted data SHAs it reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from headwater.core.hashing._parts import check_sha, hash_parts

FINGERPRINT_VERSION: Final = 1


def fingerprint(code_sha: str, inputs: Iterable[tuple[str, str, str]]) -> str:
    """Fingerprint of a derived partition: its code SHA over the sorted list of
    (input dataset, input partition key, input data SHA). It names one computation."""
    check_sha(code_sha, "code_sha")
    items = sorted(inputs)
    for dataset, key, sha in items:
        check_sha(sha, f"data SHA of input {dataset!r} partition {key!r}")
    flat = [part for item in items for part in item]
    return hash_parts(
        "headwater.fingerprint", str(FINGERPRINT_VERSION), code_sha, str(len(items)), *flat
    )


def source_fingerprint(data_sha: str) -> str:
    """Fingerprint of a source partition: its data SHA (nothing computes it)."""
    check_sha(data_sha, "data_sha")
    return data_sha
