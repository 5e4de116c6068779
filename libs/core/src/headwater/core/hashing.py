"""Every content hash in Headwater: data SHAs, code SHAs and fingerprints (pure, no I/O).

Each hash is 64 lowercase hex characters over length-prefixed parts: SHA-256 (`hash_parts`,
`HASH_ALGORITHM`) for code SHAs and fingerprints, BLAKE3 (`DATA_SHA_ALGORITHM`) for data SHAs from
version 2. A rule change bumps the matching `*_VERSION`, which is hashed into every SHA it makes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import blake3
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from headwater.contracts.errors import InputError

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

HASH_ALGORITHM: Final = "sha256"
FINGERPRINT_VERSION: Final = 1
DATA_SHA_ALGORITHM: Final = "blake3"  # version 1 was SHA-256 (HASH_ALGORITHM)
DATA_SHA_VERSION: Final = 2
CODE_SHA_VERSION: Final = 1

_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*m")


class CodeError(InputError):
    """A transform's code cannot be normalised (it does not parse, or names a missing function).

    Permanent: the same code fails the same way, so it is never retried.
    """

    def __init__(self, message: str) -> None:
        super().__init__("code", message, message=message)


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


# ---------------------------------------------------------------------------------------------
# data SHA

_CANONICAL_NAN: Final = {2: 0x7E00, 4: 0x7FC00000, 8: 0x7FF8000000000000}

_BoolArray = npt.NDArray[np.bool_]


def data_sha(table: pa.Table, *, ordered: bool = False, version: int = DATA_SHA_VERSION) -> str:
    """Canonical hash of a table's rows and schema (`version` 1 only to check stored SHAs).

    Equal whatever the chunking, slice offsets, bytes under null slots, schema/field metadata,
    nullability flags, file encoding or compression, and (unless `ordered`) row order; rows are
    a multiset, so duplicates count. Differs when a value, a null, a column name, the column
    order or a column's logical type changes. Logical types: string/large_string/string_view
    are one type, so are binary/large_binary/binary_view, list/large_list/list_view, and a
    dictionary column is its value type (Parquet round trips change these); every other type is
    kept exactly (int32 != int64, a timestamp's tz counts). Top-level timestamp, time and
    duration columns are compared as instants, not units: Parquet stores seconds as
    milliseconds, so they are taken in microseconds when exact, else kept in nanoseconds.
    Floats are hashed by their bits, so -0.0 != 0.0, but every NaN is the one canonical quiet
    NaN. Null differs from every value.

    How (version 2): each column becomes a few canonical byte streams, each hashed with BLAKE3
    straight from Arrow's buffers where nothing needs changing (on every core for large ones):
    fixed-width values (little-endian, zeros under nulls) or the lengths and bytes of
    variable-width values (strings, binaries, and nested values as an injective byte encoding
    per row), plus the validity, a byte per row, when there are nulls. Unless `ordered`, the
    rows are first put in a canonical order: by a 64-bit key mixed from every value (one
    vectorised sort), rows of equal keys by their content, so only equal rows can end up
    swapped. To sort and move less, an integer column is then hashed as one plus the offset
    from its minimum (0 for null) in the narrowest type that holds it, and a variable-width one
    as its sorted distinct values plus one plus each row's rank among them. The order arranges
    the values, it replaces none: every value is hashed, so collision resistance is BLAKE3's
    whatever the key does (a key collision costs time, never a false match). The SHA is BLAKE3
    over length-prefixed parts: label, version, row count, then per column its name, logical
    type and the digest of its streams.
    """
    if version == 1:
        return _data_sha_v1(table, ordered=ordered)
    if version != DATA_SHA_VERSION:
        raise ValueError(f"data SHA version {version} is not 1 or {DATA_SHA_VERSION}")
    n = table.num_rows
    units = [_canonical_unit(chunked) for chunked in table.columns]
    columns = [
        _Canonical.of(chunked, name)
        for chunked, name in zip(units, table.column_names, strict=True)
    ]
    if ordered:
        digests = [col.digest_in_order() for col in columns]
    else:
        sortable = [col.sortable() for col in columns]
        order = _row_order(sortable, n)
        digests = [col.digest(order) for col in sortable]
    parts: list[str | bytes] = [
        "headwater.data_sha",
        str(DATA_SHA_VERSION),
        "ordered" if ordered else "unordered",
        str(n),
        str(table.num_columns),
    ]
    for name, chunked, digest in zip(table.column_names, units, digests, strict=True):
        parts += ["column", name, _logical_type(chunked.type, name), digest]
    return _blake3_parts(*parts).hex()


def holds_data_sha(table: pa.Table, sha: str) -> bool:
    """Whether `sha` is the data SHA of `table` under any version, ordered or not: how an object
    is checked against the SHA it was stored under, which it keeps whatever the version now."""
    return any(
        data_sha(table, ordered=ordered, version=version) == sha
        for version in range(DATA_SHA_VERSION, 0, -1)
        for ordered in (False, True)
    )


# From this many bytes an update is hashed on every core (BLAKE3's own threads, outside the
# GIL); below it, handing the work out costs more than it saves.
_THREADED_BYTES: Final = 1 << 20


def _blake3_parts(*parts: str | bytes) -> bytes:
    """BLAKE3 of the parts, each prefixed by its 8-byte length (as `hash_parts`)."""
    digest = blake3.blake3()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


def _digest(chunks: Iterable[Any]) -> bytes:
    """BLAKE3 of the concatenated bytes of `chunks` (numpy arrays, in C order; Arrow buffers;
    bytes), fed in one by one: nothing is joined to be hashed."""
    flat: list[Any] = [
        np.ascontiguousarray(c).reshape(-1).view(np.uint8) if isinstance(c, np.ndarray) else c
        for c in chunks
    ]
    # BLAKE3's threads speed up large updates only (the mode is the hasher's, not an update's)
    large = sum(len(memoryview(c)) for c in flat) >= _THREADED_BYTES * max(1, len(flat))
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO if large else 1)
    for chunk in flat:
        digest.update(chunk)
    return digest.digest()


@dataclass(frozen=True)
class _Piece:
    """One chunk of a column in canonical form."""

    rows: int
    valid: _BoolArray | None  # None when the chunk has no null
    # fixed: (rows,) little-endian unsigned ints or (rows, width) uint8, zeros under nulls (a
    # view of Arrow's buffer when nothing needed changing); var: a string or binary array
    values: Any

    def validity(self) -> _BoolArray:
        return np.ones(self.rows, dtype=np.bool_) if self.valid is None else self.valid


@dataclass(frozen=True)
class _Canonical:
    """A column in canonical form, chunk by chunk: hashing it in order copies nothing."""

    kind: str  # "null", "fixed" or "var"
    pieces: list[_Piece]
    width: int = 0  # bytes per fixed value
    signed: bool = False  # fixed values are two's complement integers
    floating: bool = False

    @classmethod
    def of(cls, chunked: pa.ChunkedArray, name: str) -> _Canonical:
        t = chunked.type
        chunks = chunked.chunks or [pa.array([], type=t)]
        if isinstance(t, pa.BaseExtensionType) or pa.types.is_dictionary(t) or _is_view(t):
            chunks = [_physical(chunk) for chunk in chunks]
            t = chunks[0].type
        if pa.types.is_null(t):
            return cls("null", [])
        if _is_nested(t):
            chunks = [pa.array(_tokens(chunk, name), type=pa.large_binary()) for chunk in chunks]
            t = pa.large_binary()
        if _is_string_like(t) or _is_binary_like(t):
            return cls("var", [_Piece(len(chunk), _valid_bits(chunk), chunk) for chunk in chunks])
        width = _fixed_width(t, name)
        pieces = []
        for chunk in chunks:
            valid = _valid_bits(chunk)
            pieces.append(_Piece(len(chunk), valid, _fixed_values(chunk, width, valid)))
        signed = bool(pa.types.is_signed_integer(t) or pa.types.is_temporal(t)) and width <= 8
        return cls("fixed", pieces, width, signed, pa.types.is_floating(t))

    @property
    def valid(self) -> _BoolArray | None:
        if all(piece.valid is None for piece in self.pieces):
            return None
        return np.concatenate([piece.validity() for piece in self.pieces])

    def digest_in_order(self) -> bytes:
        parts: list[str | bytes] = [self.kind, str(self.width)]
        if any(piece.valid is not None for piece in self.pieces):
            parts += ["nulls", _digest(piece.validity() for piece in self.pieces)]
        else:
            parts.append("no nulls")
        if self.kind == "fixed":
            parts.append(_digest(piece.values for piece in self.pieces))
        elif self.kind == "var":
            parts += _var_digests(self.pieces)
        return _blake3_parts(*parts)

    def sortable(self) -> _Sortable:
        if self.kind == "null":
            return _Sortable(("null", "0"), None, None)
        if self.kind == "var":
            return _ranked(self.pieces)
        values = [piece.values for piece in self.pieces]
        if values[0].ndim == 1 and not self.floating:
            offsets = _offsets_from_min(self.pieces, self.width, self.signed)
            if offsets is not None:
                return offsets
        joined = values[0] if len(values) == 1 else np.concatenate(values)
        return _Sortable(("fixed", str(self.width)), self.valid, joined)


def _is_view(t: pa.DataType) -> bool:
    return bool(pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def _physical(arr: pa.Array) -> pa.Array:
    """`arr` as the physical form of its logical type that `_Canonical` reads: as `_unwrap`, but
    string and binary keep their own offsets (no copy); view types become large_binary."""
    t = arr.type
    if isinstance(t, pa.BaseExtensionType):
        return _physical(arr.storage)
    if pa.types.is_dictionary(t):
        return _physical(arr.dictionary_decode())
    if _is_view(t):
        return arr.cast(pa.large_binary())
    return arr


def _fixed_width(t: pa.DataType, name: str) -> int:
    if pa.types.is_boolean(t):
        return 1
    if pa.types.is_fixed_size_binary(t):
        return int(t.byte_width)
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_temporal(t)
        or pa.types.is_decimal(t)
        or pa.types.is_interval(t)
    ):
        return int(t.bit_width) // 8
    raise TypeError(f"data_sha: column {name!r} has unsupported type {t}")


def _valid_bits(arr: pa.Array) -> _BoolArray | None:
    """Validity of `arr`, one bool per row; None when it has no null."""
    if arr.null_count == 0:
        return None
    n = len(arr)
    bitmap = arr.buffers()[0]
    if bitmap is None:  # nulls not kept in a bitmap (no type hashed here does that)
        return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    first, skip = divmod(arr.offset, 8)
    raw = np.frombuffer(bitmap, dtype=np.uint8, count=(skip + n + 7) // 8, offset=first)
    return np.unpackbits(raw, count=skip + n, bitorder="little")[skip:].view(np.bool_)


def _fixed_values(arr: pa.Array, width: int, valid: _BoolArray | None) -> npt.NDArray[Any]:
    """Little-endian values of a fixed-width array, zeros under nulls, NaNs canonical: a view
    of Arrow's buffer when nothing needs changing."""
    n = len(arr)
    t = arr.type
    if pa.types.is_boolean(t):
        return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), np.uint8)
    buf = arr.buffers()[1]
    if width not in (1, 2, 4, 8):
        if n == 0 or buf is None:
            return np.zeros((n, width), dtype=np.uint8)
        raw = np.frombuffer(buf, dtype=np.uint8, count=n * width, offset=arr.offset * width)
        matrix = raw.reshape(n, width)
        return matrix if valid is None else np.where(valid[:, None], matrix, np.uint8(0))
    dtype = np.dtype(f"u{width}")
    if n == 0 or buf is None:
        return np.zeros(n, dtype=dtype.newbyteorder("<"))
    values = np.frombuffer(buf, dtype=dtype, count=n, offset=arr.offset * width)
    if pa.types.is_floating(t):
        nan = np.isnan(values.view(f"f{width}"))
        if nan.any():  # every NaN payload/sign is one NaN: engines disagree on payloads
            values = np.where(nan, dtype.type(_CANONICAL_NAN[width]), values)
    if valid is not None:
        values = np.where(valid, values, dtype.type(0))
    return values.astype(dtype.newbyteorder("<"), copy=False)


