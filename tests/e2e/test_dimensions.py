"""Partitions with two dimensions through the running services (issue 13 item 2): the example's
flights landed per (date, origin airport), read per dimension by a window along the date, a
month rollup per airport, and a day over every airport. One (date, origin) landing re-runs
exactly what reads it: checked against a hand-written list and the oracle's cache misses."""

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from headwater.contracts.keys import join_dimensions
from headwater.core import formats
from headwater.core.spec import parse_pipeline
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.example import day_table, write_csv
from headwater.sdk.spec_files import read_document
from tests.fixtures.stack import logs, stack_settings, started
from tests.oracle import Oracle, held_content

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "flights" / "pipeline.yaml").read_text()
# The example's declared flights columns, reused as they are.
COLUMNS = EXAMPLE.split("  flights:", 1)[1].split("  weather:", 1)[0].split("\n", 1)[1]
SPEC = f"""\
pipeline: by_origin
sources:
  flights:
    partitions: {{date: daily, origin: [EWR, JFK, LGA]}}
{COLUMNS}datasets:
  delays:             # identity on both dimensions
    sql: >
      SELECT carrier, count(*) AS flights, sum(dep_delay) AS dep_delay
      FROM flights WHERE dep_delay IS NOT NULL GROUP BY carrier
    inputs: {{flights: identity}}
  delays_3d:          # a window of 3 days along `date`, per airport
    sql: SELECT carrier, sum(flights) AS flights, sum(dep_delay) AS dep_delay FROM delays GROUP BY carrier
    inputs: {{delays: {{dimensions: {{date: {{mapping: window, size: 3}}, origin: identity}}}}}}
  delays_monthly:     # every day of a month into the month, per airport
    sql: SELECT carrier, sum(flights) AS flights FROM delays GROUP BY carrier
    inputs: {{delays: {{dimensions: {{date: {{mapping: rollup, to: month}}}}}}}}
  delays_daily:       # one day over every airport: `origin` read whole
    sql: SELECT carrier, sum(flights) AS flights FROM delays GROUP BY carrier
    inputs: {{delays: {{dimensions: {{origin: all}}}}}}
"""
DAYS = ["2013-01-30", "2013-01-31", "2013-02-01", "2013-02-02"]
ORIGINS = ["EWR", "JFK", "LGA"]
EARLY = ("2013-01-31", "JFK")  # first landed with its evening flights missing


def key(day: str, origin: str) -> str:
    return join_dimensions([("date", day), ("origin", origin)])


def rows(day: str, origin: str, *, early: bool = False) -> pa.Table:
    table = day_table("flights", day, early=early)
    return table.filter(pc.equal(table["origin"], origin))


class Run:
    def __init__(self, root: Path, hw: HeadwaterClient, dsn: str) -> None:
        self.root, self.hw, self.dsn = root, hw, dsn
        self.oracle = Oracle()
        self.sources: dict[str, bytes] = {}
        (root / "pipeline.yaml").write_text(SPEC)
        self.pipeline = parse_pipeline(read_document(root / "pipeline.yaml"))

    async def land(self, day: str, origin: str, *, early: bool = False) -> None:
        path = write_csv(
            rows(day, origin, early=early), self.root / "files" / f"{uuid.uuid4()}.csv"
        )
        self.sources[key(day, origin)] = path.read_bytes()
        await self.hw.publish("flights", key(day, origin), path, name="flights.csv")

    async def ran(self) -> set[tuple[str, str, str]]:
        conn = await asyncpg.connect(self.dsn)
        try:
            found = await conn.fetch(
                "SELECT dataset, partition_key, fingerprint FROM scheduler.tasks"
            )
        finally:
            await conn.close()
        return {(r["dataset"], r["partition_key"], r["fingerprint"]) for r in found}

    async def check(self) -> set[tuple[str, str]]:
        """After the stack settles: it holds the oracle's content and has run exactly the
        oracle's cache misses; returns the (dataset, key) the oracle had to compute now."""
        before = len(self.oracle.misses)
        status = await self.hw.wait(timeout=120)
        schema = formats.schema_of(self.pipeline.datasets["flights"].columns or {})
        tables = {k: formats.read_table(v, "csv", k, schema) for k, v in self.sources.items()}
        expected = self.oracle.evaluate(self.pipeline, {"flights": tables})
        assert held_content(status) == expected
        assert {fp for _, _, fp in await self.ran()} == {fp for _, _, fp in self.oracle.misses}
        return {(d, k) for d, k, _ in self.oracle.misses[before:]}


