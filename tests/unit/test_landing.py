"""`headwater publish DATASET PATH...`: which partitions a directory, a glob or files make,
and bad paths refused naming the path and the reason before anything lands."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from headwater.contracts.errors import InputError
from headwater.sdk.cli import app
from headwater.sdk.landing import Landing, landings


def files(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("k,v\n1,2\n")


def test_a_directory_of_files_is_a_partition_per_stem(tmp_path: Path) -> None:
    files(tmp_path, "w/2013-01-02.csv", "w/2013-01-01.csv", "w/.hidden.csv")
    assert landings([str(tmp_path / "w")]) == [
        Landing("2013-01-01", tmp_path / "w" / "2013-01-01.csv", "2013-01-01.csv"),
        Landing("2013-01-02", tmp_path / "w" / "2013-01-02.csv", "2013-01-02.csv"),
    ]


def test_a_folder_is_a_partition_of_every_file_in_it(tmp_path: Path) -> None:
    files(tmp_path, "f/2013-01-01/a.csv", "f/2013-01-01/b.parquet", "f/all.jsonl")
    assert [(x.partition, x.name) for x in landings([str(tmp_path / "f")])] == [
        ("2013-01-01", "a.csv"),
        ("2013-01-01", "b.parquet"),
        ("all", "all.jsonl"),
    ]


def test_globs_and_files(tmp_path: Path) -> None:
    files(tmp_path, "d/2013-01-01.csv", "d/2013-01-02.csv", "d/2013-02-01.csv")
    found = landings([str(tmp_path / "d" / "2013-01-*.csv"), str(tmp_path / "d/2013-02-01.csv")])
    assert [x.partition for x in found] == ["2013-01-01", "2013-01-02", "2013-02-01"]


@pytest.mark.parametrize(
    ("names", "target", "field", "reason"),
    [
        ((), "nowhere", "path", "nowhere does not exist"),
        ((), "nowhere/*.csv", "path", "matches no file or folder"),
        (("d/2013 01 01.csv",), "d", "partition", "contains ' '"),
        (("d/2013-01-01.txt",), "d", "path", "has no known format extension"),
        (("d/x.csv", "d/x/y.csv"), "d", "partition", "x is named twice"),
        (("d/.keep",), "d", "path", "holds no file or folder"),
    ],
)
def test_bad_paths_name_the_field_and_the_reason(
    tmp_path: Path, names: tuple[str, ...], target: str, field: str, reason: str
) -> None:
    files(tmp_path, *names)
    with pytest.raises(InputError) as caught:
        landings([str(tmp_path / target)])
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_the_cli_refuses_a_bad_directory_before_talking_to_any_service(tmp_path: Path) -> None:
    files(tmp_path, "d/2013-01-01.csv", "d/bad key.csv")
    result = CliRunner().invoke(
        app, ["publish", "flights", str(tmp_path / "d"), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert "partition:" in result.output
    assert "bad key.csv" in " ".join(result.output.split())


def test_delete_takes_one_partition(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["publish", "--delete", "flights", "a", "b", "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--delete takes one PARTITION" in result.output
