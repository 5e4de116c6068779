"""The thinnest real slice, through the five services as processes: a source partition lands,
the derived partition is computed by DuckDB and lands as Parquet in object storage, recorded
in Postgres by the scheduler, and the lineage-indexer stores the edge between them."""

import json
from pathlib import Path

import asyncpg
import duckdb
import pyarrow.csv as pacsv

from headwater.core import formats, hashing
from headwater.runtime.objectstore import open_store
from headwater.sdk.example import flights_of_day, write_day_csv
from tests.e2e.conftest import SLICE, RunningStack, all_flights

DAY = "2013-01-01"


async def test_a_landed_partition_flows_to_its_derived_partition(
    stack: RunningStack, tmp_path: Path
) -> None:
    async with stack.client() as hw:
        applied = await hw.apply(SLICE)
        assert {c["dataset"]: c["change"] for c in applied["changes"]} == {
            "flights": "added",
            "delays_by_origin": "added",
        }
        csv = write_day_csv(DAY, tmp_path, all_flights())
        await hw.publish("flights", DAY, csv)
        status = await hw.wait(timeout=120)

    by_key = {(p["dataset"], p["partition_key"]): p for p in status["partitions"]}
    derived = by_key[("delays_by_origin", DAY)]
    source = by_key[("flights", DAY)]
    assert derived["state"] == "ready"
    assert source["state"] == "ready"

    # The output is real Parquet in object storage, content-addressed by its data SHA,
    # and equal to running the example's SQL over the day's flights directly.
    settings = stack.settings
    store = open_store(settings)
    body = await store.get(settings.data_bucket, derived["object_key"])
    table = formats.from_parquet(body)
    assert derived["object_key"] == f"{derived['data_sha']}.parquet"
    assert hashing.data_sha(table) == derived["data_sha"]
    sql = (SLICE.parent / "sql" / "delays_by_origin.sql").read_text()
    day = pacsv.read_csv(csv)
    expected = duckdb.connect().register("flights", day).sql(sql).to_arrow_table()
    assert hashing.data_sha(table) == hashing.data_sha(expected)
    assert sorted(table.column("origin").to_pylist()) == ["EWR", "JFK", "LGA"]
    assert sum(table.column("flights").to_pylist()) == flights_of_day(all_flights(), DAY).num_rows

    # Recorded in Postgres by the services that own the facts.
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        m = await conn.fetchrow(
            "SELECT * FROM scheduler.materializations WHERE dataset = $1 AND partition_key = $2",
            "delays_by_origin",
            DAY,
        )
        edges = await conn.fetch(
            "SELECT input_dataset, input_key, input_data_sha, output_dataset, output_key"
            " FROM lineage.edges"
        )
    finally:
        await conn.close()
    assert m is not None
    assert m["data_sha"] == derived["data_sha"]
    assert m["reason"] == "new partition"
    assert [dict(e) for e in edges] == [
        {
            "input_dataset": "flights",
            "input_key": DAY,
            "input_data_sha": source["data_sha"],
            "output_dataset": "delays_by_origin",
            "output_key": DAY,
        }
    ]

    # The CLI answers the same questions, as JSON.
    status_json = json.loads(stack.cli("status", "--json").stdout)
    assert {(p["dataset"], p["state"]) for p in status_json["partitions"]} == {
        ("flights", "ready"),
        ("delays_by_origin", "ready"),
    }
    lineage = json.loads(stack.cli("lineage", "delays_by_origin", DAY, "--json").stdout)
    assert [(e["input_dataset"], e["input_key"]) for e in lineage["upstream"]] == [("flights", DAY)]
    why = json.loads(stack.cli("why", "delays_by_origin", DAY, "--json").stdout)
    assert [m["reason"] for m in why["materializations"]] == ["new partition"]
    # ... and for people.
    text = stack.cli("lineage", "delays_by_origin", DAY).stdout
    assert text.startswith(f"upstream of delays_by_origin/{DAY}  data ")
    assert f"└── flights/{DAY}  data " in text
    assert "new partition" in stack.cli("why", "delays_by_origin", DAY).stdout
    assert "delays_by_origin" in stack.cli("status").stdout


async def test_an_identical_reupload_runs_nothing(stack: RunningStack, tmp_path: Path) -> None:
    async with stack.client() as hw:
        await hw.apply(SLICE)
        csv = write_day_csv(DAY, tmp_path, all_flights())
        await hw.publish("flights", DAY, csv)
        await hw.wait(timeout=120)
        # The identical file again: re-read and re-hashed, and no news.
        await hw.publish("flights", DAY, csv)
        await hw.wait(timeout=120)
        # The same rows again, as Parquet under another name: same data SHA, no news.
        parquet = tmp_path / "again.parquet"
        parquet.write_bytes(formats.to_parquet(pacsv.read_csv(csv)))
        # The upstream replaces its file: removes the CSV (no event) and lands the Parquet.
        store = open_store(stack.settings)
        await store.delete(stack.settings.landing_bucket, f"flights/{DAY}/{csv.name}")
        await hw.publish("flights", DAY, parquet)
        status = await hw.wait(timeout=120)
    settings = stack.settings
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        runs = await conn.fetchval("SELECT count(*) FROM scheduler.tasks")
        landings = await conn.fetchval(
            "SELECT count(*) FROM lineage.events WHERE kind = 'partition_landed'"
            " AND dataset = 'flights'"
        )
    finally:
        await conn.close()
    assert runs == 1
    assert landings == 1
    assert all(p["state"] == "ready" for p in status["partitions"])
