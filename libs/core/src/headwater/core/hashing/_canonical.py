"""Data SHA: the canonical forms every version shares (units of time, logical types, nested
values as injective tokens, a leaf column's validity and values). A change here changes every
version's SHAs, the frozen version 1's included."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

CANONICAL_NAN: Final = {2: 0x7E00, 4: 0x7FC00000, 8: 0x7FF8000000000000}

BoolArray = npt.NDArray[np.bool_]


def canonical_unit(chunked: pa.ChunkedArray) -> pa.ChunkedArray:
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


def unwrap(arr: pa.Array) -> pa.Array:
    """Map an array to the physical form of its logical type (see `logical_type`)."""
    t = arr.type
    if isinstance(t, pa.BaseExtensionType):
        return unwrap(arr.storage)
    if pa.types.is_dictionary(t):
        return unwrap(arr.dictionary_decode())
    if is_string_like(t) or is_binary_like(t):
        return arr.cast(pa.large_binary())
    return arr


def is_string_like(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def is_binary_like(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t))


def is_list_like(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def is_nested(t: pa.DataType) -> bool:
    return bool(
        is_list_like(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_map(t)
        or pa.types.is_struct(t)
        or pa.types.is_union(t)
    )


def frame(token: bytes | None) -> bytes:
    if token is None:
        return b"\x00"
    return b"\x01" + len(token).to_bytes(8, "big") + token


def tokens(arr: pa.Array, name: str) -> list[bytes | None]:
    """Injective per-row byte encoding of any supported array (the slow path for nested types)."""
    arr = unwrap(arr)
    t = arr.type
    n = len(arr)
    valid = validity(arr)
    if pa.types.is_union(t):
        raise TypeError(f"data_sha: column {name!r} has unsupported type {t}")
    if is_list_like(t) or pa.types.is_map(t) or pa.types.is_fixed_size_list(t):
        child = tokens(arr.values, name)
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
            (len(child[a:b]).to_bytes(8, "big") + b"".join(frame(x) for x in child[a:b]))
            if ok
            else None
            for ok, a, b in zip(valid.tolist(), starts.tolist(), stops.tolist(), strict=True)
        ]
    if pa.types.is_struct(t):
        # .field(i) is sliced to this array's offset and length
        fields = [tokens(arr.field(i), name) for i in range(t.num_fields)]
        return [
            b"".join(frame(f[i]) for f in fields) if ok else None
            for i, ok in enumerate(valid.tolist())
        ]
    col = canonical_leaf(arr, name)
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


def logical_type(t: pa.DataType, name: str) -> str:
    """Canonical type string: names the logical type only (no metadata, nullability or names
    of list items), with the variants Parquet round trips swap merged into one."""
    if isinstance(t, pa.BaseExtensionType):
        # str() names C++ extensions with their parameters; Python ones serialize theirs
        serialize = getattr(t, "__arrow_ext_serialize__", None)
        params = serialize().hex() if serialize is not None else ""
        return f"extension<{t}, {params}, {logical_type(t.storage_type, name)}>"
    if pa.types.is_dictionary(t):
        return logical_type(t.value_type, name)
    if is_string_like(t):
        return "string"
    if is_binary_like(t):
        return "binary"
    if is_list_like(t):
        return f"list<{logical_type(t.value_type, name)}>"
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{logical_type(t.value_type, name)}>[{t.list_size}]"
    if pa.types.is_map(t):
        key, item = logical_type(t.key_type, name), logical_type(t.item_type, name)
        return f"map<{key}, {item}>"
    if pa.types.is_struct(t):
        fields = ", ".join(
            f"{json.dumps(t.field(i).name)}: {logical_type(t.field(i).type, name)}"
            for i in range(t.num_fields)
        )
        return f"struct<{fields}>"
    if pa.types.is_union(t):
        raise TypeError(f"data_sha: column {name!r} has unsupported type {t}")
    return str(t)  # e.g. "int64", "timestamp[us, tz=UTC]", "decimal128(10, 2)"


@dataclass(frozen=True)
class Column:
    """One column in canonical form: validity plus exactly one kind of values (none for null)."""

    valid: BoolArray
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
            [bitmap(self.valid), pa.py_buffer(np.ascontiguousarray(self.fixed).tobytes())],
        )

    def take(self, order: npt.NDArray[np.int64]) -> Column:
        valid = self.valid[order]
        if self.var is not None:
            return Column(valid, var=self.var.take(pa.array(order)))
        if self.fixed is not None:
            return Column(valid, fixed=self.fixed[order])
        return Column(valid)

    def encode(self) -> list[str | bytes]:
        bitmap = np.packbits(self.valid, bitorder="little").tobytes()
        if self.fixed is not None:
            values = self.fixed
            if values.ndim == 1:
                values = values.astype(values.dtype.newbyteorder("<"), copy=False)
            return ["fixed", bitmap, np.ascontiguousarray(values).tobytes()]
        if self.var is not None:
            lengths = pc.fill_null(pc.binary_length(self.var), 0).to_numpy(zero_copy_only=False)
            return ["var", bitmap, lengths.astype("<i8").tobytes(), var_data(self.var)]
        return ["null", bitmap]


def bitmap(valid: BoolArray) -> pa.Buffer | None:
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())


def var_data(arr: pa.Array) -> bytes:
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


def validity(arr: pa.Array) -> BoolArray:
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=np.bool_)
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.bool_)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def canonical_leaf(arr: pa.Array, name: str) -> Column:
    """Canonical form of a non-nested array already passed through `unwrap`."""
    t = arr.type
    n = len(arr)
    valid = validity(arr)
    if pa.types.is_null(t):
        return Column(valid)
    if pa.types.is_large_binary(t):
        return Column(valid, var=arr)
    if pa.types.is_boolean(t):
        bools = pc.fill_null(arr, False).to_numpy(zero_copy_only=False)
        return Column(valid, fixed=np.asarray(bools, dtype=np.uint8))
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
            values[np.isnan(values.view(f"f{width}"))] = CANONICAL_NAN[width]
    elif n == 0 or buf is None:
        values = np.zeros((n, width), dtype=np.uint8)
    else:
        raw = np.frombuffer(buf, dtype=np.uint8, count=n * width, offset=arr.offset * width)
        values = raw.reshape(n, width).copy()
    values[~valid] = 0
    return Column(valid, fixed=values)
