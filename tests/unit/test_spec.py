"""The pipeline spec: a YAML file plus the SQL/Python files it names becomes a validated
Pipeline with code SHAs, or a SpecError naming the file, the dataset and the field."""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path

import pytest

from headwater.contracts import CodeBlob
from headwater.core.errors import SpecError
from headwater.core.mappings import Mapping
from headwater.core.spec import (
    Pipeline,
    PipelineDocument,
    parse_pipeline,
)
from headwater.sdk.precheck import check_spec
from headwater.sdk.spec_files import read_document

SPEC_FILE = "pipeline.yaml"

PIPELINE_YAML = """\
pipeline: flights
sources:
  flights: {}
  airports: {ordered: false}
datasets:
  monthly:
    python: transforms.py:monthly
    inputs:
      delays_by_day: {mapping: rollup, to: month}
      airports: all
  weekly:
    sql: |
      SELECT origin, day, avg(delay) AS delay
      FROM delays_by_day
      GROUP BY origin, day
    inputs:
      delays_by_day: {mapping: window, size: 7}
  delays_by_day:
    sql: sql/delays_by_day.sql
    inputs:
      flights: identity
"""

DELAYS_SQL = """\
SELECT origin, day, avg(dep_delay) AS delay
FROM flights
WHERE dep_delay > 15
GROUP BY origin, day
"""

DELAYS_SQL_REFORMATTED = """\
-- average departure delay of late flights, per airport and day
select   origin,
         day,
         AVG(dep_delay) as delay   /* minutes */
from flights
where dep_delay > 15   -- late means more than a quarter of an hour
group by origin, day
"""

DELAYS_SQL_OTHER_LITERAL = DELAYS_SQL.replace("> 15", "> 30")

TRANSFORMS_PY = '''\
"""Monthly rollups of daily delays."""

import pyarrow as pa
import pyarrow.compute as pc

THRESHOLD = 15


def _late(table: pa.Table) -> pa.Table:
    return table.filter(pc.greater(table["delay"], THRESHOLD))


def monthly(delays_by_day: pa.Table, airports: pa.Table) -> pa.Table:
    """Late days per month."""
    return _late(delays_by_day)
'''

TRANSFORMS_PY_REFORMATTED = '''\
"""A different module docstring."""
import pyarrow as pa
import pyarrow.compute as pc

THRESHOLD = 15  # minutes


def _late(table: pa.Table) -> pa.Table:
    # keep the late days only
    return table.filter(
        pc.greater(table["delay"], THRESHOLD)
    )


def monthly(delays_by_day: pa.Table, airports: pa.Table) -> pa.Table:
    """A reworded docstring."""
    return _late(
        delays_by_day
    )


def unrelated_helper() -> int:
    return 42
'''