def _var_digests(pieces: Sequence[_Piece]) -> list[str | bytes]:
    """Digests of the lengths (u64 little-endian, 0 under nulls) and of the concatenated bytes
    of the non-null values of string/binary pieces."""
    lengths, data = [], []
    for piece in pieces:
        arr = piece.values
        if piece.rows == 0:
            continue
        large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
        offset_type = np.dtype(np.int64 if large else np.int32)
        offsets = np.frombuffer(
            arr.buffers()[1],
            offset_type,
            count=piece.rows + 1,
            offset=arr.offset * offset_type.itemsize,
        )
        sizes = np.diff(offsets).astype("<u8")
        if piece.valid is not None and sizes[~piece.valid].any():
            sizes[~piece.valid] = 0  # bytes under a null slot: leave them out
            data.append(_var_data(pc.drop_null(arr).cast(pa.large_binary())))
        elif arr.buffers()[2] is not None:
            data.append(arr.buffers()[2][int(offsets[0]) : int(offsets[-1])])
        lengths.append(sizes)
    return [_digest(lengths), _digest(data)]


def _offsets_from_min(pieces: Sequence[_Piece], width: int, signed: bool) -> _Sortable | None:
    """Integers as one plus their offset from the minimum value, 0 for a null, in the narrowest
    unsigned type that holds them: fewer bytes to sort, move and hash, and no validity of their
    own. None when that takes more bytes than the values (nothing would be saved)."""
    ints = [
        (piece.values if piece.valid is None else piece.values[piece.valid]).view(
            f"<i{width}" if signed else f"<u{width}"
        )
        for piece in pieces
    ]
    low = min((int(v.min()) for v in ints if len(v)), default=0)
    high = max((int(v.max()) for v in ints if len(v)), default=-1)
    narrow = next((w for w in (1, 2, 4, 8) if high - low + 1 < 1 << (8 * w)), 16)
    if narrow > width:
        return None
    offsets = np.empty(sum(piece.rows for piece in pieces), dtype=f"<u{narrow}")
    below = np.dtype(f"<u{width}").type((low - 1) % (1 << (8 * width)))
    start = 0
    for piece in pieces:
        out = offsets[start : start + piece.rows]
        # wraps around: exact, since every offset fits in `narrow` bytes
        np.subtract(piece.values, below, out=out, casting="unsafe")
        if piece.valid is not None:
            out[~piece.valid] = 0
        start += piece.rows
    head = ("fixed", str(width), "1 + offset from", str(low), "0 for null", str(narrow))
    return _Sortable(head, None, offsets)


