"""Running a transform: SQL in DuckDB over Arrow (no file or network access), or a Python
function over `pyarrow.Table`s. Each input dataset is one table (its partitions combined).
It runs inside a worker process (see workers.py), never in the executor's own process."""

import linecache
import traceback
from typing import Any

import duckdb
import pyarrow as pa

from headwater.contracts import CodeBlob
from headwater.contracts.errors import TransformError
from headwater.core.formats import combine

ONE_QUERY = "a transform is one query (SELECT ...) over its inputs"
# PIVOT is a query that DuckDB runs as several statements (MULTI).
_QUERIES = (duckdb.StatementType.SELECT, duckdb.StatementType.MULTI)


def out_of_memory(memory_mb: int | None) -> str:
    """The error of a transform that needed more memory than its limit."""
    return f"ran out of memory (limit {memory_mb} MB)" if memory_mb else "ran out of memory"


class Sandbox:
    """One DuckDB database kept for the life of a worker process, for every SQL transform it
    runs: opening a database costs ~20 ms, a cursor ~1 ms. Its configuration is fixed when it
    is created and locked (no file, URL or extension access; no Python variables scanned by
    name; DuckDB's memory limit), so no task can loosen it. Each task gets its own cursor (a
    connection of its own): its inputs are registered on that cursor only, which no other
    cursor sees, and its one query runs in a transaction that is rolled back, so nothing it
    creates outlives it. A task with another memory limit gets a database of its own."""

    def __init__(self) -> None:
        self._db: duckdb.DuckDBPyConnection | None = None
        self._memory_mb: int | None = None
        self.opened = 0  # databases opened so far (for tests)

    def query(self, sql: str, tables: dict[str, pa.Table], memory_mb: int | None) -> pa.Table:
        """The result of `sql` over `tables` (by name)."""
        # The spec-registry checks this too; here it keeps a shared database unchanged.
        statements = duckdb.extract_statements(sql)
        if len(statements) != 1 or statements[0].type not in _QUERIES:
            raise TransformError(ONE_QUERY)
        cursor = self._database(memory_mb).cursor()
        try:
            cursor.begin()
            for name, table in tables.items():
                cursor.register(name, table)
            result: pa.Table = cursor.sql(sql).to_arrow_table()
            return result
        finally:
            cursor.close()  # rolls back the open transaction and drops what was registered

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _database(self, memory_mb: int | None) -> duckdb.DuckDBPyConnection:
        if self._db is None or memory_mb != self._memory_mb:
            self.close()
            config: dict[str, Any] = {
                "enable_external_access": False,
                "python_enable_replacements": False,
                "lock_configuration": True,
            }
            if (
                memory_mb
            ):  # DuckDB's own buffers stop short of the process limit, with a clear error
                config["memory_limit"] = f"{max(1, memory_mb // 2)}MB"
            self._db = duckdb.connect(":memory:", config=config)
            self._memory_mb = memory_mb
            self.opened += 1
        return self._db


def run_transform(
    blob: CodeBlob,
    inputs: dict[str, list[pa.Table]],
    memory_mb: int | None = None,
    sandbox: Sandbox | None = None,
) -> pa.Table:
    """Compute the output table; any failure of the user's code is a TransformError.
    `memory_mb` is the limit the caller put on this process (DuckDB is told it too); SQL runs
    in `sandbox` (a worker keeps one), else in a database of its own."""
    own = sandbox is None
    sandbox = sandbox or Sandbox()
    try:
        tables = {name: combine(parts) for name, parts in inputs.items()}
        if blob.kind == "sql":
            return sandbox.query(blob.code, tables, memory_mb)
        if blob.function is None:
            raise TransformError("a Python transform names no function")
        return _python(blob.code, blob.function, tables)
    except TransformError:
        raise
    except (MemoryError, duckdb.OutOfMemoryException) as exc:
        raise TransformError(out_of_memory(memory_mb), traceback.format_exc()) from exc
    except Exception as exc:
        raise TransformError(f"{type(exc).__name__}: {exc}", traceback.format_exc()) from exc
    finally:
        if own:
            sandbox.close()


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