def write(root: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    """Write a spec and its files under `root`; return the spec's path."""
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    spec = root / SPEC_FILE
    spec.write_text(yaml_text)
    return spec


def load(root: Path, yaml_text: str, files: dict[str, str] | None = None) -> Pipeline:
    return parse_pipeline(read_document(write(root, yaml_text, files)))


def good_files(**overrides: str) -> dict[str, str]:
    files = {"sql/delays_by_day.sql": DELAYS_SQL, "transforms.py": TRANSFORMS_PY}
    files.update(overrides)
    return files


def shas(pipeline: Pipeline) -> dict[str, str]:
    return {name: ds.code_sha for name, ds in pipeline.datasets.items()}


def spec_error(root: Path, yaml_text: str, files: dict[str, str] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        load(root, yaml_text, files)
    return info.value


def assert_names(err: SpecError, *, dataset: str | None, field: str | None) -> None:
    """The error names the file, the dataset and the field, as attributes and in its message."""
    assert err.file == SPEC_FILE
    assert err.dataset == dataset
    assert err.field == field
    message = str(err)
    assert message.startswith(SPEC_FILE)
    if dataset is not None:
        assert repr(dataset) in message
    if field is not None:
        assert field in message
    assert err.reason
    assert err.reason in message
    assert err.retryable is False


def one_dataset(body: str, *, sources: str = "flights: {}\n  airports: {}") -> str:
    """A pipeline whose only derived dataset `d` has `body` (YAML lines at 4 spaces)."""
    return (
        "pipeline: p\nsources:\n  "
        + sources
        + "\ndatasets:\n  d:\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
    )


# --------------------------------------------------------------------------------------------
# a valid pipeline


def test_valid_pipeline_parses_with_datasets_in_dependency_order(tmp_path: Path) -> None:
    pipeline = load(tmp_path, PIPELINE_YAML, good_files())
    assert pipeline.name == "flights"
    names = list(pipeline.datasets)
    assert set(names) == {"flights", "airports", "delays_by_day", "weekly", "monthly"}
    for ds in pipeline.datasets.values():
        for input_name in ds.inputs:
            assert names.index(input_name) < names.index(ds.name), (input_name, ds.name)


def test_valid_pipeline_records_kinds_code_and_inputs(tmp_path: Path) -> None:
    ds = load(tmp_path, PIPELINE_YAML, good_files()).datasets
    assert ds["flights"].kind == "source"
    assert ds["delays_by_day"].kind == "sql"
    assert ds["delays_by_day"].code == DELAYS_SQL
    assert ds["delays_by_day"].code_file == "sql/delays_by_day.sql"
    assert ds["weekly"].kind == "sql"
    assert ds["weekly"].code_file is None
    assert "FROM delays_by_day" in ds["weekly"].code
    assert ds["monthly"].kind == "python"
    assert ds["monthly"].function == "monthly"
    assert ds["monthly"].code == TRANSFORMS_PY
    assert ds["monthly"].code_blob() == CodeBlob(
        kind="python", code=TRANSFORMS_PY, function="monthly"
    )
    assert ds["delays_by_day"].inputs == {"flights": Mapping(mapping="identity")}
    assert ds["weekly"].inputs == {"delays_by_day": Mapping(mapping="window", size=7)}
    assert ds["monthly"].inputs == {
        "delays_by_day": Mapping(mapping="rollup", to="month"),
        "airports": Mapping(mapping="all"),
    }
    code_shas = shas(load(tmp_path, PIPELINE_YAML, good_files()))
    for sha in code_shas.values():
        assert len(sha) == 64
        assert set(sha) <= set("0123456789abcdef")
    derived = [code_shas[n] for n in ("delays_by_day", "weekly", "monthly")]
    assert len(set(derived)) == 3


def test_definition_carries_the_mapping_to_the_scheduler(tmp_path: Path) -> None:
    """What the scheduler is told maps keys exactly as the spec says."""
    pipeline = load(tmp_path, PIPELINE_YAML, good_files())
    keys = ["2013-01-30", "2013-01-31", "2013-02-01", "2014-12-31", "not-a-day"]
    for ds in pipeline.datasets.values():
        definition = ds.definition()
        assert definition.name == ds.name
        assert definition.code_sha == ds.code_sha
        assert definition.kind == ds.kind
        assert [i.dataset for i in definition.inputs] == sorted(ds.inputs)
        for inp in definition.inputs:
            spec_mapping = ds.inputs[inp.dataset]
            carried = Mapping.of(inp)
            assert carried == spec_mapping  # a period rollup is read back as the period
            for key in keys:
                assert carried.output_key(key) == spec_mapping.output_key(key)
                assert carried.inputs_for(key, keys) == spec_mapping.inputs_for(key, keys)


def test_sql_formatting_and_comments_do_not_change_code_shas(tmp_path: Path) -> None:
    before = shas(load(tmp_path / "a", PIPELINE_YAML, good_files()))
    after = shas(
        load(
            tmp_path / "b",
            PIPELINE_YAML,
            good_files(**{"sql/delays_by_day.sql": DELAYS_SQL_REFORMATTED}),
        )
    )
    assert after == before


def test_python_formatting_comments_and_docstrings_do_not_change_code_shas(
    tmp_path: Path,
) -> None:
    before = shas(load(tmp_path / "a", PIPELINE_YAML, good_files()))
    after = shas(
        load(
            tmp_path / "b",
            PIPELINE_YAML,
            good_files(**{"transforms.py": TRANSFORMS_PY_REFORMATTED}),
        )
    )
    assert after == before


def test_a_literal_change_changes_only_that_datasets_code_sha(tmp_path: Path) -> None:
    before = shas(load(tmp_path / "a", PIPELINE_YAML, good_files()))
    after = shas(
        load(
            tmp_path / "b",
            PIPELINE_YAML,
            good_files(**{"sql/delays_by_day.sql": DELAYS_SQL_OTHER_LITERAL}),
        )
    )
    assert after["delays_by_day"] != before["delays_by_day"]
    # A code SHA is the dataset's own code; what reads it reacts to its data, not its code.
    assert {k: v for k, v in after.items() if k != "delays_by_day"} == {
        k: v for k, v in before.items() if k != "delays_by_day"
    }


def test_a_helper_constant_change_changes_the_python_code_sha(tmp_path: Path) -> None:
    before = shas(load(tmp_path / "a", PIPELINE_YAML, good_files()))
    changed = TRANSFORMS_PY.replace("THRESHOLD = 15", "THRESHOLD = 30")
    after = shas(load(tmp_path / "b", PIPELINE_YAML, good_files(**{"transforms.py": changed})))
    assert after["monthly"] != before["monthly"]
    assert after["delays_by_day"] == before["delays_by_day"]


def test_mapping_version_and_ordered_change_the_code_sha(tmp_path: Path) -> None:
    base = shas(load(tmp_path / "a", PIPELINE_YAML, good_files()))["weekly"]
    variants = {
        "size": PIPELINE_YAML.replace("size: 7", "size: 3"),
        "version": PIPELINE_YAML.replace("  weekly:\n", "  weekly:\n    version: 2\n"),
        "ordered": PIPELINE_YAML.replace("  weekly:\n", "  weekly:\n    ordered: true\n"),
    }
    seen = {base}
    for label, yaml_text in variants.items():
        sha = shas(load(tmp_path / label, yaml_text, good_files()))["weekly"]
        assert sha not in seen, label
        seen.add(sha)


def test_input_order_in_yaml_does_not_change_the_code_sha(tmp_path: Path) -> None:
    swapped = PIPELINE_YAML.replace(
        "      delays_by_day: {mapping: rollup, to: month}\n      airports: all\n",
        "      airports: all\n      delays_by_day: {mapping: rollup, to: month}\n",
    )
    assert swapped != PIPELINE_YAML
    assert shas(load(tmp_path / "a", PIPELINE_YAML, good_files())) == shas(
        load(tmp_path / "b", swapped, good_files())
    )


def test_inline_sql_with_a_cte_is_accepted(tmp_path: Path) -> None:
    yaml_text = one_dataset(
        """\
        sql: |
          WITH late AS (SELECT * FROM flights WHERE dep_delay > 15)
          SELECT late.origin, count(*) AS n FROM late JOIN airports USING (origin)
          GROUP BY late.origin
        inputs: {flights: identity, airports: all}
        """
    )
    ds = load(tmp_path, yaml_text).datasets["d"]
    assert ds.kind == "sql"
    assert set(ds.inputs) == {"flights", "airports"}


def test_inline_multiline_sql_ending_in_a_comment_naming_a_sql_file_is_inline(
    tmp_path: Path,
) -> None:
    # read_document and parse_pipeline must agree on what is inline SQL and what a file name.
    yaml_text = one_dataset(
        """\
        sql: |
          SELECT * FROM flights
          -- moved here from old_delays.sql
        inputs: {flights: identity}
        """
    )
    assert load(tmp_path, yaml_text).datasets["d"].kind == "sql"


def test_numeric_dataset_names_are_names_not_a_crash(tmp_path: Path) -> None:
    # `2024` is a valid dataset name (DESIGN.md §4); unquoted in YAML it is an int, which
    # must not matter (today it escapes as a pydantic ValidationError, not even a SpecError).
    yaml_text = (
        "pipeline: p\nsources:\n  2024: {}\ndatasets:\n  d:\n"
        '    sql: SELECT * FROM "2024"\n    inputs: {2024: identity}\n'
    )
    pipeline = load(tmp_path, yaml_text)
    assert list(pipeline.datasets) == ["2024", "d"]
    assert list(pipeline.datasets["d"].inputs) == ["2024"]


# --------------------------------------------------------------------------------------------
# rejections: each names the file, the dataset and the field


def test_cycle_is_rejected_with_its_path(tmp_path: Path) -> None:
    yaml_text = """\
pipeline: p
datasets:
  a:
    sql: SELECT * FROM b
    inputs: {b: identity}
  b:
    sql: SELECT * FROM a
    inputs: {a: identity}
"""
    err = spec_error(tmp_path, yaml_text)
    assert err.field == "inputs"
    assert err.dataset in ("a", "b")
    assert "cycle" in err.reason
    assert "a -> b -> a" in err.reason or "b -> a -> b" in err.reason
    assert_names(err, dataset=err.dataset, field="inputs")


def test_self_cycle_is_rejected(tmp_path: Path) -> None:
    yaml_text = (
        "pipeline: p\ndatasets:\n  a:\n    sql: SELECT * FROM a\n    inputs: {a: identity}\n"
    )
    err = spec_error(tmp_path, yaml_text)
    assert_names(err, dataset="a", field="inputs")
    assert "a -> a" in err.reason


def test_unknown_input_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset("sql: SELECT * FROM nope\ninputs: {flights: identity, nope: identity}"),
    )
    assert_names(err, dataset="d", field="inputs.nope")
    assert "'nope'" in err.reason


def test_sql_that_does_not_parse_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path, one_dataset("sql: SELECT * FROM flights WHERE (\ninputs: {flights: identity}")
    )
    assert_names(err, dataset="d", field="sql")
    assert "does not parse" in err.reason