@dataclass(frozen=True)
class _Sortable:
    """A column ready for the unordered hash: the parts that do not depend on row order, and
    per row one fixed-width value (a rank, for variable-width columns) and maybe its validity."""

    head: tuple[str | bytes, ...]
    valid: _BoolArray | None  # None when the column has no null, or its values say which
    values: npt.NDArray[Any] | None  # (n,) or (n, width); None for a null column

    def words(self) -> list[npt.NDArray[Any]]:
        """The values as unsigned ints of at most 8 bytes, one (n,) array per word."""
        if self.values is None:
            return []
        if self.values.ndim == 1:
            return [self.values]
        n, width = self.values.shape
        padded = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
        padded[:, :width] = self.values
        wide = padded.view("<u8")
        return [wide[:, k] for k in range(wide.shape[1])]

    def digest(self, order: npt.NDArray[np.intp] | None) -> bytes:
        parts = list(self.head)
        if self.valid is None:
            parts.append("no nulls")
        else:
            parts += ["nulls", _digest([self.valid if order is None else self.valid[order]])]
        if self.values is not None:
            values = self.values if order is None else np.take(self.values, order, axis=0)
            parts.append(_digest([values]))
        return _blake3_parts(*parts)


def _ranked(pieces: Sequence[_Piece]) -> _Sortable:
    """A string/binary column as its sorted distinct non-null values, and per row one plus the
    rank of its value among them (0 for a null)."""
    encoded = pc.dictionary_encode(pa.chunked_array([piece.values for piece in pieces]))
    if any(not chunk.dictionary.equals(encoded.chunk(0).dictionary) for chunk in encoded.chunks):
        encoded = encoded.unify_dictionaries()  # Arrow shares one; do not depend on it
    chunks = encoded.chunks
    distinct = (
        chunks[0].dictionary.cast(pa.large_binary())  # sorted by bytes, whatever the type
        if chunks
        else pa.array([], pa.large_binary())
    )
    by_value = np.asarray(pc.sort_indices(distinct).to_numpy(), dtype=np.intp)
    count = len(distinct)
    dtype = np.dtype(next(f"<u{w}" for w in (1, 2, 4, 8) if count < 1 << (8 * w)))
    rank = np.empty(count + 1, dtype=dtype)
    rank[by_value] = np.arange(1, count + 1, dtype=dtype)
    rank[count] = 0  # a null's index is filled with `count`
    indices = [pc.fill_null(chunk.indices, count).to_numpy() for chunk in chunks]
    ranks = rank[np.concatenate(indices)] if indices else np.zeros(0, dtype=dtype)
    digests = _var_digests([_Piece(count, None, distinct.take(pa.array(by_value)))])
    return _Sortable(("var", str(count), *digests, "1 + rank, 0 for null"), None, ranks)


