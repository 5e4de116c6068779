"""Every content hash in Headwater: data SHAs, code SHAs and fingerprints (pure, no I/O).

Each hash is a lowercase hex SHA-256 of length-prefixed parts (`hash_parts`); store
`HASH_ALGORITHM` and the matching `*_VERSION` constant beside it. A rule change bumps the version.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = [
    "CODE_SHA_VERSION",
    "DATA_SHA_VERSION",
    "FINGERPRINT_VERSION",
    "HASH_ALGORITHM",
    "CodeError",
    "code_sha",
    "data_sha",
    "fingerprint",
    "hash_parts",
    "normalize_python",
    "normalize_sql",
    "python_code_sha",
    "source_fingerprint",
    "sql_code_sha",
]

HASH_ALGORITHM: Final = "sha256"
FINGERPRINT_VERSION: Final = 1
DATA_SHA_VERSION: Final = 1
CODE_SHA_VERSION: Final = 1

_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")
_ANSI_RE: Final = re.compile(r"\x1b\[[0-9;]*m")


class CodeError(ValueError):
    """A transform's code cannot be normalised (it does not parse, or names a missing function).

    Permanent: the same code fails the same way, so it is never retried.
    """

    retryable: Final = False


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


def data_sha(table: pa.Table, *, ordered: bool = False) -> str:
    """Canonical hash of a table's rows and schema.

    Equal whatever the chunking, slice offsets, bytes under null slots, schema/field metadata,
    nullability flags, file encoding or compression, and (unless `ordered`) row order; rows are
    a multiset, so duplicates count. Differs when a value, a null, a column name, the column
    order or a column's logical type changes. Logical types: string/large_string/string_view
    are one type, so are binary/large_binary/binary_view, list/large_list/list_view, and a
    dictionary column is its value type (Parquet round trips change these); every other type is
    kept exactly (int32 != int64, a timestamp's tz counts). Top-level timestamp, time and
    duration columns are compared as instants, not units: Parquet stores seconds as
    milliseconds, so they are taken in microseconds when exact, else kept in nanoseconds. Floats are hashed by their bits,
    so -0.0 != 0.0, but every NaN is the one canonical quiet NaN. Null differs from every value.

    How: each column becomes a canonical form (fixed-width little-endian values with zeros under
    nulls, or large_binary; nested columns become an injective byte encoding per row). Unless
    `ordered`, rows are sorted by all canonical columns (a total order on content alone, so equal
    multisets give identical sorted sequences). The row count, then per column its name, logical
    type, validity bitmap and canonical values are fed to `hash_parts`. No per-row digests are
    used, so collision resistance is SHA-256's, not a 64/128-bit argument.
    """
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
        str(DATA_SHA_VERSION),
        "ordered" if ordered else "unordered",
        str(n),
        str(table.num_columns),
    ]
    for name, field, col in zip(table.column_names, table.schema, columns, strict=True):
        parts += ["column", name, _logical_type(field.type, name), *col.encode()]
    return hash_parts(*parts)


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


_CANONICAL_NAN: Final = {2: 0x7E00, 4: 0x7FC00000, 8: 0x7FF8000000000000}

_BoolArray = npt.NDArray[np.bool_]


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