def test_sql_file_that_does_not_parse_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset("sql: bad.sql\ninputs: {flights: identity}"),
        {"bad.sql": "SELEC origin FROM flights GROUP"},
    )
    assert_names(err, dataset="d", field="sql")
    assert "does not parse" in err.reason


def test_sql_reading_a_table_not_among_its_inputs_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset(
            "sql: SELECT * FROM flights JOIN airports USING (origin)\ninputs: {flights: identity}"
        ),
    )
    assert_names(err, dataset="d", field="sql")
    assert "'airports'" in err.reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_parquet('/data/other/x.parquet')",
        "SELECT * FROM read_csv_auto('secrets.csv')",
        "SELECT * FROM flights JOIN read_json('extra.json') USING (origin)",
    ],
)
def test_sql_reading_files_instead_of_its_inputs_is_rejected(tmp_path: Path, sql: str) -> None:
    # A table function reads something that is not one of the dataset's inputs: the spec
    # must say so at plan time, not the executor at run time.
    err = spec_error(tmp_path, one_dataset(f'sql: "{sql}"\ninputs: {{flights: identity}}'))
    assert_names(err, dataset="d", field="sql")


def test_sql_reading_a_table_not_among_inputs_in_a_second_statement_is_rejected(
    tmp_path: Path,
) -> None:
    err = spec_error(
        tmp_path,
        one_dataset(
            "sql: SELECT 1 FROM flights; SELECT * FROM airports\ninputs: {flights: identity}"
        ),
    )
    assert_names(err, dataset="d", field="sql")
    assert "has 2 statements" in err.reason


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("COPY (SELECT * FROM flights) TO 'out.csv'", "COPY is not allowed"),
        ("COPY flights FROM 'in.csv'", "COPY is not allowed"),
        ("ATTACH 'other.db' AS other", "ATTACH is not allowed"),
        ("SET threads = 1", "SET is not allowed"),
        ("PRAGMA enable_external_access", "PRAGMA is not allowed"),
        ("INSTALL httpfs", "INSTALL is not allowed"),
        ("LOAD httpfs", "LOAD is not allowed"),
        ("EXPORT DATABASE 'dump'", "EXPORT is not allowed"),
        ("IMPORT DATABASE 'dump'", "IMPORT is not allowed"),
        ("CREATE TABLE t AS SELECT * FROM flights", "CREATE is not allowed"),
        ("WITH f AS (SELECT * FROM flights) INSERT INTO t SELECT * FROM f", "INSERT is not"),
        ("SET threads = 1; SELECT * FROM flights", "has 2 statements (SET, SELECT)"),
        ("SELECT * FROM flights; SELECT * FROM flights", "has 2 statements (SELECT, SELECT)"),
        ("WITH flights AS (SELECT 1 AS origin) SELECT * FROM flights", "WITH flights shadows"),
        ("WITH x AS (WITH FLIGHTS AS (SELECT 1) SELECT 1) SELECT * FROM flights", "FLIGHTS"),
    ],
)
def test_sql_that_is_not_one_query_over_its_inputs_is_rejected_naming_the_statement(
    tmp_path: Path, sql: str, named: str
) -> None:
    # DuckDB would refuse each of these only when the transform runs (locked configuration,
    # no external access), or run something that is not the dataset's query: say it at apply.
    err = spec_error(tmp_path, one_dataset(f'sql: "{sql}"\ninputs: {{flights: identity}}'))
    assert_names(err, dataset="d", field="sql")
    assert named in err.reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM flights;",
        "FROM flights",
        "(SELECT * FROM flights) UNION ALL (SELECT * FROM flights)",
        "WITH f AS (SELECT * FROM flights) SELECT * FROM f",
        "SELECT 'a; SET threads = 1' AS s FROM flights",
    ],
)
def test_one_query_over_its_inputs_is_accepted(tmp_path: Path, sql: str) -> None:
    pipeline = load(tmp_path, one_dataset(f'sql: "{sql}"\ninputs: {{flights: identity}}'))
    assert pipeline.datasets["d"].kind == "sql"


