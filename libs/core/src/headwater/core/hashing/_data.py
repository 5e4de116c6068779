"""Data SHA (version 2, BLAKE3): a partition's canonical content, whatever its encoding,
chunking or (unless ordered) row order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import blake3
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headwater.core.hashing._canonical import (
    CANONICAL_NAN,
    BoolArray,
    canonical_unit,
    is_binary_like,
    is_nested,
    is_string_like,
    logical_type,
    tokens,
    var_data,
)
from headwater.core.hashing._data_v1 import data_sha_v1
from headwater.core.hashing._parts import blake3_parts

DATA_SHA_ALGORITHM: Final = "blake3"  # version 1 was SHA-256 (HASH_ALGORITHM)
DATA_SHA_VERSION: Final = 2


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
        return data_sha_v1(table, ordered=ordered)
    if version != DATA_SHA_VERSION:
        raise ValueError(f"data SHA version {version} is not 1 or {DATA_SHA_VERSION}")
    n = table.num_rows
    units = [canonical_unit(chunked) for chunked in table.columns]
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
        parts += ["column", name, logical_type(chunked.type, name), digest]
    return blake3_parts(*parts).hex()


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
    valid: BoolArray | None  # None when the chunk has no null
    # fixed: (rows,) little-endian unsigned ints or (rows, width) uint8, zeros under nulls (a
    # view of Arrow's buffer when nothing needed changing); var: a string or binary array
    values: Any

    def validity(self) -> BoolArray:
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
        if is_nested(t):
            chunks = [pa.array(tokens(chunk, name), type=pa.large_binary()) for chunk in chunks]
            t = pa.large_binary()
        if is_string_like(t) or is_binary_like(t):
            return cls("var", [_Piece(len(chunk), _valid_bits(chunk), chunk) for chunk in chunks])
        width = _fixed_width(t, name)
        pieces = []
        for chunk in chunks:
            valid = _valid_bits(chunk)
            pieces.append(_Piece(len(chunk), valid, _fixed_values(chunk, width, valid)))
        signed = bool(pa.types.is_signed_integer(t) or pa.types.is_temporal(t)) and width <= 8
        return cls("fixed", pieces, width, signed, pa.types.is_floating(t))

    @property
    def valid(self) -> BoolArray | None:
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
        return blake3_parts(*parts)

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
    """`arr` as the physical form of its logical type that `_Canonical` reads: as `unwrap`, but
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


def _valid_bits(arr: pa.Array) -> BoolArray | None:
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


def _fixed_values(arr: pa.Array, width: int, valid: BoolArray | None) -> npt.NDArray[Any]:
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
            values = np.where(nan, dtype.type(CANONICAL_NAN[width]), values)
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
            data.append(var_data(pc.drop_null(arr).cast(pa.large_binary())))
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
    valid: BoolArray | None  # None when the column has no null, or its values say which
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
        return blake3_parts(*parts)


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
