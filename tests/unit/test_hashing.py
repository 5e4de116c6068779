"""The hashing gate: what must and must not change data SHAs, code SHAs and fingerprints."""

from __future__ import annotations

import datetime
import decimal
import io
import math
import random
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.hashing import (
    DATA_SHA_VERSION,
    CodeError,
    code_sha,
    data_sha,
    fingerprint,
    hash_parts,
    holds_data_sha,
    normalize_python,
    normalize_sql,
    python_code_sha,
    source_fingerprint,
    sql_code_sha,
)
from headwater.core.hashing import _data as data_rules
from headwater.core.spec import PipelineDocument, parse_pipeline


def sample_table() -> pa.Table:
    """Every common column kind, with nulls, duplicates, NaN and empty strings."""
    n = 40
    rng = random.Random(7)
    return pa.table(
        {
            "id": pa.array([i % 17 for i in range(n)], pa.int64()),
            "small": pa.array([None if i % 5 == 0 else i for i in range(n)], pa.int32()),
            "x": pa.array(
                [
                    None if i % 7 == 0 else (math.nan if i % 11 == 0 else rng.random())
                    for i in range(n)
                ],
                pa.float64(),
            ),
            "flag": pa.array([None if i % 6 == 0 else i % 2 == 0 for i in range(n)], pa.bool_()),
            "name": pa.array(
                [None if i % 4 == 0 else ("" if i % 9 == 0 else f"n{i % 13}") for i in range(n)],
                pa.string(),
            ),
            "blob": pa.array([None if i % 8 == 0 else bytes([i % 3]) * (i % 4) for i in range(n)]),
            "ts": pa.array(
                [None if i % 10 == 0 else 1_700_000_000_000_000 + i for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "day": pa.array([19000 + i % 3 for i in range(n)], pa.date32()),
            "tags": pa.array(
                [None if i % 9 == 0 else [f"t{j}" for j in range(i % 3)] for i in range(n)],
                pa.list_(pa.string()),
            ),
            "point": pa.array(
                [
                    None if i % 12 == 0 else {"a": i % 5, "b": None if i % 2 else "s"}
                    for i in range(n)
                ],
                pa.struct([("a", pa.int64()), ("b", pa.string())]),
            ),
        }
    )


def rebuilt(table: pa.Table) -> pa.Table:
    """The same rows and schema in fresh, unsliced, single-chunk buffers."""
    return pa.Table.from_pylist(table.to_pylist(), schema=table.schema)


@pytest.fixture
def table() -> pa.Table:
    return sample_table()


# ---------------------------------------------------------------------------------------------
# hash_parts


def test_hash_parts_is_unambiguous() -> None:
    assert hash_parts("ab", "c") != hash_parts("a", "bc")
    assert hash_parts("a", "") != hash_parts("a")
    assert hash_parts("x", "y") == hash_parts(b"x", b"y")
    h = hash_parts("x")
    assert len(h) == 64
    assert h == h.lower()
    int(h, 16)


# ---------------------------------------------------------------------------------------------
# data SHA: invariances


def test_chunking_does_not_change_data_sha(table: pa.Table) -> None:
    expected = data_sha(table)
    for size in (1, 3, 7, 1000):
        assert data_sha(pa.Table.from_batches(table.to_batches(max_chunksize=size))) == expected
    pieces = pa.concat_tables([table.slice(0, 5), table.slice(5, 20), table.slice(25)])
    assert pieces.column(0).num_chunks == 3
    assert data_sha(pieces) == expected
    assert data_sha(pieces, ordered=True) == data_sha(table, ordered=True)


def test_slice_offsets_do_not_change_data_sha(table: pa.Table) -> None:
    for start, length in ((3, 20), (11, 29), (0, 1), (39, 1)):
        part = table.slice(start, length)
        assert part.column("tags").chunk(0).offset == start
        assert data_sha(part) == data_sha(rebuilt(part))
        assert data_sha(part, ordered=True) == data_sha(rebuilt(part), ordered=True)


def parquet_round_trip(table: pa.Table, **options: object) -> pa.Table:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    sink.seek(0)
    return pq.read_table(sink)


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "none"},
        {"compression": "snappy"},
        {"compression": "zstd", "compression_level": 9},
        {"compression": "gzip"},
        {"compression": "brotli"},
        {"compression": "lz4"},
        {"use_dictionary": False},
        {"use_dictionary": True, "compression": "zstd"},
        {"row_group_size": 7},
        {"row_group_size": 1, "compression": "snappy"},
        {"data_page_version": "2.0", "data_page_size": 64},
        {
            "use_dictionary": False,
            "column_encoding": {"x": "BYTE_STREAM_SPLIT", "id": "DELTA_BINARY_PACKED"},
        },
        {"store_schema": False},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_parquet_round_trip_does_not_change_data_sha(
    table: pa.Table, options: dict[str, object]
) -> None:
    assert data_sha(parquet_round_trip(table, **options)) == data_sha(table)
    assert data_sha(parquet_round_trip(table, **options), ordered=True) == data_sha(
        table, ordered=True
    )


def test_parquet_read_as_dictionary_does_not_change_data_sha(table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    sink.seek(0)
    read = pq.read_table(sink, read_dictionary=["name", "blob"])
    assert pa.types.is_dictionary(read.schema.field("name").type)
    assert data_sha(read) == data_sha(table)


def test_garbage_under_null_slots_does_not_change_data_sha() -> None:
    validity = pa.py_buffer(bytes([0b0101]))  # rows 0 and 2 valid, 1 and 3 null
    clean = pa.table(
        {
            "i": pa.array([1, None, 3, None], pa.int64()),
            "f": pa.array([1.5, None, -2.0, None], pa.float64()),
            "b": pa.array([True, None, False, None], pa.bool_()),
            "s": pa.array(["ab", None, "c", None], pa.string()),
            "l": pa.array([[1], None, [2, 3], None], pa.list_(pa.int32())),
        }
    )
    ints = struct.pack("<4q", 1, 0x5A5A5A5A, 3, -1)
    floats = struct.pack("<4d", 1.5, math.pi, -2.0, math.nan)
    # strings: the null slots own bytes "XYZ" and "Q" in the data buffer
    s_offsets = struct.pack("<5i", 0, 2, 5, 6, 7)
    child = pa.array([1, 99, 98, 2, 3, 97], pa.int32())
    dirty = pa.table(
        {
            "i": pa.Array.from_buffers(pa.int64(), 4, [validity, pa.py_buffer(ints)]),
            "f": pa.Array.from_buffers(pa.float64(), 4, [validity, pa.py_buffer(floats)]),
            "b": pa.Array.from_buffers(pa.bool_(), 4, [validity, pa.py_buffer(bytes([0b1011]))]),
            "s": pa.Array.from_buffers(
                pa.string(), 4, [validity, pa.py_buffer(s_offsets), pa.py_buffer(b"abXYZcQ")]
            ),
            "l": pa.Array.from_buffers(
                pa.list_(pa.int32()),
                4,
                [validity, pa.py_buffer(struct.pack("<5i", 0, 1, 3, 5, 6))],
                children=[child],
            ),
        }
    )
    assert dirty.to_pylist() == clean.to_pylist()
    assert data_sha(dirty) == data_sha(clean)
    assert data_sha(dirty, ordered=True) == data_sha(clean, ordered=True)


def test_metadata_and_nullability_do_not_change_data_sha(table: pa.Table) -> None:
    fields = [
        pa.field(f.name, f.type, nullable=f.name != "id", metadata={"doc": f"about {f.name}"})
        for f in table.schema
    ]
    schema = pa.schema(fields, metadata={"pandas": "{}", "owner": "someone"})
    assert data_sha(table.cast(schema)) == data_sha(table)
    assert data_sha(table.replace_schema_metadata({"x": "y"})) == data_sha(table)


def test_row_order_does_not_change_unordered_data_sha(table: pa.Table) -> None:
    order = list(range(table.num_rows))
    random.Random(1).shuffle(order)
    assert data_sha(table.take(order)) == data_sha(table)
    assert data_sha(table.take(order[::-1])) == data_sha(table)


def test_physical_variants_of_one_logical_type_hash_equal() -> None:
    values = ["a", None, "bc", "a"]
    plain = pa.table({"s": pa.array(values, pa.string())})
    for variant in (
        pa.array(values, pa.large_string()),
        pa.array(values, pa.string_view()),
        pa.array(values, pa.string()).dictionary_encode(),
        pa.array(values, pa.large_string()).dictionary_encode(),
    ):
        assert data_sha(pa.table({"s": variant})) == data_sha(plain), variant.type
    raw = [b"a", None, b"\x00"]
    binary = data_sha(pa.table({"b": pa.array(raw, pa.binary())}))
    assert data_sha(pa.table({"b": pa.array(raw, pa.large_binary())})) == binary
    assert data_sha(pa.table({"b": pa.array(raw, pa.binary_view())})) == binary
    lists = [[1, 2], None, []]
    small = data_sha(pa.table({"l": pa.array(lists, pa.list_(pa.int64()))}))
    assert data_sha(pa.table({"l": pa.array(lists, pa.large_list(pa.int64()))})) == small
    assert data_sha(pa.table({"l": pa.array(lists, pa.list_view(pa.int64()))})) == small


def test_nan_payloads_hash_equal() -> None:
    quiet = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000000))[0]
    other = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000123))[0]
    assert math.isnan(quiet)
    assert math.isnan(other)
    a = pa.table({"x": pa.array(np.array([quiet, 1.0]))})
    b = pa.table({"x": pa.array(np.array([other, 1.0]))})
    assert data_sha(a) == data_sha(b)
    f32 = np.array([np.nan, 1.0], dtype=np.float32)
    f32_other = f32.copy()
    f32_other.view(np.uint32)[0] = 0xFFC00001
    assert data_sha(pa.table({"x": pa.array(f32)})) == data_sha(
        pa.table({"x": pa.array(f32_other)})
    )