PY_REF = "python: t.py:fn\ninputs: {flights: identity}"


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("def fn(flights):\n    return flights\nraise RuntimeError('boom at import')\n", "boom"),
        (
            "import headwater_no_such_module\ndef fn(flights):\n    return flights\n",
            "headwater_no_such_module",
        ),
        ("def fn(flights):\n    return flights\nX = 1 / 0\n", "ZeroDivisionError"),
    ],
)
def test_python_that_raises_at_import_is_rejected_by_the_local_check(
    tmp_path: Path, source: str, named: str
) -> None:
    # The CLI imports the module in the user's own process before sending the spec.
    with pytest.raises(SpecError) as info:
        check_spec(write(tmp_path, one_dataset(PY_REF), {"t.py": source}))
    assert_names(info.value, dataset="d", field="python")
    assert "does not import" in info.value.reason
    assert named in info.value.reason


def test_python_that_exits_at_import_is_a_spec_error_not_an_exit(tmp_path: Path) -> None:
    source = "import sys\ndef fn(flights):\n    return flights\nsys.exit(3)\n"
    with pytest.raises(SpecError) as info:
        check_spec(write(tmp_path, one_dataset(PY_REF), {"t.py": source}))
    assert_names(info.value, dataset="d", field="python")


@pytest.mark.parametrize(
    "statement",
    [
        "raise KeyboardInterrupt",
        "import sys; sys.exit(3)",
        "import os; open(os.environ['HW_TEST_MARKER'], 'w').write('ran')",
        "import asyncio; raise asyncio.CancelledError",
    ],
)
def test_parsing_a_spec_runs_none_of_its_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, statement: str
) -> None:
    # What spec-registry does: the module is read as an AST, so its module-level statements
    # neither run nor count in the code SHA (fn does not reach them).
    marker = tmp_path / "ran"
    monkeypatch.setenv("HW_TEST_MARKER", str(marker))
    fn = "def fn(flights):\n    return flights\n"
    hostile = load(tmp_path / "a", one_dataset(PY_REF), {"t.py": fn + statement + "\n"})
    clean = load(tmp_path / "b", one_dataset(PY_REF), {"t.py": fn})
    assert not marker.exists()
    assert hostile.datasets["d"].code_sha == clean.datasets["d"].code_sha


