"""`lineage`, `history` and `impact` through the CLI of a running stack, on the example
pipeline (examples/flights, two days): partition lineage as trees with data and code SHAs and
--depth, the dataset-level graph from the definitions, every materialization of a partition
with why it ran and from what, and what would run if a partition or a dataset changed; human
and --json, and the exit code of bad input. One stack for the module."""

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headwater.sdk.embedded import EmbeddedStack
from headwater.sdk.example import write_files as example_files
from tests.e2e.conftest import ROOT, RunningStack, stack_settings
from tests.fixtures.servers import with_database

pytestmark = [pytest.mark.timeout(300)]

DAYS = ["2013-01-01", "2013-01-02"]
DAY = DAYS[1]
EXAMPLE = ROOT / "examples" / "flights"
# The SQL change of the demo's story: a departure is late past 30 minutes, not 15.
LATE = "f.dep_delay > 15"


@pytest.fixture(scope="module")
async def flights(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, pg_dsn: str
) -> AsyncIterator[tuple[RunningStack, Path]]:
    """The stack with the example applied and two days landed and computed; then
    carrier_delays' SQL changed (the demo's change) and computed again, so each of its
    partitions has two materializations. Yields the stack and the copy of the example."""
    root = tmp_path_factory.mktemp("lineage")
    namespace = f"t{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{namespace}"')
    finally:
        await conn.close()
    embedded = EmbeddedStack(
        root / "state",
        stack_settings(namespace, nats_url, with_database(pg_dsn, namespace), None),
        service_env={"HEADWATER_RECONCILE_INTERVAL_S": "2"},
        log_to_files=True,
    )
    embedded.start()
    running = RunningStack(embedded, embedded.state_dir, "local")
    try:
        async with running.client() as hw:
            await hw.ready(timeout=60)
        example = root / "example"
        shutil.copytree(EXAMPLE, example)
        example_files(root / "data", DAYS)
        running.cli("apply", str(example / "pipeline.yaml"))
        for name in ("airlines", "airports", "weather", "flights"):
            running.cli("publish", name, str(root / "data" / name))
        running.cli("wait", "--timeout", "120")
        sql = example / "sql" / "carrier_delays.sql"
        sql.write_text(sql.read_text().replace(LATE, "f.dep_delay > 30"))
        running.cli("apply", str(example / "pipeline.yaml"), "--wait", "--timeout", "120")
        yield running, example
    finally:
        embedded.stop()
        print(running.logs())  # shown by pytest only when a test failed
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{namespace}" WITH (FORCE)')
        finally:
            await conn.close()


def as_json(stack: RunningStack, *args: str) -> Any:
    return json.loads(stack.cli(*args, "--json").stdout)


def code_shas(stack: RunningStack) -> dict[str, str]:
    found = as_json(stack, "lineage", "carrier_delays")  # every dataset: up or down
    return {name: d["code_sha"] for name, d in found["datasets"].items()}


def test_partition_lineage_is_a_tree_with_data_and_code_shas(
    flights: tuple[RunningStack, Path],
) -> None:
    stack, _ = flights
    found = as_json(stack, "lineage", "carrier_delays", DAY)
    up = {(e["input_dataset"], e["input_key"], e["depth"]) for e in found["upstream"]}
    # carrier_delays/DAY reads the day's flights_clean and weather_daily, which read the day's
    # sources (and airports' one partition).
    assert up == {
        ("flights_clean", DAY, 1),
        ("weather_daily", DAY, 1),
        ("flights", DAY, 2),
        ("airports", "all", 2),
        ("weather", DAY, 2),
    }
    down = {(e["output_dataset"], e["output_key"], e["depth"]) for e in found["downstream"]}
    # The 7-day window of DAY (the window ending at the first day does not read the second),
    # the month, and the scorecard.
    assert down == {
        ("carrier_delays_7d", DAY, 1),
        ("carrier_monthly", "2013-01", 1),
        ("carrier_scorecard", "all", 1),
    }
    shas = code_shas(stack)
    for e in [*found["upstream"], *found["downstream"]]:
        assert e["code_sha"] == shas[e["output_dataset"]]
        assert len(e["input_data_sha"]) == len(e["output_data_sha"]) == 64
    status = as_json(stack, "status")["partitions"]
    data = {(p["dataset"], p["partition_key"]): p["data_sha"] for p in status}
    assert {e["output_data_sha"] for e in found["upstream"] if e["depth"] == 1} == {
        data["carrier_delays", DAY]
    }

    text = stack.cli("lineage", "carrier_delays", DAY).stdout
    lines = text.splitlines()
    root = f"carrier_delays/{DAY}  data {data['carrier_delays', DAY][:12]}"
    assert lines[0] == f"upstream of {root}  code {shas['carrier_delays'][:12]}"
    # The tree: flights_clean/DAY under the root, flights/DAY under it, each with its SHAs.
    clean = next(i for i, line in enumerate(lines) if f"flights_clean/{DAY}" in line)
    assert f"data {data['flights_clean', DAY][:12]}" in lines[clean]
    assert f"code {shas['flights_clean'][:12]}" in lines[clean]
    below = next(i for i, line in enumerate(lines) if f" flights/{DAY}" in line)
    assert below > clean
    assert lines[below].index("flights/") > lines[clean].index("flights_clean")
    assert any(line.startswith("downstream of ") for line in lines)
    assert f"carrier_scorecard/all  data {data['carrier_scorecard', 'all'][:12]}" in text

    # --depth 1: adjacent partitions only.
    near = as_json(stack, "lineage", "carrier_delays", DAY, "--depth", "1")
    assert {e["depth"] for e in [*near["upstream"], *near["downstream"]]} == {1}
    assert (
        f" flights/{DAY}" not in stack.cli("lineage", "carrier_delays", DAY, "--depth", "1").stdout
    )