def test_many_chunks_of_dictionaries_with_different_dictionaries() -> None:
    one = pa.array(["a", "b"]).dictionary_encode()
    two = pa.array(["b", "c", None]).dictionary_encode()
    chunked = pa.table({"s": pa.chunked_array([one, two])})
    assert data_sha(chunked) == data_sha(pa.table({"s": ["a", "b", "b", "c", None]}))


def other_types_table() -> pa.Table:
    """Less common types: each goes through the fast path (fixed width) or the nested slow path."""
    n = 12
    return pa.table(
        {
            "u8": pa.array([i % 3 for i in range(n)], pa.uint8()),
            "f16": pa.array(np.array([i / 4 for i in range(n)], dtype=np.float16)),
            "dec": pa.array([decimal.Decimal(i % 4) / 8 for i in range(n)], pa.decimal128(12, 3)),
            "dec256": pa.array([decimal.Decimal(i % 2) for i in range(n)], pa.decimal256(40, 2)),
            "fsb": pa.array(
                [None if i == 3 else bytes([i % 2, 1]) for i in range(n)], pa.binary(2)
            ),
            "t64": pa.array([i * 1000 for i in range(n)], pa.time64("ns")),
            "dur": pa.array([None if i == 5 else i for i in range(n)], pa.duration("ms")),
            "d64": pa.array([86_400_000 * (i % 3) for i in range(n)], pa.date64()),
            "mdn": pa.array([pa.MonthDayNano([i % 2, 1, i]) for i in range(n)]),
            "nothing": pa.nulls(n),
            "fsl": pa.array(
                [None if i == 2 else [i % 2, i % 3] for i in range(n)], pa.list_(pa.int32(), 2)
            ),
            "map": pa.array(
                [None if i == 4 else [("k", i % 2), ("j", None)] for i in range(n)],
                pa.map_(pa.string(), pa.int64()),
            ),
            "deep": pa.array(
                [[{"xs": [i % 2, None], "d": "v"}] if i % 3 else None for i in range(n)],
                pa.list_(pa.struct([("xs", pa.list_(pa.int8())), ("d", pa.string())])),
            ),
            "lview": pa.array([[i % 2] * (i % 3) for i in range(n)], pa.list_view(pa.int16())),
            "dict_in_list": pa.array(
                [[pa.scalar("a").as_py()] * (i % 2) for i in range(n)],
                pa.list_(pa.dictionary(pa.int8(), pa.string())),
            ),
        }
    )


