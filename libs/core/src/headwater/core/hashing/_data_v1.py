"""Data SHA version 1, frozen: it checks objects stored under a version 1 SHA (they keep it);
nothing new is hashed with it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headwater.core.hashing._canonical import (
    Column,
    canonical_leaf,
    canonical_unit,
    is_nested,
    logical_type,
    tokens,
    unwrap,
    validity,
)
from headwater.core.hashing._parts import hash_parts


def data_sha_v1(table: pa.Table, *, ordered: bool) -> str:
    """Version 1: rows sorted on all canonical columns by Arrow, then every column's name,
    logical type, validity bitmap and canonical values fed to SHA-256 (`hash_parts`)."""
    n = table.num_rows
    table = pa.table([canonical_unit(c) for c in table.columns], names=table.column_names)
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
        parts += ["column", name, logical_type(field.type, name), *col.encode()]
    return hash_parts(*parts)


def _sort_order(columns: Sequence[Column], n: int) -> npt.NDArray[np.int64] | None:
    keys = {f"c{i}": key for i, col in enumerate(columns) if (key := col.sort_key()) is not None}
    if n < 2 or not keys:
        return None
    # Plain ascending order of unsigned ints and of bytes, nulls last: a total order defined
    # by content alone, independent of how Arrow breaks ties (tied rows are identical).
    order = pc.sort_indices(
        pa.table(keys), sort_keys=[(name, "ascending", "at_end") for name in keys]
    )
    return np.asarray(order.to_numpy(), dtype=np.int64)


def _canonical_column(chunked: pa.ChunkedArray, name: str) -> Column:
    chunks = [unwrap(chunk) for chunk in chunked.chunks]
    if not chunks:
        arr = unwrap(pa.array([], type=chunked.type))
    elif len(chunks) == 1:
        arr = chunks[0]
    else:
        arr = pa.concat_arrays(chunks)
    if is_nested(arr.type):
        encoded = tokens(arr, name)
        return Column(validity(arr), var=pa.array(encoded, type=pa.large_binary()))
    return canonical_leaf(arr, name)