def test_dataset_lineage_follows_the_definitions(flights: tuple[RunningStack, Path]) -> None:
    stack, _ = flights
    found = as_json(stack, "lineage", "carrier_delays")
    assert {(e["input"], e["output"], e["mapping"], e["depth"]) for e in found["upstream"]} == {
        ("flights_clean", "carrier_delays", "identity", 1),
        ("weather_daily", "carrier_delays", "identity", 1),
        ("flights", "flights_clean", "identity", 2),
        ("airports", "flights_clean", "all", 2),
        ("weather", "weather_daily", "identity", 2),
    }
    assert {(e["output"], e["mapping"]) for e in found["downstream"]} == {
        ("carrier_delays_7d", "window 7"),
        ("carrier_monthly", "rollup month"),
        ("carrier_scorecard", "all"),
    }
    assert found["datasets"]["weather_daily"]["kind"] == "python"
    text = stack.cli("lineage", "carrier_delays").stdout
    assert "carrier_delays_7d (sql, code " in text
    assert "[window 7]" in text
    assert "weather_daily (python, code " in text
    one = as_json(stack, "lineage", "carrier_delays", "--depth", "1")
    assert {e["input"] for e in one["upstream"]} == {"flights_clean", "weather_daily"}


def test_history_shows_every_materialization_why_and_from_what(
    flights: tuple[RunningStack, Path],
) -> None:
    stack, _ = flights
    found = as_json(stack, "history", "carrier_delays", DAY)
    made = [e for e in found["entries"] if e["kind"] == "materialized"]
    assert len(made) == 2
    first, second = made
    assert first["reason"] == "new partition"
    assert not first["current"]
    assert second["current"]
    assert second["code_sha"] == code_shas(stack)["carrier_delays"]
    assert second["reason"].startswith(
        f"code changed {first['code_sha'][:12]} -> {second['code_sha'][:12]}"
    )
    assert {(i["dataset"], i["partition_key"]) for i in second["inputs"]} == {
        ("flights_clean", DAY),
        ("weather_daily", DAY),
    }
    changes = [e for e in found["entries"] if e["kind"] == "code_changed"]
    assert [(c["previous_code_sha"], c["code_sha"]) for c in changes][-1] == (
        first["code_sha"],
        second["code_sha"],
    )
    order = [e["kind"] for e in found["entries"]]
    assert order.index("materialized") < len(order) - 1 - order[::-1].index("code_changed")
    assert found["state"] == "ready"
    assert found["data_sha"] == second["data_sha"]

    text = stack.cli("history", "carrier_delays", DAY).stdout
    assert f"materialized data {second['data_sha'][:12]}" in text
    assert f"code changed {first['code_sha'][:12]} -> {second['code_sha'][:12]}" in text
    assert f"from: flights_clean/{DAY}@" in text
    assert sum(line.startswith("* ") for line in text.splitlines()) == 1  # the current one

    # A source partition: its landing.
    landed = as_json(stack, "history", "flights", DAY)["entries"]
    assert [e["kind"] for e in landed if e["kind"] != "code_changed"] == ["materialized"]