def test_other_types_are_invariant_to_slicing_chunking_and_order() -> None:
    table = other_types_table()
    expected = data_sha(table)
    for start, length in ((1, 9), (5, 7), (11, 1)):
        part = table.slice(start, length)
        assert data_sha(part) == data_sha(rebuilt(part))
        assert data_sha(part, ordered=True) == data_sha(rebuilt(part), ordered=True)
    assert data_sha(pa.Table.from_batches(table.to_batches(max_chunksize=5))) == expected
    assert data_sha(table.take(list(range(table.num_rows))[::-1])) == expected


def test_other_types_see_value_changes() -> None:
    table = other_types_table()
    expected = data_sha(table)
    for name in table.column_names:
        if name == "nothing":
            continue
        values = table.column(name).to_pylist()
        changed = pa.array([values[1], *values[1:]], table.schema.field(name).type)
        assert values[0] != values[1], name
        assert data_sha(with_column(table, name, changed.to_pylist())) != expected, name


def test_extension_type_hashes_its_storage_with_its_name_and_parameters() -> None:
    storage = pa.array([1, 2, None], pa.int64())
    opaque = pa.ExtensionArray.from_storage(pa.opaque(pa.int64(), "t", "v"), storage)
    other = pa.ExtensionArray.from_storage(pa.opaque(pa.int64(), "u", "v"), storage)
    assert data_sha(pa.table({"e": opaque})) != data_sha(pa.table({"e": storage}))
    assert data_sha(pa.table({"e": opaque})) != data_sha(pa.table({"e": other}))
    assert data_sha(pa.table({"e": opaque.slice(1)})) == data_sha(
        pa.table({"e": pa.ExtensionArray.from_storage(opaque.type, pa.array([2, None]))})
    )


# ---------------------------------------------------------------------------------------------
# data SHA: changes that must alter it


def with_column(table: pa.Table, name: str, values: list[object]) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def test_one_changed_value_changes_data_sha(table: pa.Table) -> None:
    def other(value: object) -> object:
        if isinstance(value, bool):
            return not value
        if isinstance(value, int | float):
            return value + 1 if value == value else 0.5
        if isinstance(value, str):
            return value + "z"
        if isinstance(value, bytes):
            return value + b"z"
        if isinstance(value, list):
            return [*value, "z"]
        if isinstance(value, dict):
            return {**value, "a": 99}
        if isinstance(value, datetime.datetime):
            return value + datetime.timedelta(microseconds=1)
        return value + datetime.timedelta(days=1)  # type: ignore[operator]

    for name in table.column_names:
        for ordered in (False, True):
            values = table.column(name).to_pylist()
            i = next(k for k, v in enumerate(values) if v is not None)
            changed = [*values[:i], other(values[i]), *values[i + 1 :]]
            assert data_sha(with_column(table, name, changed), ordered=ordered) != data_sha(
                table, ordered=ordered
            ), name


def test_one_new_null_changes_data_sha(table: pa.Table) -> None:
    for name in table.column_names:
        values = table.column(name).to_pylist()
        i = next(k for k, v in enumerate(values) if v is not None)
        changed = list(values)
        changed[i] = None
        assert data_sha(with_column(table, name, changed)) != data_sha(table), name


def test_null_differs_from_empty_and_zero() -> None:
    shas = {data_sha(pa.table({"s": pa.array(v, pa.string())})) for v in ([None], [""], ["\x00"])}
    assert len(shas) == 3
    shas = {data_sha(pa.table({"i": pa.array(v, pa.int64())})) for v in ([None], [0])}
    assert len(shas) == 2
    lists: list[list[list[int | None] | None]] = [[None], [[]], [[None]]]
    shas = {data_sha(pa.table({"l": pa.array(v, pa.list_(pa.int64()))})) for v in lists}
    assert len(shas) == 3
    struct_type = pa.struct([("a", pa.int64())])
    shas = {data_sha(pa.table({"p": pa.array(v, struct_type)})) for v in ([None], [{"a": None}])}
    assert len(shas) == 2


