"""Bytes <-> Arrow: the formats upstream files come in, and Parquet at rest."""

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq


class FormatError(ValueError):
    """A file is not the format it claims; permanent."""

    retryable = False


def read_table(data: bytes, fmt: str, name: str) -> pa.Table:
    """Parse one landed file; FormatError says which file and why."""
    try:
        if fmt == "parquet":
            return pq.read_table(io.BytesIO(data))
        if fmt == "csv":
            return pacsv.read_csv(io.BytesIO(data))
        if fmt == "jsonl":
            return pajson.read_json(io.BytesIO(data))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise FormatError(f"{name} is not valid {fmt}: {exc}") from exc
    raise FormatError(f"{name}: unknown format {fmt!r} (parquet, csv, jsonl)")


def combine(tables: list[pa.Table]) -> pa.Table:
    """The union of several files of one partition, with compatible schemas unified."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FormatError(f"files of one partition have incompatible schemas: {exc}") from exc


def to_parquet(table: pa.Table) -> bytes:
    """Headwater's at-rest encoding."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def from_parquet(data: bytes) -> pa.Table:
    """Read a Parquet object written by Headwater."""
    return pq.read_table(io.BytesIO(data))