def test_impact_counts_what_would_run_per_dataset(flights: tuple[RunningStack, Path]) -> None:
    stack, _ = flights
    found = as_json(stack, "impact", "flights", DAY)
    assert [(d["dataset"], d["count"], d["partitions"]) for d in found["datasets"]] == [
        ("flights", 1, [DAY]),
        ("flights_clean", 1, [DAY]),
        ("carrier_delays", 1, [DAY]),
        ("carrier_delays_7d", 1, [DAY]),
        ("carrier_monthly", 1, ["2013-01"]),
        ("carrier_scorecard", 1, ["all"]),
    ]
    assert found["total"] == 6
    # A dataset: every partition of it and what reads them, listed up to --show.
    every = as_json(stack, "impact", "airports", "--show", "1")
    counts = {d["dataset"]: (d["count"], len(d["partitions"])) for d in every["datasets"]}
    assert counts == {
        "airports": (1, 1),
        "flights_clean": (2, 1),
        "carrier_delays": (2, 1),
        "carrier_delays_7d": (2, 1),
        "carrier_monthly": (1, 1),
        "carrier_scorecard": (1, 1),
    }
    text = stack.cli("impact", "airports", "--show", "1").stdout
    assert "flights_clean" in text
    assert "(1 more)" in text
    assert "9 partition(s) in all" in text


def test_bad_input_is_one_line_and_exit_2(flights: tuple[RunningStack, Path]) -> None:
    stack, _ = flights
    for args in (
        ("impact", "nope"),
        ("impact", "flights", "1999-01-01"),
        ("lineage", "nope"),
        ("history", "carrier_delays", "1999-01-01"),
        ("lineage", "carrier_delays", "--depth", "0"),
    ):
        result = stack.cli(*args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_column_lineage_per_output_column(flights: tuple[RunningStack, Path]) -> None:
    stack, _ = flights
    found = as_json(stack, "lineage", "--columns", "carrier_delays")
    columns = {c["name"]: c for c in found["columns"]}
    assert list(columns) == [
        *("day", "carrier", "origin", "flights", "late", "dep_delay_minutes"),
        *("precip", "min_visib", "max_wind_speed"),
    ]
    assert columns["late"]["sources"] == [{"dataset": "flights_clean", "column": "dep_delay"}]
    assert "> 30" in columns["late"]["expression"]  # the applied SQL's
    assert columns["flights"]["sources"] == []  # count(*)
    assert columns["day"]["unresolved"] is None
    # weather_daily is Python: its columns are unknown, so the SQL's names are not checked.
    assert columns["precip"]["sources"] == [{"dataset": "weather_daily", "column": "precip"}]
    assert "weather_daily is a Python dataset" in columns["precip"]["unresolved"]
    text = stack.cli("lineage", "--columns", "carrier_delays").stdout
    row = next(line for line in text.splitlines() if line.startswith("│ late "))
    assert "flights_clean.dep_delay" in row
    assert "weather_daily is a Python" in " ".join(text.split())

    # Resolved through SQL datasets: flights_clean's day from the source's year, month, day.
    day = next(
        c
        for c in as_json(stack, "lineage", "--columns", "flights_clean")["columns"]
        if c["name"] == "day"
    )
    assert {s["column"] for s in day["sources"]} == {"year", "month", "day"}
    python = as_json(stack, "lineage", "--columns", "weather_daily")
    assert python["columns"] is None
    assert "Python" in python["unknown"]
    said = stack.cli("lineage", "--columns", "weather_daily").stdout
    assert said.startswith("weather_daily: columns unknown: a Python transform")
    bad = stack.cli("lineage", "--columns", "carrier_delays", DAY, check=False)
    assert bad.returncode == 2


def test_plan_says_which_output_columns_a_sql_change_touches(
    flights: tuple[RunningStack, Path], tmp_path: Path
) -> None:
    stack, example = flights
    changed = tmp_path / "example"
    shutil.copytree(example, changed)
    sql = changed / "sql" / "carrier_delays.sql"
    sql.write_text(sql.read_text().replace("f.dep_delay > 30", "f.dep_delay > 45"))
    found = as_json(stack, "plan", str(changed / "pipeline.yaml"))
    by_name = {c["dataset"]: c for c in found["changes"]}
    touched = by_name["carrier_delays"]["columns"]
    assert (touched["changed"], touched["added"], touched["removed"]) == (["late"], [], [])
    assert "day" in touched["unchanged"]
    assert "columns" not in by_name["carrier_delays_7d"]  # unchanged, and so are its columns
    text = stack.cli("plan", str(changed / "pipeline.yaml")).stdout
    assert "carrier_delays: columns changed late" in text