def test_nested_boundaries_count() -> None:
    t = pa.list_(pa.string())
    one = data_sha(pa.table({"l": pa.array([["a", "b"], []], t)}))
    two = data_sha(pa.table({"l": pa.array([["a"], ["b"]], t)}))
    three = data_sha(pa.table({"l": pa.array([["ab"], []], t)}))
    assert len({one, two, three}) == 3


def test_column_order_changes_data_sha(table: pa.Table) -> None:
    names = table.column_names
    assert data_sha(table.select([names[1], names[0], *names[2:]])) != data_sha(table)


def test_column_name_changes_data_sha(table: pa.Table) -> None:
    assert data_sha(table.rename_columns(["ID", *table.column_names[1:]])) != data_sha(table)


@pytest.mark.parametrize(
    ("column", "other_type"),
    [
        (pa.array([1, 2, None], pa.int64()), pa.int32()),
        (pa.array([1, 2, None], pa.int64()), pa.uint64()),
        (pa.array([1, 2, None], pa.int64()), pa.float64()),
        (pa.array([1.0, 2.5, None], pa.float64()), pa.float32()),
        (pa.array([1, 2, None], pa.timestamp("us")), pa.timestamp("us", tz="UTC")),
        (
            pa.array([1, 2, None], pa.timestamp("us", tz="UTC")),
            pa.timestamp("us", tz="Europe/Paris"),
        ),
        (pa.array(["1", "2", None], pa.string()), pa.binary()),
        (pa.array([decimal.Decimal("1.25"), None], pa.decimal128(10, 2)), pa.decimal128(12, 2)),
        (pa.array([1, 2, None], pa.date32()), pa.date64()),
        (pa.array([[1], [2], None], pa.list_(pa.int64())), pa.list_(pa.int32())),
        (pa.array([[1, 2], [3, 4], None], pa.list_(pa.int64())), pa.list_(pa.int64(), 2)),
    ],
    ids=lambda v: str(v.type) if isinstance(v, pa.Array) else str(v),
)
def test_column_type_changes_data_sha(column: pa.Array, other_type: pa.DataType) -> None:
    before = pa.table({"c": column})
    after = pa.table({"c": column.cast(other_type)})
    assert after.to_pylist() == before.to_pylist() or other_type != column.type
    assert data_sha(before) != data_sha(after)


def test_timestamps_are_compared_as_instants_whatever_their_unit() -> None:
    seconds = pa.array([0, 1_356_998_400, None], pa.timestamp("s"))
    tables = [pa.table({"t": seconds.cast(pa.timestamp(unit))}) for unit in ("s", "ms", "us", "ns")]
    assert len({data_sha(t) for t in tables}) == 1
    # Parquet stores seconds as milliseconds: the round trip keeps the SHA.
    buf = io.BytesIO()
    pq.write_table(tables[0], buf)
    assert data_sha(pq.read_table(io.BytesIO(buf.getvalue()))) == data_sha(tables[0])
    # A sub-microsecond difference is content, and counts.
    fine = pa.table({"t": pa.array([1, 1_001], pa.timestamp("ns"))})
    coarse = pa.table({"t": pa.array([1, 1_000], pa.timestamp("ns"))})
    assert data_sha(fine) != data_sha(coarse)


def test_ordered_data_sha_sees_row_order(table: pa.Table) -> None:
    assert data_sha(table.take(list(range(table.num_rows))[::-1]), ordered=True) != data_sha(
        table, ordered=True
    )
    assert data_sha(table, ordered=True) != data_sha(table)


def test_signed_zero_is_a_different_value() -> None:
    assert data_sha(pa.table({"x": [0.0]})) != data_sha(pa.table({"x": [-0.0]}))


def test_duplicate_rows_count() -> None:
    assert data_sha(pa.table({"a": [1, 1, 2]})) != data_sha(pa.table({"a": [1, 2]}))
    assert data_sha(pa.table({"a": [1, 1, 2]})) != data_sha(pa.table({"a": [1, 2, 2]}))


def test_empty_table_sha_depends_on_schema() -> None:
    a = pa.table({"a": pa.array([], pa.int64())})
    assert data_sha(a) == data_sha(pa.table({"a": pa.array([], pa.int64())}))
    assert data_sha(a) != data_sha(pa.table({"a": pa.array([], pa.int32())}))
    assert data_sha(a) != data_sha(pa.table({"b": pa.array([], pa.int64())}))
    assert data_sha(pa.table({"a": [1]}).slice(1)) == data_sha(a)
    assert data_sha(pa.table({})) != data_sha(a)


def test_columns_swapping_values_differ() -> None:
    a = pa.table({"x": [1, 2], "y": [10, 20]})
    b = pa.table({"x": [1, 20], "y": [10, 2]})
    assert data_sha(a) != data_sha(b)


def test_unsupported_type_is_a_clear_error() -> None:
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    with pytest.raises(TypeError, match="column 'u'"):
        data_sha(pa.table({"u": union}))