def test_python_with_a_syntax_error_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, one_dataset(PY_REF), {"t.py": "def fn(flights:\n    return 1\n"})
    assert_names(err, dataset="d", field="python")
    assert "parse" in err.reason


@pytest.mark.parametrize(
    "source",
    [
        "def other(flights):\n    return flights\n",
        "fn = 3\n",
        "class Holder:\n    def fn(self, flights):\n        return flights\n",
    ],
)
def test_missing_function_is_rejected(tmp_path: Path, source: str) -> None:
    err = spec_error(tmp_path, one_dataset(PY_REF), {"t.py": source})
    assert_names(err, dataset="d", field="python")
    assert "'fn'" in err.reason


@pytest.mark.parametrize("ref", ["t.py", "t.py:fn:extra", "42"])
def test_python_reference_must_be_file_colon_function(tmp_path: Path, ref: str) -> None:
    err = spec_error(
        tmp_path,
        one_dataset(f"python: '{ref}'\ninputs: {{flights: identity}}"),
        {"t.py": "def fn(flights):\n    return flights\n"},
    )
    assert_names(err, dataset="d", field="python")


def test_empty_python_file_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, one_dataset(PY_REF), {"t.py": ""})
    assert_names(err, dataset="d", field="python")
    assert "'t.py'" in err.reason


def test_both_sql_and_python_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset("sql: SELECT * FROM flights\n" + PY_REF),
        {"t.py": "def fn(flights):\n    return flights\n"},
    )
    assert_names(err, dataset="d", field=None)
    assert "sql" in err.reason
    assert "python" in err.reason


