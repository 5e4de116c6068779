"""A source's data contract (headwater.core.formats): declared columns conform every landed
file or name the column at fault; without a declaration the files of one partition must agree."""

import pyarrow as pa
import pytest

from headwater.contracts.rpc import PipelineDocument
from headwater.core import formats
from headwater.core.errors import SpecError
from headwater.core.spec import parse_pipeline

DECLARED = formats.schema_of({"k": "string", "v": "int64"})


def csv(text: str) -> bytes:
    return text.encode()


def test_a_declared_csv_is_read_as_its_declared_types_not_inferred() -> None:
    table = formats.read_table(csv("k,v\n01,2\n"), "csv", "a.csv", DECLARED)
    assert table.schema == DECLARED
    assert table.column("k").to_pylist() == ["01"]  # not the integer 1


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("k,v,extra\na,1,x\n", "extra", "is not a declared column"),
        ("k\na\n", "v", "is declared (int64) but missing"),
    ],
)
def test_a_file_unlike_the_declaration_names_the_column(text: str, column: str, words: str) -> None:
    with pytest.raises(formats.SchemaMismatch) as err:
        formats.read_table(csv(text), "csv", "land/a.csv", DECLARED)
    assert (err.value.file, err.value.column) == ("land/a.csv", column)
    assert words in err.value.reason


def test_a_value_that_is_not_its_declared_type_is_refused() -> None:
    # CSV reads the declared type directly: the file is not valid for it.
    with pytest.raises(formats.FormatError, match=r"a\.csv"):
        formats.read_table(csv("k,v\na,2.5\n"), "csv", "a.csv", DECLARED)
    # Parquet carries its own types: a lossy cast is refused, naming the column.
    table = pa.table({"k": ["a"], "v": [2.5]})
    with pytest.raises(formats.SchemaMismatch) as err:
        formats.conform(table, DECLARED, "b.parquet")
    assert err.value.column == "v"
    assert "is double, not the declared int64" in err.value.reason


def test_files_of_one_partition_must_agree_and_the_announced_one_is_blamed() -> None:
    a = ("mixed/a.csv", pa.table({"k": ["x"], "v": [1]}))
    b = ("mixed/b.csv", pa.table({"x": ["y"], "y": [2]}))
    with pytest.raises(formats.SchemaMismatch) as err:
        formats.check_alike([a, b], blame="mixed/b.csv")
    assert err.value.file == "mixed/b.csv"
    assert err.value.column in ("x", "y")
    with pytest.raises(formats.SchemaMismatch) as err:
        formats.check_alike([a, b], blame="mixed/a.csv")
    assert err.value.file == "mixed/a.csv"


def test_files_that_differ_only_in_encoding_or_all_null_columns_agree() -> None:
    a = ("p/a.parquet", pa.table({"k": pa.array(["x"], pa.large_string()), "v": [1]}))
    b = ("p/b.csv", pa.table({"k": pa.array(["y"]).dictionary_encode(), "v": [2]}))
    c = ("p/c.csv", pa.table({"k": pa.array([None], pa.null()), "v": [3]}))
    formats.check_alike([a, b, c], blame="p/c.csv")
    wrong = ("p/d.csv", pa.table({"k": ["z"], "v": ["not a number"]}))
    with pytest.raises(formats.SchemaMismatch, match="'v' is string, but int64"):
        formats.check_alike([a, wrong], blame="p/d.csv")


def spec(columns: str) -> PipelineDocument:
    text = f"pipeline: p\nsources:\n  s: {columns}\ndatasets: {{}}\n"
    return PipelineDocument(file="p.yaml", yaml_text=text, files={})


def test_declared_columns_are_the_source_code_and_are_checked_at_apply() -> None:
    plain = parse_pipeline(spec("{}")).datasets["s"]
    declared = parse_pipeline(spec("{columns: {k: string, v: int64}}")).datasets["s"]
    same = parse_pipeline(spec("{columns: {k: str, v: int64}}")).datasets["s"]  # an alias
    retyped = parse_pipeline(spec("{columns: {k: string, v: double}}")).datasets["s"]
    assert declared.columns == {"k": "string", "v": "int64"}
    assert declared.definition().columns == {"k": "string", "v": "int64"}
    assert plain.columns is None
    assert len({plain.code_sha, declared.code_sha, retyped.code_sha}) == 3
    assert same.code_sha == declared.code_sha
    with pytest.raises(SpecError) as err:
        parse_pipeline(spec("{columns: {k: strng}}"))
    assert err.value.field == "columns.k"
    assert "'strng' is not an Arrow type" in str(err.value)
    with pytest.raises(SpecError) as err:
        parse_pipeline(spec("{columns: [k, v]}"))
    assert err.value.field == "columns"