def test_hashes_are_pinned() -> None:
    """A changed value here means a hashing rule changed: bump the matching *_VERSION, since
    every stored SHA would otherwise silently stop matching (and everything would rerun)."""
    t = pa.table({"a": pa.array([2, None, 1], pa.int64()), "s": ["x", "", None]})
    assert data_sha(t) == "28722fc00cca6e3b1bb0e0e9dd715e419bbdde4c12361dc8195c47e90e9a8baa"
    assert data_sha(t, ordered=True) == (
        "09d4d6bf0da560512a20c8e52315c94ed35421249d72bf7dcd96b988662204f7"
    )
    assert sql_code_sha("select a from t where b = 1") == (
        "b11414c9add8d6e87586b2bda4ad0074576207952bf7aea2310619bb73f0ad7a"
    )
    assert python_code_sha("X = 1\ndef f(t):\n    return X\n", "f") == (
        "e39744ad928e03a1ba6bcab37bd52d263fefa280c772b7d68b93ec9505b9f2c0"
    )
    assert code_sha(
        kind="sql",
        normalized_code="SELECT 1",
        inputs=[("a", "identity", "{}")],
        ordered=False,
        version=None,
        engine="e",
    ) == ("0062ba760e6fd134fa776bc266a306980f59485cebbf537b1a0c616fa8b455d5")
    assert fingerprint("a" * 64, [("a", "k", "b" * 64)]) == (
        "08ed67eff0ba8552c4b35afed1b9d93afab1b1779673d022b59261655c59be60"
    )


# Every column kind, each version, unordered then ordered. Version 1 is frozen: objects stored
# under its SHAs are checked with it (`holds_data_sha`), and it shares helpers with version 2.
PINNED_DATA_SHAS = {
    ("sample", 1): (
        "d7d54516138f4a7ae23a53912de5e6efe6e6335e9f0f8357a329b843091f625f",
        "a2d35165c1c9fef8dc23c4d3ec1837814c42bfb1f38c8cb21b16ae3f66e48f09",
    ),
    ("sample", 2): (
        "edecb6c1213f08acbceb39c4301e67a2f023c7169e611692513f275ba3942bbb",
        "620f0ce6944a69e95457e74d89d68378a85b04631f75859c034b0f651e665c76",
    ),
    ("other", 1): (
        "db403e05e19d75c0ab0cc00db249abc400022f153840e1bcf0597d9dfb7f87fb",
        "a85f228b5c46fa53624aa9ab12656cc03054411d261811be4f02893603568c9d",
    ),
    ("other", 2): (
        "8862139dfdf86a50a4f518ce45e03480767a85ad005801846bbabe013fd83aa0",
        "356c2dea15def3668942d35cbb2319ffade220b7d73ecf385bd882ff4640af56",
    ),
}


@pytest.mark.parametrize(("name", "version"), sorted(PINNED_DATA_SHAS))
def test_data_shas_of_every_version_are_pinned(name: str, version: int) -> None:
    table = sample_table() if name == "sample" else other_types_table()
    unordered, ordered = PINNED_DATA_SHAS[name, version]
    assert data_sha(table, version=version) == unordered
    assert data_sha(table, ordered=True, version=version) == ordered


def test_version_1_data_sha_is_still_computed() -> None:
    t = pa.table({"a": pa.array([2, None, 1], pa.int64()), "s": ["x", "", None]})
    assert data_sha(t, version=1) == (
        "b614091f7f52d723959a612c83b301f1dfb605d65ae07a1af078ea251c20b633"
    )
    assert data_sha(t, ordered=True, version=1) == (
        "6accf93e213633f9ba77359159fc6bd8fff2086c7fbbf32e4ec9677a55fa3ab6"
    )
    assert DATA_SHA_VERSION == 2
    with pytest.raises(ValueError, match="version 3"):
        data_sha(t, version=3)


def test_holds_data_sha_accepts_a_stored_sha_of_any_version(table: pa.Table) -> None:
    shuffled = table.take(list(range(table.num_rows))[::-1])
    for version in (1, 2):
        assert holds_data_sha(shuffled, data_sha(table, version=version))
        assert holds_data_sha(table, data_sha(table, ordered=True, version=version))
        assert not holds_data_sha(shuffled, data_sha(table, ordered=True, version=version))
    assert not holds_data_sha(table.slice(1), data_sha(table))


# ---------------------------------------------------------------------------------------------
# data SHA: property


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 12))
    kinds = draw(
        st.lists(st.sampled_from(["int", "float", "str", "bool", "list"]), min_size=1, max_size=4)
    )
    columns: dict[str, pa.Array] = {}
    for i, kind in enumerate(kinds):
        element = {
            "int": st.integers(-3, 3),
            "float": st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf]),
            "str": st.text(alphabet="ab\x00", max_size=3),
            "bool": st.booleans(),
            "list": st.lists(st.integers(0, 2), max_size=2),
        }[kind]
        values = draw(st.lists(st.none() | element, min_size=n, max_size=n))
        arrow_type = {
            "int": pa.int64(),
            "float": pa.float64(),
            "str": pa.string(),
            "bool": pa.bool_(),
            "list": pa.list_(pa.int64()),
        }[kind]
        columns[f"c{i}"] = pa.array(values, arrow_type, from_pandas=False)
    return pa.table(columns) if columns else pa.table({})


@settings(max_examples=150, deadline=None)
@given(table=tables(), seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 5))
def test_shuffled_and_rechunked_copies_hash_equal(table: pa.Table, seed: int, chunk: int) -> None:
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    shuffled = table.take(pa.array(order, pa.int64()))
    rechunked = pa.Table.from_batches(shuffled.to_batches(max_chunksize=chunk), schema=table.schema)
    assert data_sha(rechunked) == data_sha(table)
    same_order = pa.Table.from_batches(table.to_batches(max_chunksize=chunk), schema=table.schema)
    assert data_sha(same_order, ordered=True) == data_sha(table, ordered=True)
    assert data_sha(parquet_round_trip(shuffled, row_group_size=chunk)) == data_sha(table)