def _row_order(columns: Sequence[_Sortable], n: int) -> npt.NDArray[np.intp] | None:
    """A canonical order of the rows: by a key mixed from every canonical value, rows with
    equal keys by their content. Rows end up placed differently only if they are equal."""
    words = [word for col in columns for word in col.words()]
    words += [col.valid for col in columns if col.valid is not None]
    if n < 2 or not words:
        return None
    key = _row_key(words, 0, n)
    # The row number rides in the key's low bits, so a plain sort (faster than argsort)
    # gives the order; the key proper is what is left above it.
    shift = np.uint64(max(1, int(n - 1).bit_length()))
    np.right_shift(key, shift, out=key)
    np.left_shift(key, shift, out=key)
    np.bitwise_or(key, np.arange(n, dtype=np.uint64), out=key)
    key.sort()
    order = (key & np.uint64((1 << int(shift)) - 1)).astype(np.intp)
    return _break_ties(order, key >> shift, columns)


_KEY_BLOCK: Final = 1 << 15  # rows per step: the key, a term and a few words stay in cache


def _row_key(words: Sequence[npt.NDArray[Any]], start: int, stop: int) -> npt.NDArray[np.uint64]:
    """The key of rows [start, stop): the sum of their words, each (its high half folded in)
    times an odd constant of version 2."""
    stream = blake3.blake3(b"headwater.data_sha 2 row key").digest(length=8 * len(words))
    multipliers = np.frombuffer(stream, "<u8") | np.uint64(1)
    key = np.zeros(stop - start, dtype=np.uint64)
    scratch = np.empty(min(_KEY_BLOCK, stop - start), dtype=np.uint64)
    for first in range(start, stop, _KEY_BLOCK):
        last = min(first + _KEY_BLOCK, stop)
        block, term = key[first - start : last - start], scratch[: last - first]
        for word, multiplier in zip(words, multipliers, strict=True):
            part = word[first:last]
            if part.dtype.itemsize == 8:
                # values differing only in high bits (float exponents) would otherwise
                # collide after the multiply far more often than 2**-64
                np.right_shift(part, np.uint64(32), out=term)
                np.bitwise_xor(term, part, out=term)
                np.multiply(term, multiplier, out=term)
            else:
                np.multiply(part, multiplier, out=term)
            np.add(block, term, out=block)
    return key