def test_neither_sql_nor_python_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, one_dataset("inputs: {flights: identity}"))
    assert_names(err, dataset="d", field=None)
    assert "sql" in err.reason
    assert "python" in err.reason


def test_unknown_dataset_field_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset("sql: SELECT * FROM flights\ninputs: {flights: identity}\ndescripton: x"),
    )
    assert_names(err, dataset="d", field="descripton")
    assert "unknown field" in err.reason


def test_unknown_source_field_is_rejected(tmp_path: Path) -> None:
    yaml_text = "pipeline: p\nsources:\n  flights: {format: csv}\n"
    err = spec_error(tmp_path, yaml_text)
    assert_names(err, dataset="flights", field="format")


def test_unknown_top_level_field_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, "pipeline: p\nsources: {flights: {}}\nschedule: daily\n")
    assert_names(err, dataset=None, field="schedule")


def test_missing_pipeline_name_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, "sources: {flights: {}}\n")
    assert_names(err, dataset=None, field="pipeline")


def test_dataset_without_inputs_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, one_dataset("sql: SELECT 1"))
    assert_names(err, dataset="d", field="inputs")


def test_non_boolean_ordered_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, "pipeline: p\nsources:\n  flights: {ordered: 'maybe'}\n")
    assert_names(err, dataset="flights", field="ordered")


def test_name_declared_as_source_and_dataset_is_rejected(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset(
            "sql: SELECT * FROM flights\ninputs: {flights: identity}",
            sources="d: {}\n  flights: {}",
        ),
    )
    assert_names(err, dataset="d", field=None)
    assert "source" in err.reason


@pytest.mark.parametrize(
    ("mapping", "field", "named"),
    [
        ("{mapping: window}", "inputs.flights", "size"),
        ("{mapping: window, size: 0}", "inputs.flights", "size"),
        ("{mapping: rollup}", "inputs.flights", "to"),
        ("{mapping: rollup, to: month, pattern: '^(x)'}", "inputs.flights", "exactly one"),
        ("{mapping: rollup, pattern: '(['}", "inputs.flights.pattern", "does not compile"),
        ("{mapping: rollup, pattern: '^x'}", "inputs.flights.pattern", "capture group"),
        ("{mapping: rollup, to: week}", "inputs.flights.to", "month"),
        ("{mapping: window, sise: 7}", "inputs.flights.sise", "not permitted"),
        ("{mapping: window, size: many}", "inputs.flights.size", "integer"),
        ("[identity]", "inputs.flights", "mapping"),
    ],
)
def test_bad_mapping_is_rejected(tmp_path: Path, mapping: str, field: str, named: str) -> None:
    err = spec_error(
        tmp_path, one_dataset(f"sql: SELECT * FROM flights\ninputs: {{flights: {mapping}}}")
    )
    assert_names(err, dataset="d", field=field)
    assert named in err.reason


def test_unknown_mapping_name_names_the_mapping_field(tmp_path: Path) -> None:
    # The user wrote `mapping:` (or the short form); the error must not call it `kind`.
    for mapping in ("windw", "{mapping: windw, size: 3}"):
        err = spec_error(
            tmp_path, one_dataset(f"sql: SELECT * FROM flights\ninputs: {{flights: {mapping}}}")
        )
        assert err.dataset == "d"
        assert err.field == "inputs.flights.mapping"
        assert "identity" in err.reason


def test_mapping_written_with_kind_is_a_spec_error(tmp_path: Path) -> None:
    err = spec_error(
        tmp_path,
        one_dataset("sql: SELECT * FROM flights\ninputs: {flights: {kind: window, size: 3}}"),
    )
    assert err.dataset == "d"
    assert err.field is not None
    assert err.field.startswith("inputs.flights")


@pytest.mark.parametrize(
    "mapping",
    [
        "{mapping: identity, size: 7}",
        "{mapping: all, pattern: '^(x)'}",
        "{mapping: window, size: 3, to: month}",
    ],
)
def test_parameters_that_do_not_belong_to_the_mapping_are_rejected(
    tmp_path: Path, mapping: str
) -> None:
    # `{mapping: identity, size: 7}` is almost certainly a mistaken window: refusing it beats
    # silently running an identity (with a code SHA that the ignored size still changes).
    err = spec_error(
        tmp_path, one_dataset(f"sql: SELECT * FROM flights\ninputs: {{flights: {mapping}}}")
    )
    assert err.dataset == "d"
    assert err.field is not None
    assert err.field.startswith("inputs.flights")