@settings(max_examples=150, deadline=None)
@given(table=tables(), seed=st.integers(0, 2**32 - 1))
def test_different_multisets_hash_differently(table: pa.Table, seed: int) -> None:
    rng = random.Random(seed)
    other = (
        table.take(
            pa.array([rng.randrange(table.num_rows) for _ in range(table.num_rows)], pa.int64())
        )
        if table.num_rows
        else table
    )
    same = sorted(map(repr, table.to_pylist())) == sorted(map(repr, other.to_pylist()))
    assert (data_sha(table) == data_sha(other)) == same


def colliding_row_keys(words: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """A row key that ties nearly everything: the parity of the first word, as its top bit (the
    low bits of a key make way for the row number)."""
    return np.asarray(words[0][start:stop] & 1, dtype=np.uint64) << np.uint64(63)


@settings(max_examples=100, deadline=None)
@given(table=tables(), seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 5))
def test_rows_with_colliding_keys_are_ordered_by_content(
    table: pa.Table, seed: int, chunk: int
) -> None:
    """The unordered SHA sorts rows by a 64-bit key, then rows of equal keys by content: a key
    that collides for nearly every row must still give one SHA per multiset of rows."""
    rng = random.Random(seed)
    order = list(range(table.num_rows))
    rng.shuffle(order)
    shuffled = table.take(pa.array(order, pa.int64()))
    rechunked = pa.Table.from_batches(shuffled.to_batches(max_chunksize=chunk), schema=table.schema)
    other = (
        table.take(
            pa.array([rng.randrange(table.num_rows) for _ in range(table.num_rows)], pa.int64())
        )
        if table.num_rows
        else table
    )
    same = sorted(map(repr, table.to_pylist())) == sorted(map(repr, other.to_pylist()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_rules, "_row_key", colliding_row_keys)
        assert data_sha(rechunked) == data_sha(table)
        assert (data_sha(table) == data_sha(other)) == same


def test_key_ties_between_different_rows_are_broken_the_same_way() -> None:
    rows = pa.table({"a": [3, 1, 2, 1, 3, 2], "s": ["x", "y", "x", "y", "z", "x"]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            data_rules, "_row_key", lambda words, start, stop: np.zeros(stop - start, np.uint64)
        )
        all_tied = {
            data_sha(rows.take(order)) for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0])
        }
        assert len(all_tied) == 1
        assert data_sha(rows.slice(1)) not in all_tied


def test_a_large_table_hashes_the_same_on_every_core() -> None:
    """Buffers of `_THREADED_BYTES` and more are hashed on BLAKE3's threads: the same digests,
    so the same SHA, whatever the order, the chunking and the threshold."""
    n = 300_000
    rng = np.random.default_rng(5)
    table = pa.table(
        {
            "i": pa.array(rng.integers(-(2**40), 2**40, n)),
            "x": pa.array(rng.random(n)),
            "s": pa.array([f"v{k % 997}" for k in range(n)]),
            "n": pa.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n))),
        }
    )
    assert table.column("x").nbytes > data_rules._THREADED_BYTES
    shuffled = pa.Table.from_batches(
        table.take(rng.permutation(n)).to_batches(max_chunksize=30_000)
    )
    shas = (data_sha(table), data_sha(table, ordered=True))
    assert data_sha(shuffled) == shas[0]
    for threshold in (1, 1 << 62):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(data_rules, "_THREADED_BYTES", threshold)
            assert (data_sha(table), data_sha(table, ordered=True)) == shas


@pytest.mark.parametrize(
    "values",
    [
        [1, 2],
        [2, 3],
        [0, 255],
        [0, 256],
        [-1, 0],
        [-(2**63), 2**63 - 1],
        [-(2**63), -(2**63) + 1],
        [2**62, 2**62 + 65_535],
    ],
    ids=str,
)
def test_integers_hash_as_offsets_from_their_minimum_exactly(values: list[int]) -> None:
    """The unordered form stores integers as offsets from the minimum: the minimum counts, every
    width is exact, and a null (a zero there) still differs from a zero."""
    column = pa.array(values, pa.int64())
    sha = data_sha(pa.table({"i": column}))
    assert sha == data_sha(pa.table({"i": column.take([1, 0])}))
    shifted = [v + 1 if v < 2**63 - 1 else v - 1 for v in values]
    assert sha != data_sha(pa.table({"i": pa.array(shifted, pa.int64())}))
    assert sha != data_sha(pa.table({"i": pa.array([values[0], None], pa.int64())}))
    as_uint = pa.array([v % 2**64 for v in values], pa.uint64())
    assert data_sha(pa.table({"u": as_uint})) == data_sha(pa.table({"u": as_uint.take([1, 0])}))
    with_null = pa.table({"i": pa.array([*values, None], pa.int64())})
    assert data_sha(with_null) != data_sha(pa.table({"i": pa.array([*values, 0], pa.int64())}))


def test_floats_differing_only_in_exponent_bits_keep_rows_apart() -> None:
    """Powers of two differ only in their high bits: rows must still be told apart and
    ordered canonically (the row key folds the high half in)."""
    xs = [2.0**k for k in range(-40, 40)]
    table = pa.table({"x": xs, "y": xs[::-1]})
    swapped = pa.table({"x": xs[::-1], "y": xs})
    assert data_sha(table) == data_sha(table.take(list(range(len(xs)))[::-1]))
    assert data_sha(table) != data_sha(pa.table({"x": xs, "y": xs}))
    assert data_sha(swapped) == data_sha(table.select(["y", "x"]).rename_columns(["x", "y"]))


