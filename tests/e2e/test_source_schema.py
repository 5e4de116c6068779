"""Source schemas, the data contract (README): a landed file whose columns do not match the
source's declared columns, or the other files of its partition, is dead-lettered with the file
and the column, and the partition keeps its last good content. Real services and servers."""

from pathlib import Path
from typing import Any

import pytest

from headwater.core import formats
from headwater.runtime.objectstore import open_store
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.timeout(180)

SPEC = """\
pipeline: contract
sources:
  tagged: {}
  typed:
    columns: {k: string, v: int64}
datasets:
  tagged_count:
    sql: SELECT count(*) AS n FROM tagged
    inputs: {tagged: identity}
  typed_sum:
    sql: SELECT sum(v) AS total FROM typed
    inputs: {typed: identity}
"""


def partition(status: dict[str, Any], dataset: str, key: str) -> dict[str, Any]:
    return next(
        p for p in status["partitions"] if p["dataset"] == dataset and p["partition_key"] == key
    )


async def land(stack: RunningStack, tmp_path: Path, dataset: str, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    async with stack.client() as hw:
        await hw.publish(dataset, "mixed", path, name=name)


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_files_that_break_the_contract_are_dead_lettered_and_change_nothing(
    stack: RunningStack, tmp_path: Path
) -> None:
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    stack.cli("apply", str(tmp_path / "pipeline.yaml"))
    await land(stack, tmp_path, "tagged", "a.csv", "k,v\nx,1\ny,2\n")
    await land(stack, tmp_path, "typed", "a.csv", "k,v\n01,1\n")
    async with stack.client() as hw:
        before = await hw.wait(timeout=120)

        # A stray file with other columns in the same partition (no declared schema).
        await land(stack, tmp_path, "tagged", "b.csv", "x,y\nz,3\n")
        # A file that is not the declared contract: a column of the wrong type, one extra.
        await land(stack, tmp_path, "typed", "b.csv", "k,v\na,not-a-number\n")
        await land(stack, tmp_path, "typed", "c.csv", "k,v,w\na,1,extra\n")
        after = await hw.wait(timeout=120)
        letters = await hw.dead_letters()

    ns = stack.settings.namespace
    by_file = {d["reason"].split(":")[0].split(" ")[0]: d for d in letters}
    assert sorted(by_file) == ["tagged/mixed/b.csv", "typed/mixed/b.csv", "typed/mixed/c.csv"]
    stray = by_file["tagged/mixed/b.csv"]
    assert stray["field"] in ("file.columns.x", "file.columns.y")
    assert "is not a column of tagged/mixed/a.csv" in stray["reason"]
    assert by_file["typed/mixed/b.csv"]["field"] == "file"  # not valid int64: the CSV read fails
    assert "typed/mixed/b.csv is not valid csv" in by_file["typed/mixed/b.csv"]["reason"]
    extra = by_file["typed/mixed/c.csv"]
    assert (extra["field"], extra["subject"]) == ("file.columns.w", f"{ns}.upstream.typed")
    assert "'w' is not a declared column" in extra["reason"]
    # Every partition kept its last good content: nothing re-ran.
    for dataset in ("tagged", "tagged_count", "typed", "typed_sum"):
        assert (
            partition(after, dataset, "mixed")["data_sha"]
            == (partition(before, dataset, "mixed")["data_sha"])
        )
    assert partition(after, "typed_sum", "mixed")["state"] == "ready"


ORDERED = """\
pipeline: ordered
sources:
  readings:
    columns: {station: string, at: int64, temperature: double}
datasets:
  everything:
    sql: SELECT * FROM readings
    inputs: {readings: identity}
"""


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_a_source_is_landed_in_its_declared_column_order(
    stack: RunningStack, tmp_path: Path
) -> None:
    """The declared columns are an ordered list: a file with them in another order is landed
    in the declared one, and `SELECT *` over it keeps it (Postgres jsonb, which orders keys
    by length, once reordered them to at, station, temperature)."""
    (tmp_path / "pipeline.yaml").write_text(ORDERED)
    stack.cli("apply", str(tmp_path / "pipeline.yaml"))
    await land(stack, tmp_path, "readings", "r.csv", "temperature,at,station\n1.5,7,x\n")
    async with stack.client() as hw:
        status = await hw.wait(timeout=120)
    store = open_store(stack.settings)
    for dataset in ("readings", "everything"):
        stored = partition(status, dataset, "mixed")
        assert stored["state"] == "ready"
        body = await store.get(stack.settings.data_bucket, stored["object_key"])
        assert formats.from_parquet(body).column_names == ["station", "at", "temperature"]