def _break_ties(
    order: npt.NDArray[np.intp], keys: npt.NDArray[np.uint64], columns: Sequence[_Sortable]
) -> npt.NDArray[np.intp]:
    """Within each run of equal keys, order rows that differ by their content."""
    tied = np.flatnonzero(keys[1:] == keys[:-1])
    if not tied.size:
        return order
    content: list[npt.NDArray[Any]] = []
    for col in columns:
        if col.valid is not None:
            content.append(col.valid)
        content += col.words()
    first, second = order[tied], order[tied + 1]
    differs = np.zeros(len(tied), dtype=np.bool_)
    for values in content:
        differs |= values[first] != values[second]
    if not differs.any():
        return order  # only equal rows share a key: any order of them hashes the same
    at = np.flatnonzero(np.isin(keys, keys[tied[differs]]))
    rows = order[at]
    # np.lexsort's last key is the primary one: the key, then the columns in order
    by = np.lexsort([*(values[rows] for values in reversed(content)), keys[at]])
    order[at] = rows[by]
    return order


# ---------------------------------------------------------------------------------------------
# data SHA: the canonical forms every version shares


def _canonical_unit(chunked: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps/times/durations in microseconds when that is exact (see `data_sha`)."""
    t = chunked.type
    if pa.types.is_timestamp(t):
        target: pa.DataType = pa.timestamp("us", t.tz)
    elif pa.types.is_time(t):
        target = pa.time64("us")
    elif pa.types.is_duration(t):
        target = pa.duration("us")
    else:
        return chunked
    if t == target:
        return chunked
    try:
        return chunked.cast(target, safe=True)
    except pa.ArrowInvalid:  # sub-microsecond values: the content itself needs nanoseconds
        return chunked


def _unwrap(arr: pa.Array) -> pa.Array:
    """Map an array to the physical form of its logical type (see `_logical_type`)."""
    t = arr.type
    if isinstance(t, pa.BaseExtensionType):
        return _unwrap(arr.storage)
    if pa.types.is_dictionary(t):
        return _unwrap(arr.dictionary_decode())
    if _is_string_like(t) or _is_binary_like(t):
        return arr.cast(pa.large_binary())
    return arr


def _is_string_like(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _is_binary_like(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t))


def _is_list_like(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def _is_nested(t: pa.DataType) -> bool:
    return bool(
        _is_list_like(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_map(t)
        or pa.types.is_struct(t)
        or pa.types.is_union(t)
    )


def _frame(token: bytes | None) -> bytes:
    if token is None:
        return b"\x00"
    return b"\x01" + len(token).to_bytes(8, "big") + token


def _tokens(arr: pa.Array, name: str) -> list[bytes | None]:
    """Injective per-row byte encoding of any supported array (the slow path for nested types)."""
    arr = _unwrap(arr)
    t = arr.type
    n = len(arr)
    valid = _validity(arr)
    if pa.types.is_union(t):
        raise TypeError(f"data_sha: column {name!r} has unsupported type {t}")
    if _is_list_like(t) or pa.types.is_map(t) or pa.types.is_fixed_size_list(t):
        child = _tokens(arr.values, name)
        if pa.types.is_fixed_size_list(t):
            size = t.list_size
            starts = (np.arange(n, dtype=np.int64) + arr.offset) * size
            stops = starts + size
        else:
            # .offsets (and .sizes) already account for this array's own slice offset
            starts = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
            if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
                stops = starts + np.asarray(arr.sizes.to_numpy(), dtype=np.int64)
            else:
                starts, stops = starts[:-1], starts[1:]
        return [
            (len(child[a:b]).to_bytes(8, "big") + b"".join(_frame(x) for x in child[a:b]))
            if ok
            else None
            for ok, a, b in zip(valid.tolist(), starts.tolist(), stops.tolist(), strict=True)
        ]
    if pa.types.is_struct(t):
        # .field(i) is sliced to this array's offset and length
        fields = [_tokens(arr.field(i), name) for i in range(t.num_fields)]
        return [
            b"".join(_frame(f[i]) for f in fields) if ok else None
            for i, ok in enumerate(valid.tolist())
        ]
    col = _canonical_leaf(arr, name)
    if col.var is not None:
        return [v if isinstance(v, bytes) else None for v in col.var.to_pylist()]
    if col.fixed is None:
        return [None] * n
    fixed = (
        col.fixed if col.fixed.ndim == 2 else col.fixed.astype(col.fixed.dtype.newbyteorder("<"))
    )
    data = np.ascontiguousarray(fixed).tobytes()
    width = len(data) // n if n else 0
    return [
        data[i * width : (i + 1) * width] if ok else None for i, ok in enumerate(valid.tolist())
    ]


def _logical_type(t: pa.DataType, name: str) -> str:
    """Canonical type string: names the logical type only (no metadata, nullability or names
    of list items), with the variants Parquet round trips swap merged into one."""
    if isinstance(t, pa.BaseExtensionType):
        # str() names C++ extensions with their parameters; Python ones serialize theirs
        serialize = getattr(t, "__arrow_ext_serialize__", None)
        params = serialize().hex() if serialize is not None else ""
        return f"extension<{t}, {params}, {_logical_type(t.storage_type, name)}>"
    if pa.types.is_dictionary(t):
        return _logical_type(t.value_type, name)
    if _is_string_like(t):
        return "string"
    if _is_binary_like(t):
        return "binary"
    if _is_list_like(t):
        return f"list<{_logical_type(t.value_type, name)}>"
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{_logical_type(t.value_type, name)}>[{t.list_size}]"
    if pa.types.is_map(t):
        key, item = _logical_type(t.key_type, name), _logical_type(t.item_type, name)
        return f"map<{key}, {item}>"
    if pa.types.is_struct(t):
        fields = ", ".join(
            f"{json.dumps(t.field(i).name)}: {_logical_type(t.field(i).type, name)}"
            for i in range(t.num_fields)
        )
        return f"struct<{fields}>"
    if pa.types.is_union(t):
        raise TypeError(f"data_sha: column {name!r} has unsupported type {t}")
    return str(t)  # e.g. "int64", "timestamp[us, tz=UTC]", "decimal128(10, 2)"


# ---------------------------------------------------------------------------------------------
# data SHA version 1: frozen. It checks objects stored under a version 1 SHA (they keep it);
# nothing new is hashed with it. `_validity`, `_canonical_leaf` and `_var_data` also serve
# version 2 (nested tokens, nulls in strings): a change to them changes both versions.


def _data_sha_v1(table: pa.Table, *, ordered: bool) -> str:
    """Version 1: rows sorted on all canonical columns by Arrow, then every column's name,
    logical type, validity bitmap and canonical values fed to SHA-256 (`hash_parts`)."""
    n = table.num_rows
    table = pa.table([_canonical_unit(c) for c in table.columns], names=table.column_names)
    columns = [
        _canonical_column(chunked, name)
        for name, chunked in zip(table.column_names, table.columns, strict=True)
    ]
    if not ordered:
        order = _sort_order(columns, n)
        if order is not None:
            columns = [col.take(order) for col in columns]
    parts: list[str | bytes] = [
        "headwater.data_sha",
        "1",
        "ordered" if ordered else "unordered",
        str(n),
        str(table.num_columns),
    ]
    for name, field, col in zip(table.column_names, table.schema, columns, strict=True):
        parts += ["column", name, _logical_type(field.type, name), *col.encode()]
    return hash_parts(*parts)


@dataclass(frozen=True)
class _Column:
    """One column in canonical form: validity plus exactly one kind of values (none for null)."""

    valid: _BoolArray
    # (n,) unsigned ints, or (n, width) uint8 for wider values; always zero under nulls
    fixed: npt.NDArray[Any] | None = None
    var: pa.Array | None = None  # large_binary; bytes under nulls are ignored by encode()

    def sort_key(self) -> pa.Array | None:
        if self.var is not None:
            return self.var
        if self.fixed is None:
            return None  # null type: every row is equal
        if self.fixed.ndim == 1:
            return pa.array(self.fixed, mask=~self.valid)
        n, width = self.fixed.shape
        return pa.Array.from_buffers(
            pa.binary(width),
            n,
            [_bitmap(self.valid), pa.py_buffer(np.ascontiguousarray(self.fixed).tobytes())],
        )

    def take(self, order: npt.NDArray[np.int64]) -> _Column:
        valid = self.valid[order]
        if self.var is not None:
            return _Column(valid, var=self.var.take(pa.array(order)))
        if self.fixed is not None:
            return _Column(valid, fixed=self.fixed[order])
        return _Column(valid)

    def encode(self) -> list[str | bytes]:
        bitmap = np.packbits(self.valid, bitorder="little").tobytes()
        if self.fixed is not None:
            values = self.fixed
            if values.ndim == 1:
                values = values.astype(values.dtype.newbyteorder("<"), copy=False)
            return ["fixed", bitmap, np.ascontiguousarray(values).tobytes()]
        if self.var is not None:
            lengths = pc.fill_null(pc.binary_length(self.var), 0).to_numpy(zero_copy_only=False)
            return ["var", bitmap, lengths.astype("<i8").tobytes(), _var_data(self.var)]
        return ["null", bitmap]


def _sort_order(columns: Sequence[_Column], n: int) -> npt.NDArray[np.int64] | None:
    keys = {f"c{i}": key for i, col in enumerate(columns) if (key := col.sort_key()) is not None}
    if n < 2 or not keys:
        return None
    # Plain ascending order of unsigned ints and of bytes, nulls last: a total order defined
    # by content alone, independent of how Arrow breaks ties (tied rows are identical).
    order = pc.sort_indices(
        pa.table(keys), sort_keys=[(name, "ascending", "at_end") for name in keys]
    )
    return np.asarray(order.to_numpy(), dtype=np.int64)


def _bitmap(valid: _BoolArray) -> pa.Buffer | None:
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())


def _var_data(arr: pa.Array) -> bytes:
    """Concatenated bytes of the non-null values of a large_binary array, in order."""
    compact = pc.drop_null(arr)
    if len(compact) == 0:
        return b""
    offsets_buf, data_buf = compact.buffers()[1:3]
    offsets = np.frombuffer(
        offsets_buf, dtype="<i8", count=len(compact) + 1, offset=compact.offset * 8
    )
    if data_buf is None:
        return b""
    return bytes(data_buf[int(offsets[0]) : int(offsets[-1])])


def _canonical_column(chunked: pa.ChunkedArray, name: str) -> _Column:
    chunks = [_unwrap(chunk) for chunk in chunked.chunks]
    if not chunks:
        arr = _unwrap(pa.array([], type=chunked.type))
    elif len(chunks) == 1:
        arr = chunks[0]
    else:
        arr = pa.concat_arrays(chunks)
    if _is_nested(arr.type):
        tokens = _tokens(arr, name)
        return _Column(_validity(arr), var=pa.array(tokens, type=pa.large_binary()))
    return _canonical_leaf(arr, name)


def _validity(arr: pa.Array) -> _BoolArray:
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=np.bool_)
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.bool_)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def _canonical_leaf(arr: pa.Array, name: str) -> _Column:
    """Canonical form of a non-nested array already passed through `_unwrap`."""
    t = arr.type
    n = len(arr)
    valid = _validity(arr)
    if pa.types.is_null(t):
        return _Column(valid)
    if pa.types.is_large_binary(t):
        return _Column(valid, var=arr)
    if pa.types.is_boolean(t):
        bools = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
        return _Column(valid, fixed=np.asarray(bools, dtype=np.uint8))
    if pa.types.is_fixed_size_binary(t):
        width = t.byte_width
    elif (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_temporal(t)
        or pa.types.is_decimal(t)
        or pa.types.is_interval(t)
    ):
        width = t.bit_width // 8
    else:
        raise TypeError(f"data_sha: column {name!r} has unsupported type {t}")
    buf = arr.buffers()[1]
    if width in (1, 2, 4, 8):
        if n == 0 or buf is None:
            values: npt.NDArray[Any] = np.zeros(n, dtype=f"u{width}")
        else:
            values = np.frombuffer(
                buf, dtype=f"u{width}", count=n, offset=arr.offset * width
            ).copy()
        if pa.types.is_floating(t):
            # every NaN payload/sign is one NaN: engines disagree on payloads, nothing reads them
            values[np.isnan(values.view(f"f{width}"))] = _CANONICAL_NAN[width]
    elif n == 0 or buf is None:
        values = np.zeros((n, width), dtype=np.uint8)
    else:
        raw = np.frombuffer(buf, dtype=np.uint8, count=n * width, offset=arr.offset * width)
        values = raw.reshape(n, width).copy()
    values[~valid] = 0
    return _Column(valid, fixed=values)


# ---------------------------------------------------------------------------------------------
# code SHA


def normalize_sql(sql: str, *, dialect: str = "duckdb") -> str:
    """Canonical text of SQL: sqlglot's rendering, so formatting, comments and keyword case
    do not count; identifiers keep their case and quoting (they name output columns)."""
    try:
        statements = sqlglot.parse(sql, read=dialect)
    except SqlglotError as exc:
        raise CodeError(f"SQL does not parse ({dialect} dialect): {_sql_reason(exc)}") from exc
    parsed = [s for s in statements if s is not None]
    if not parsed:
        raise CodeError("SQL is empty: it has no statement")
    for statement in parsed:
        if isinstance(statement, exp.Command):
            # sqlglot fell back to keeping the raw text, which cannot be normalised
            raise CodeError(
                f"SQL does not parse ({dialect} dialect): unsupported statement {statement.sql()!r}"
            )
    return ";\n".join(s.sql(dialect=dialect, comments=False) for s in parsed)


def _sql_reason(exc: SqlglotError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:  # ParseError: say where, without the terminal colour codes of str(exc)
        first = errors[0]
        return (
            f"{first.get('description')} at line {first.get('line')}, "
            f"column {first.get('col')}, near {first.get('highlight')!r}"
        )
    return _ANSI_RE.sub("", str(exc))


def sql_code_sha(sql: str, *, dialect: str = "duckdb") -> str:
    """Hash of `normalize_sql(sql)`: the code part of a SQL transform, alone."""
    return hash_parts(
        "headwater.sql", str(CODE_SHA_VERSION), dialect, normalize_sql(sql, dialect=dialect)
    )


def normalize_python(source: str, function: str) -> str:
    """Canonical text of `function` in module `source` plus the module-level statements it
    uses, transitively by name: functions, classes, assignments and imports.

    Docstrings, comments and formatting do not count, nor do module statements it does not
    reach. A local variable that shares a module-level name pulls that statement in too (safe:
    over-inclusion only makes the SHA change more often). Code in other modules does not count.
    """
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise CodeError(f"Python source does not parse: {exc}") from exc
    _strip_docstrings(module)
    statements = module.body
    if not any(
        isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == function
        for s in statements
    ):
        raise CodeError(f"Python source has no module-level function named {function!r}")
    bound = [_bound_names(s) for s in statements]
    chosen = {i for i, names in enumerate(bound) if "*" in names}  # star imports may bind any
    todo = [function]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for i, names in enumerate(bound):
            if name in names and i not in chosen:
                chosen.add(i)
                todo += _used_names(statements[i])
    # sorted by name; statements that rebind one name keep their source order
    ordered = sorted(chosen, key=lambda i: (min(bound[i], default=""), i))
    return "\n".join([f"function {function}", *(_dump(statements[i]) for i in ordered)])


def python_code_sha(source: str, function: str) -> str:
    """Hash of `normalize_python(source, function)`: the code part of a Python transform."""
    return hash_parts("headwater.python", str(CODE_SHA_VERSION), normalize_python(source, function))


_Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]


def _bound_names(statement: ast.stmt) -> set[str]:
    """Module-level names a statement binds ("*" for a star import)."""
    names: set[str] = set()
    todo: list[ast.AST] = [statement]
    while todo:
        node = todo.pop()
        if isinstance(node, _Scope):
            names.add(node.name)
            if node is not statement:
                continue  # names bound inside a def or class are not module-level
            todo += node.decorator_list
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        todo += ast.iter_child_nodes(node)
    return names


def _used_names(statement: ast.stmt) -> list[str]:
    return sorted({n.id for n in ast.walk(statement) if isinstance(n, ast.Name)})


def _dump(node: object) -> str:
    """`ast.dump(annotate_fields=True, include_attributes=False)` without empty fields.

    Omitting None and [] (as Python 3.13's dump does) keeps the text identical across Python
    versions that add optional fields (3.12's `type_params`), so upgrading Python does not
    change every code SHA.
    """
    if isinstance(node, ast.AST):
        fields = []
        for field in node._fields:
            value = getattr(node, field, None)
            if (value is None and field != "value") or (isinstance(value, list) and not value):
                continue
            fields.append(f"{field}={_dump(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(item) for item in node) + "]"
    return repr(node)


def code_sha(
    *,
    kind: str,
    normalized_code: str,
    inputs: Sequence[tuple[str, str, str]],
    ordered: bool,
    version: str | None,
    engine: str,
) -> str:
    """Code SHA of a dataset: everything besides input data that decides its output.

    `inputs` are (input dataset, mapping, canonical mapping parameters); their order does not
    count. `version` is the user's salt; None and "" differ.
    """
    salt: list[str | bytes] = ["no-version"] if version is None else ["version", version]
    flat = [part for item in sorted(inputs) for part in item]
    return hash_parts(
        "headwater.code_sha",
        str(CODE_SHA_VERSION),
        kind,
        engine,
        "ordered" if ordered else "unordered",
        *salt,
        normalized_code,
        str(len(inputs)),
        *flat,
    )


def fingerprint(code_sha: str, inputs: Iterable[tuple[str, str, str]]) -> str:
    """Fingerprint of a derived partition: its code SHA over the sorted list of
    (input dataset, input partition key, input data SHA). It names one computation."""
    _check_sha(code_sha, "code_sha")
    items = sorted(inputs)
    for dataset, key, sha in items:
        _check_sha(sha, f"data SHA of input {dataset!r} partition {key!r}")
    flat = [part for item in items for part in item]
    return hash_parts(
        "headwater.fingerprint", str(FINGERPRINT_VERSION), code_sha, str(len(items)), *flat
    )


def source_fingerprint(data_sha: str) -> str:
    """Fingerprint of a source partition: its data SHA (nothing computes it)."""
    _check_sha(data_sha, "data_sha")
    return data_sha


def _check_sha(value: str, what: str) -> None:
    if not _SHA_RE.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex characters, got {value!r}")