def test_dictionary_with_a_null_in_its_dictionary_is_its_values() -> None:
    encoded = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int8()), pa.array(["x", None]))
    assert encoded.null_count == 0  # the null is in the dictionary, not the indices
    plain = pa.table({"s": pa.array(["x", None, "x"])})
    assert data_sha(pa.table({"s": encoded})) == data_sha(plain)
    assert data_sha(pa.table({"s": encoded}), ordered=True) == data_sha(plain, ordered=True)


def test_columns_of_nothing_but_nulls() -> None:
    for arrow_type in (pa.string(), pa.int64(), pa.float64(), pa.list_(pa.int8()), pa.null()):
        column = pa.array([None] * 5, arrow_type)
        table = pa.table({"a": pa.array([3, 1, 2, 1, 0]), "c": column})
        assert data_sha(table) == data_sha(table.take([4, 3, 2, 1, 0])), arrow_type
        assert data_sha(table.slice(1)) == data_sha(rebuilt(table.slice(1))), arrow_type
        assert data_sha(table) != data_sha(table.slice(1)), arrow_type


# ---------------------------------------------------------------------------------------------
# SQL code SHA


def test_sql_formatting_comments_and_keyword_case_do_not_count() -> None:
    base = "SELECT a, SUM(b) AS total FROM t WHERE c = 'x' GROUP BY a"
    variants = [
        "select a, sum(b) as total from t where c = 'x' group by a",
        "SELECT a,\n       SUM(b) AS total -- the total\n  FROM t\n WHERE c = 'x'  /* only x */\n GROUP BY a",
        "  SeLeCt a , Sum( b ) As total FrOm t WhErE c='x' GrOuP bY a ;  ",
    ]
    for variant in variants:
        assert sql_code_sha(variant) == sql_code_sha(base), variant
    assert normalize_sql(base) == base


@pytest.mark.parametrize(
    "changed",
    [
        "SELECT a, SUM(b) AS total FROM t WHERE c = 'y' GROUP BY a",  # literal
        "SELECT a, SUM(b) AS total FROM t WHERE c = 'X' GROUP BY a",  # literal case
        "SELECT a, SUM(d) AS total FROM t WHERE c = 'x' GROUP BY a",  # identifier
        "SELECT A, SUM(b) AS total FROM t WHERE c = 'x' GROUP BY A",  # output column name case
        "SELECT a, SUM(b) AS total FROM u WHERE c = 'x' GROUP BY a",  # table
        "SELECT a, SUM(b) AS total FROM t WHERE c <> 'x' GROUP BY a",  # operator
        "SELECT a, MAX(b) AS total FROM t WHERE c = 'x' GROUP BY a",  # function
    ],
)
def test_sql_semantic_change_counts(changed: str) -> None:
    assert sql_code_sha(changed) != sql_code_sha(
        "SELECT a, SUM(b) AS total FROM t WHERE c = 'x' GROUP BY a"
    )


@pytest.mark.parametrize(
    "bad", ["SELEC 1", "SELECT a FROM", "SELECT (1", "", "-- nothing", "CALL f()"]
)
def test_sql_that_does_not_parse_raises_code_error(bad: str) -> None:
    with pytest.raises(CodeError, match=r"SQL (does not parse|is empty)") as info:
        sql_code_sha(bad)
    assert isinstance(info.value, ValueError)
    assert "\x1b" not in str(info.value)  # readable in JSON and logs: no terminal colours


def test_sql_parse_error_says_where() -> None:
    with pytest.raises(CodeError, match=r"duckdb dialect.*line 1, column 7"):
        normalize_sql("SELEC 1")


# ---------------------------------------------------------------------------------------------
# Python code SHA

MODULE = '''
"""Transforms."""
import math
import pyarrow as pa

RATE = 2
UNUSED = 5


def helper(x):
    """Scale."""
    return x * RATE + math.pi


def other(x):
    return x - 1


def transform(t: pa.Table) -> pa.Table:
    """The transform."""
    return t.append_column("y", [helper(v) for v in t["x"]])
'''


def test_python_comments_docstrings_and_formatting_do_not_count() -> None:
    reformatted = '''
import math
import pyarrow as pa
# a comment
RATE = (2)
UNUSED = 5


def transform(t: pa.Table) -> pa.Table:  # entry point
    return t.append_column(
        "y",
        [helper(v) for v in t["x"]],   # scaled
    )


def helper(x):
    # no docstring now
    return (x * RATE
            + math.pi)


def other(x):
    """Now documented."""
    return x - 1
'''
    assert python_code_sha(reformatted, "transform") == python_code_sha(MODULE, "transform")


def test_python_helper_change_counts() -> None:
    assert python_code_sha(MODULE.replace("x * RATE", "x / RATE"), "transform") != python_code_sha(
        MODULE, "transform"
    )
    assert python_code_sha(MODULE.replace("RATE = 2", "RATE = 3"), "transform") != python_code_sha(
        MODULE, "transform"
    )
    assert python_code_sha(MODULE.replace("import math", "import cmath as math"), "transform") != (
        python_code_sha(MODULE, "transform")
    )
    assert python_code_sha(MODULE, "helper") != python_code_sha(MODULE, "transform")


def test_python_unrelated_change_does_not_count() -> None:
    unrelated = MODULE.replace("return x - 1", "return x - 2").replace("UNUSED = 5", "UNUSED = 6")
    unrelated += "\n\ndef extra():\n    return RATE\n"
    assert python_code_sha(unrelated, "transform") == python_code_sha(MODULE, "transform")
    assert "other" not in normalize_python(MODULE, "transform")