@pytest.mark.parametrize("name", ["bad.name", "a b", "x" * 65, "caf\u00e9"])
def test_invalid_derived_dataset_name_is_rejected(tmp_path: Path, name: str) -> None:
    yaml_text = (
        f"pipeline: p\nsources: {{flights: {{}}}}\ndatasets:\n  '{name}':\n"
        "    sql: SELECT * FROM flights\n    inputs: {flights: identity}\n"
    )
    err = spec_error(tmp_path, yaml_text)
    assert_names(err, dataset=name, field=None)
    assert "dataset name" in err.reason


def test_invalid_source_name_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, "pipeline: p\nsources:\n  'fl*ghts': {}\n")
    assert_names(err, dataset="fl*ghts", field=None)


@pytest.mark.parametrize("yaml_text", ["- a\n- b\n", "just text\n", "42\n", ""])
def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path, yaml_text: str) -> None:
    err = spec_error(tmp_path, yaml_text)
    assert_names(err, dataset=None, field=None)
    assert "mapping" in err.reason


def test_invalid_yaml_is_rejected(tmp_path: Path) -> None:
    err = spec_error(tmp_path, "pipeline: p\nsources: [flights\n")
    assert_names(err, dataset=None, field=None)
    assert "not valid YAML" in err.reason


@pytest.mark.parametrize(
    ("field", "yaml_datasets"), [("sources", "sources: [flights]"), ("datasets", "datasets: [d]")]
)
def test_sources_and_datasets_must_be_mappings(
    tmp_path: Path, field: str, yaml_datasets: str
) -> None:
    doc = PipelineDocument(file=SPEC_FILE, yaml_text=f"pipeline: p\n{yaml_datasets}\n")
    with pytest.raises(SpecError) as info:
        parse_pipeline(doc)
    assert_names(info.value, dataset=None, field=field)


def test_read_document_rejects_datasets_that_are_not_a_mapping(tmp_path: Path) -> None:
    # read_document runs first (CLI, apply): it must refuse with a SpecError too, not crash.
    spec = write(tmp_path, "pipeline: p\nsources: {flights: {}}\ndatasets: [d]\n")
    with pytest.raises(SpecError) as info:
        read_document(spec)
    assert info.value.file == SPEC_FILE
    assert info.value.field == "datasets"


def test_read_document_rejects_a_missing_sql_file(tmp_path: Path) -> None:
    spec = write(tmp_path, one_dataset("sql: sql/missing.sql\ninputs: {flights: identity}"))
    with pytest.raises(SpecError) as info:
        read_document(spec)
    assert_names(info.value, dataset="d", field="sql")
    assert "'sql/missing.sql'" in info.value.reason


def test_read_document_rejects_a_missing_python_file(tmp_path: Path) -> None:
    spec = write(tmp_path, one_dataset(PY_REF))
    with pytest.raises(SpecError) as info:
        read_document(spec)
    assert_names(info.value, dataset="d", field="python")
    assert "'t.py'" in info.value.reason


def test_read_document_rejects_a_missing_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        read_document(path)
    assert info.value.file == str(path)
    assert "cannot read" in info.value.reason


def test_read_document_rejects_a_spec_that_is_not_utf8(tmp_path: Path) -> None:
    spec = tmp_path / SPEC_FILE
    spec.write_bytes(b"pipeline: p\nsources:\n  caf\xe9: {}\n")
    with pytest.raises(SpecError) as info:
        read_document(spec)
    assert info.value.file == str(spec)
    assert "not UTF-8" in info.value.reason
    assert "byte 0xe9 at line 3" in info.value.reason


@pytest.mark.parametrize(
    ("body", "name", "field"),
    [
        ("sql: q.sql\ninputs: {flights: identity}", "q.sql", "sql"),
        ("python: t.py:fn\ninputs: {flights: identity}", "t.py", "python"),
    ],
)
def test_read_document_rejects_a_code_file_that_is_not_utf8(
    tmp_path: Path, body: str, name: str, field: str
) -> None:
    spec = write(tmp_path, one_dataset(body))
    (tmp_path / name).write_bytes(b"-- \xff\xfe latin-1 comment\nSELECT 1\n")
    with pytest.raises(SpecError) as info:
        read_document(spec)
    assert_names(info.value, dataset="d", field=field)
    assert f"cannot read {name!r}: it is not UTF-8 text (byte 0xff at line 1" in info.value.reason


