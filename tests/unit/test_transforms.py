"""The executor's transform runner: DuckDB SQL over Arrow with no file or network access,
and Python functions over pyarrow Tables; failures are TransformErrors with a traceback."""

from pathlib import Path

import pyarrow as pa
import pytest

from headwater.contracts import CodeBlob
from headwater.contracts.errors import TransformError
from headwater.services.executor.transforms import Sandbox, run_transform

FLIGHTS = pa.table({"origin": ["EWR", "JFK", "EWR"], "delay": [5, None, 7]})


def sql(code: str) -> CodeBlob:
    return CodeBlob(kind="sql", code=code)


def test_sql_runs_over_the_inputs_by_name() -> None:
    out = run_transform(
        sql("SELECT origin, count(*) AS n FROM flights GROUP BY origin ORDER BY origin"),
        {"flights": [FLIGHTS.slice(0, 2), FLIGHTS.slice(2)]},
    )
    assert out.to_pylist() == [{"origin": "EWR", "n": 2}, {"origin": "JFK", "n": 1}]


@pytest.mark.parametrize(
    "code",
    [
        "SELECT * FROM read_csv('{path}')",
        "SELECT * FROM read_text('{path}')",
        "COPY (SELECT 1) TO '{path}.out'",
        "INSTALL httpfs",
        "SET enable_external_access = true",
    ],
)
def test_sql_cannot_reach_files_urls_or_settings(code: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(TransformError):
        run_transform(sql(code.format(path=secret)), {"flights": [FLIGHTS]})
    assert not (tmp_path / "secret.csv.out").exists()


def test_python_functions_take_tables_by_input_name() -> None:
    source = (
        "import pyarrow.compute as pc\n\n"
        "def late(flights):\n"
        "    return flights.filter(pc.greater(flights['delay'], 6))\n"
    )
    out = run_transform(
        CodeBlob(kind="python", code=source, function="late"), {"flights": [FLIGHTS]}
    )
    assert out.to_pylist() == [{"origin": "EWR", "delay": 7}]


def test_a_raising_transform_is_a_transform_error_with_its_traceback() -> None:
    source = "def boom(flights):\n    raise ValueError('no flights on Sundays')\n"
    with pytest.raises(TransformError) as info:
        run_transform(CodeBlob(kind="python", code=source, function="boom"), {"flights": [FLIGHTS]})
    assert "ValueError: no flights on Sundays" in str(info.value)
    assert "line 2, in boom" in info.value.traceback
    assert "raise ValueError(" in info.value.traceback


def test_a_python_transform_must_return_a_table() -> None:
    source = "def rows(flights):\n    return flights.to_pylist()\n"
    with pytest.raises(TransformError, match=r"not a pyarrow\.Table"):
        run_transform(CodeBlob(kind="python", code=source, function="rows"), {"flights": [FLIGHTS]})


def test_tasks_on_one_database_see_only_their_own_inputs_and_still_no_files(
    tmp_path: Path,
) -> None:
    """A worker keeps one DuckDB database for all its tasks: what one task registered or
    created is gone for the next, and the sandbox holds for every task."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    sandbox = Sandbox()
    try:
        first = run_transform(
            sql("SELECT count(*) AS n FROM flights"), {"flights": [FLIGHTS]}, 100, sandbox
        )
        assert first.to_pylist() == [{"n": 3}]
        for leak in [
            "CREATE TABLE kept AS SELECT 1 AS a",
            "SELECT 1 AS a; CREATE VIEW kept AS SELECT 2",
        ]:
            with pytest.raises(TransformError):
                run_transform(sql(leak), {"flights": [FLIGHTS]}, 100, sandbox)
        for code in [
            "SELECT * FROM flights",  # the first task's input
            "SELECT * FROM kept",  # what a task tried to create
            f"SELECT * FROM read_csv('{secret}')",
            "SET enable_external_access = true",
            "SET memory_limit = '10GB'",
        ]:
            with pytest.raises(TransformError):
                run_transform(sql(code), {"other": [FLIGHTS]}, 100, sandbox)
        again = run_transform(
            sql("SELECT count(*) AS n FROM other"), {"other": [FLIGHTS]}, 100, sandbox
        )
        assert again.to_pylist() == [{"n": 3}]
        assert sandbox.opened == 1  # one database served every task with this memory limit
        run_transform(sql("SELECT 1 AS a"), {}, 200, sandbox)
        assert sandbox.opened == 2  # another limit: a database made for it
    finally:
        sandbox.close()