def test_python_missing_function_or_bad_source_raises() -> None:
    with pytest.raises(CodeError, match="'missing'"):
        python_code_sha(MODULE, "missing")
    with pytest.raises(CodeError, match="'RATE'"):
        python_code_sha(MODULE, "RATE")
    with pytest.raises(CodeError, match="does not parse"):
        python_code_sha("def transform(:\n", "transform")


def test_python_decorators_and_classes_count() -> None:
    source = (
        "import functools\n\nclass K:\n    n = 1\n\n@functools.cache\ndef f():\n    return K.n\n"
    )
    assert python_code_sha(source.replace("n = 1", "n = 2"), "f") != python_code_sha(source, "f")
    assert python_code_sha(source.replace("@functools.cache\n", ""), "f") != python_code_sha(
        source, "f"
    )


# ---------------------------------------------------------------------------------------------
# code SHA and fingerprint

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64


def make_code_sha(**overrides: object) -> str:
    args: dict[str, object] = {
        "kind": "sql",
        "normalized_code": "SELECT 1",
        "inputs": [("flights", "identity", "{}"), ("weather", "window", '{"size":7}')],
        "ordered": False,
        "version": None,
        "engine": "duckdb-1",
    }
    args.update(overrides)
    return code_sha(**args)  # type: ignore[arg-type]


def test_code_sha_ignores_input_order_and_sees_every_field() -> None:
    base = make_code_sha()
    assert (
        make_code_sha(inputs=[("weather", "window", '{"size":7}'), ("flights", "identity", "{}")])
        == base
    )
    changed = [
        make_code_sha(kind="python"),
        make_code_sha(normalized_code="SELECT 2"),
        make_code_sha(inputs=[("flights", "identity", "{}")]),
        make_code_sha(inputs=[("flights", "all", "{}"), ("weather", "window", '{"size":7}')]),
        make_code_sha(inputs=[("flights", "identity", "{}"), ("weather", "window", '{"size":8}')]),
        make_code_sha(ordered=True),
        make_code_sha(version=""),
        make_code_sha(version="2"),
        make_code_sha(engine="duckdb-2"),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_fingerprint_ignores_input_order() -> None:
    inputs = [
        ("flights", "2013-01-01", SHA_A),
        ("flights", "2013-01-02", SHA_B),
        ("weather", "x", SHA_C),
    ]
    assert fingerprint(SHA_A, inputs) == fingerprint(SHA_A, list(reversed(inputs)))
    assert fingerprint(SHA_A, iter(inputs)) == fingerprint(SHA_A, inputs)


def test_fingerprint_sees_code_key_and_data_changes() -> None:
    inputs = [("flights", "2013-01-01", SHA_A), ("weather", "x", SHA_B)]
    base = fingerprint(SHA_C, inputs)
    changed = [
        fingerprint(SHA_B, inputs),
        fingerprint(SHA_C, [("flights", "2013-01-01", SHA_C), ("weather", "x", SHA_B)]),
        fingerprint(SHA_C, [("flights", "2013-01-02", SHA_A), ("weather", "x", SHA_B)]),
        fingerprint(SHA_C, [("planes", "2013-01-01", SHA_A), ("weather", "x", SHA_B)]),
        fingerprint(SHA_C, inputs[:1]),
        fingerprint(SHA_C, [*inputs, inputs[0]]),
        fingerprint(SHA_C, []),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_fingerprint_rejects_what_is_not_a_sha() -> None:
    with pytest.raises(ValueError, match="code_sha"):
        fingerprint("not-a-sha", [])
    with pytest.raises(ValueError, match="'flights' partition 'k'"):
        fingerprint(SHA_A, [("flights", "k", "ABC")])


def test_source_fingerprint_is_its_data_sha() -> None:
    sha = data_sha(pa.table({"a": [1]}))
    assert source_fingerprint(sha) == sha


SPEC_WITH_EVERY_MAPPING = """\
pipeline: p
sources:
  sales: {}
  regions: {}
datasets:
  daily:
    sql: SELECT * FROM sales
    inputs: {sales: identity}
  weekly:
    sql: SELECT * FROM daily
    inputs: {daily: {mapping: window, size: 7}}
  monthly:
    sql: SELECT * FROM daily, regions
    inputs: {daily: {mapping: rollup, to: month}, regions: all}
  by_region:
    sql: SELECT * FROM daily
    inputs: {daily: {mapping: rollup, pattern: '^(\\d{4})'}}
"""


def test_code_shas_of_a_spec_are_pinned_for_every_mapping() -> None:
    """The code SHA of a dataset as a spec gives it: its inputs' mappings in their canonical
    form (`Mapping.canonical`) count, so a change there would change every stored code SHA."""
    pipeline = parse_pipeline(PipelineDocument(file="p.yaml", yaml_text=SPEC_WITH_EVERY_MAPPING))
    source = "7b27e0e5054000790844d454d6b4faea043abacaf8adbfab1d161ec955db8cd1"
    assert {name: ds.code_sha for name, ds in pipeline.datasets.items()} == {
        "sales": source,
        "regions": source,
        "daily": "6ced2a590c2b4be6a836b531cc21816da5096de3520d2d1d72e91dd7b0820fb6",
        "weekly": "5bd729a3789f4a53af7f6b437d092588db3dd5b7ca793a15bb85676ad0b1e44d",
        "monthly": "7c6654553afdc96d9e47d3f7d0561176e0266c7e645995369e860c37a66bdb63",
        "by_region": "35eef1a6500202b162784a6bfa52e2f46871ac009f9186442faa116c1ada0204",
    }
