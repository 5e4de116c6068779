"""Every content hash in Headwater: data SHAs, code SHAs and fingerprints (pure, no I/O).

Each hash is 64 lowercase hex characters over length-prefixed parts: SHA-256 (`hash_parts`,
`HASH_ALGORITHM`) for code SHAs and fingerprints, BLAKE3 (`DATA_SHA_ALGORITHM`) for data SHAs from
version 2. A rule change bumps the matching `*_VERSION`, which is hashed into every SHA it makes
and stored beside it (docs/architecture.md, Hashing).

The rules live in private modules, one per kind; this module is their one public face:

    _parts.py        hash_parts (SHA-256) and BLAKE3 over length-prefixed parts
    _data.py         data SHA, version 2 (DATA_SHA_VERSION), and holds_data_sha
    _data_v1.py      data SHA version 1, frozen (checks objects stored under it)
    _canonical.py    the canonical column forms both data SHA versions share
    _code.py         code SHA (CODE_SHA_VERSION): normalised SQL and Python, code_sha
    _fingerprint.py  fingerprint (FINGERPRINT_VERSION) and source_fingerprint
"""

from headwater.core.hashing._code import (
    CODE_SHA_VERSION,
    CodeError,
    code_sha,
    normalize_python,
    normalize_sql,
    python_code_sha,
    sql_code_sha,
)
from headwater.core.hashing._data import (
    DATA_SHA_ALGORITHM,
    DATA_SHA_VERSION,
    data_sha,
    holds_data_sha,
)
from headwater.core.hashing._fingerprint import FINGERPRINT_VERSION, fingerprint, source_fingerprint
from headwater.core.hashing._parts import HASH_ALGORITHM, hash_parts

__all__ = [
    "CODE_SHA_VERSION",
    "DATA_SHA_ALGORITHM",
    "DATA_SHA_VERSION",
    "FINGERPRINT_VERSION",
    "HASH_ALGORITHM",
    "CodeError",
    "code_sha",
    "data_sha",
    "fingerprint",
    "hash_parts",
    "holds_data_sha",
    "normalize_python",
    "normalize_sql",
    "python_code_sha",
    "source_fingerprint",
    "sql_code_sha",
]