async def test_one_date_and_origin_reruns_exactly_what_reads_it(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    settings = stack_settings(namespace, nats_url, database, None)
    async with (
        started(tmp_path / "state", settings, {"HEADWATER_RECONCILE_INTERVAL_S": "2"}) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        try:
            run = Run(tmp_path, hw, database)
            await hw.apply(tmp_path / "pipeline.yaml")
            for day in DAYS:
                for origin in ORIGINS:
                    await run.land(day, origin, early=(day, origin) == EARLY)
            first = await run.check()
            # 12 (date, origin): 12 delays, 12 windows, 6 months (2 x 3 airports), 4 days.
            assert len(first) == 12 + 12 + 6 + 4

            await run.land(*EARLY)  # the complete file of the early (date, origin)
            again = await run.check()
            assert again == {
                ("delays", key("2013-01-31", "JFK")),
                # the windows of JFK's days that hold 2013-01-31, not another airport's
                ("delays_3d", key("2013-01-31", "JFK")),
                ("delays_3d", key("2013-02-01", "JFK")),
                ("delays_3d", key("2013-02-02", "JFK")),
                ("delays_monthly", "date=2013-01,origin=JFK"),
                ("delays_daily", "date=2013-01-31"),
            }

            # A key that is not one of the source's is rejected, naming the field and why.
            bad = tmp_path / "bad.csv"
            bad.write_bytes(run.sources[key(*EARLY)])
            await hw.publish("flights", "date=2013-01-31,origin=BOS", bad, name="f.csv")
            await hw.publish("flights", "2013-01-31", bad, name="f.csv")
            letters = await wait_for_letters(hw, 2)
            reasons = sorted(str(d.get("reason")) for d in letters)
            assert any("origin='BOS' is not one of its values" in r for r in reasons), reasons
            assert any("is not a key of dimensions ['date', 'origin']" in r for r in reasons)
            assert all(d.get("field") == "partition" for d in letters), letters
            assert await run.check() == set()  # nothing ran for them

            await cli_checks(stack.state_dir)
        except BaseException:
            print(logs(stack.state_dir))
            raise


async def wait_for_letters(hw: HeadwaterClient, n: int) -> list[dict[str, Any]]:
    import asyncio

    for _ in range(120):
        letters = await hw.dead_letters()
        if len(letters) >= n:
            return letters
        await asyncio.sleep(0.5)
    raise AssertionError(f"expected {n} dead letters, found {await hw.dead_letters()}")


async def cli_checks(state_dir: Path) -> None:
    """`why`, `lineage` and `plan` name partitions by their dimensions."""
    import json
    import subprocess
    import sys

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "headwater.sdk", *args, "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            timeout=120,
        )
        return done.stdout

    window = key("2013-02-01", "JFK")
    why = json.loads(cli("why", "delays_3d", window, "--json"))
    shown = json.dumps(why)
    for day in ("2013-01-30", "2013-01-31", "2013-02-01"):
        assert key(day, "JFK") in shown, shown
    assert key("2013-01-31", "EWR") not in shown
    text = cli("lineage", "delays_daily", "date=2013-01-31")
    for origin in ORIGINS:
        assert key("2013-01-31", origin) in text, text
    graph = cli("lineage", "delays_3d")
    assert "date: window 3, origin: identity" in graph, graph