def test_read_document_reads_the_files_the_spec_names(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, PIPELINE_YAML, good_files()))
    assert doc.file == SPEC_FILE
    assert doc.files == {"sql/delays_by_day.sql": DELAYS_SQL, "transforms.py": TRANSFORMS_PY}


def test_sql_file_missing_from_the_document_is_rejected() -> None:
    doc = PipelineDocument(
        file=SPEC_FILE, yaml_text=one_dataset("sql: gone.sql\ninputs: {flights: identity}")
    )
    with pytest.raises(SpecError) as info:
        parse_pipeline(doc)
    assert_names(info.value, dataset="d", field="sql")
    assert "'gone.sql'" in info.value.reason


# --------------------------------------------------------------------------------------------
# the bounds of one run


def test_timeout_memory_and_settle_travel_in_the_definition_but_not_in_the_code_sha(
    tmp_path: Path,
) -> None:
    body = "sql: SELECT * FROM flights\ninputs: {flights: identity}\n"
    plain = load(tmp_path, one_dataset(body)).datasets["d"]
    text = body + "timeout: 2.5\nmemory_mb: 512\nsettle: 30\n"
    bounded = load(tmp_path, one_dataset(text)).datasets["d"]
    d, p = bounded.definition(), plain.definition()
    assert (d.timeout_s, d.memory_mb, d.settle_s) == (2.5, 512, 30)
    assert (p.timeout_s, p.memory_mb, p.settle_s) == (None, None, None)
    assert bounded.code_sha == plain.code_sha  # neither a bound nor a delay changes the output


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("timeout: 0", "timeout"),
        ("timeout: -3", "timeout"),
        ("timeout: soon", "timeout"),
        ("timeout: true", "timeout"),
        ("memory_mb: 0", "memory_mb"),
        ("memory_mb: 1.5", "memory_mb"),
        ("memory_mb: lots", "memory_mb"),
        ("settle: 0", "settle"),
        ("settle: 5m", "settle"),
    ],
)
def test_a_bad_timeout_memory_limit_or_settle_delay_is_rejected(
    tmp_path: Path, line: str, field: str
) -> None:
    body = f"sql: SELECT * FROM flights\ninputs: {{flights: identity}}\n{line}\n"
    err = spec_error(tmp_path, one_dataset(body))
    assert_names(err, dataset="d", field=field)


# --------------------------------------------------------------------------------------------
# every mapping can be written in a spec

# How each mapping is written in a spec, and what it parses to (every kind of
# `headwater.core.mappings.Mapping`, each with its parameters).
WRITTEN = {
    "identity": ("identity", Mapping(mapping="identity")),
    "all": ("all", Mapping(mapping="all")),
    "window": ("{mapping: window, size: 7}", Mapping(mapping="window", size=7)),
    "rollup to month": ("{mapping: rollup, to: month}", Mapping(mapping="rollup", to="month")),
    "rollup to year": ("{mapping: rollup, to: year}", Mapping(mapping="rollup", to="year")),
    "rollup by pattern": (
        "{mapping: rollup, pattern: '^(\\d{4})-W\\d{2}'}",
        Mapping(mapping="rollup", pattern=r"^(\d{4})-W\d{2}"),
    ),
}


def test_every_kind_of_mapping_has_a_way_to_be_written() -> None:
    """A mapping added to `Mapping` must be writable in a spec: listed in WRITTEN below,
    which the next test parses (this fails until it is)."""
    kinds = set(typing.get_args(Mapping.model_fields["mapping"].annotation))
    periods = set(typing.get_args(typing.get_args(Mapping.model_fields["to"].annotation)[0]))
    assert {m.mapping for _, m in WRITTEN.values()} == kinds
    assert {m.to for _, m in WRITTEN.values() if m.to} == periods


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_a_mapping_written_in_a_spec_reaches_the_scheduler_as_written(
    tmp_path: Path, name: str
) -> None:
    text, expected = WRITTEN[name]
    body = f"sql: SELECT * FROM flights\ninputs: {{flights: {text}}}\n"
    dataset = load(tmp_path, one_dataset(body)).datasets["d"]
    assert dataset.inputs["flights"] == expected
    [carried] = dataset.definition().inputs
    assert Mapping.of(carried) == expected  # what the scheduler decides with
