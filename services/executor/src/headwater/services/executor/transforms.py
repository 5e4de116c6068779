"""Running a transform: SQL in DuckDB over Arrow (no file or network access), or a Python
function over `pyarrow.Table`s. Each input dataset is one table (its partitions combined).
It runs inside a worker process (see workers.py), never in the executor's own process."""

import linecache
import traceback
from typing import Any

import duckdb
import pyarrow as pa

from headwater.core.formats import combine
from headwater.runtime.errors import TransformError


def out_of_memory(memory_mb: int | None) -> str:
    """The error of a transform that needed more memory than its limit."""
    return f"ran out of memory (limit {memory_mb} MB)" if memory_mb else "ran out of memory"


def run_transform(
    blob: dict[str, Any], inputs: dict[str, list[pa.Table]], memory_mb: int | None = None
) -> pa.Table:
    """Compute the output table; any failure of the user's code is a TransformError.
    `memory_mb` is the limit the caller put on this process (DuckDB is told it too)."""
    try:
        tables = {name: combine(parts) for name, parts in inputs.items()}
        if blob["kind"] == "sql":
            return _sql(blob["code"], tables, memory_mb)
        if blob["kind"] == "python":
            return _python(blob["code"], blob["function"], tables)
    except TransformError:
        raise
    except (MemoryError, duckdb.OutOfMemoryException) as exc:
        raise TransformError(out_of_memory(memory_mb), traceback.format_exc()) from exc
    except Exception as exc:
        raise TransformError(f"{type(exc).__name__}: {exc}", traceback.format_exc()) from exc
    raise TransformError(f"unknown transform kind {blob['kind']!r}")


def _sql(sql: str, tables: dict[str, pa.Table], memory_mb: int | None) -> pa.Table:
    con = duckdb.connect(":memory:")
    try:
        if memory_mb:  # DuckDB's own buffers stop short of the process limit, with a clear error
            con.execute(f"SET memory_limit = '{max(1, memory_mb // 2)}MB'")
        for name, table in tables.items():
            con.register(name, table)
        # After registering: from here on the SQL can reach no file, URL or extension.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        result: pa.Table = con.sql(sql).to_arrow_table()
        return result
    finally:
        con.close()


def _python(source: str, function: str, tables: dict[str, pa.Table]) -> pa.Table:
    namespace: dict[str, Any] = {"__name__": "headwater_transform"}
    filename = f"<transform {function}>"
    # So that a traceback quotes the user's lines, as it would for an imported module.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    result = namespace[function](**tables)
    if not isinstance(result, pa.Table):
        raise TransformError(f"{function} returned {type(result).__name__}, not a pyarrow.Table")
    return result
