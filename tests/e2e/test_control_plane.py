"""The declarative control plane through the running services: incremental propagation,
smart backfill, comment-only changes, reverts and early cutoff, each checked against the
oracle (what ran must be exactly its cache misses; what is stored must equal its content)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headwater.core import formats, hashing
from headwater.core.spec import Pipeline, parse_pipeline
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.spec_files import read_document
from tests.e2e.conftest import RunningStack
from tests.oracle import Oracle, held_content
from tests.workloads import sales_csv

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("stack", ["local"], indirect=True)]

DAYS = [f"2024-01-{d:02d}" for d in range(1, 31)]
SPEC = """\
pipeline: shop
sources:
  sales: {}
datasets:
  daily:
    sql: daily.sql
    inputs: {sales: identity}
  weekly:
    sql: weekly.sql
    inputs: {daily: {mapping: window, size: 3}}
  monthly:
    python: transforms.py:monthly
    inputs: {daily: {mapping: rollup, to: month}}
  busy:
    sql: busy.sql
    inputs: {daily: identity}
"""
FILES = {
    "daily.sql": "SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region",
    "weekly.sql": "SELECT region, sum(total) AS total FROM daily GROUP BY region",
    "busy.sql": "SELECT region, n > 2 AS busy FROM daily",
    "transforms.py": (
        "import pyarrow as pa\n"
        "import pyarrow.compute as pc\n\n\n"
        "def monthly(daily: pa.Table) -> pa.Table:\n"
        "    return daily.group_by('region').aggregate([('total', 'sum')])\n"
    ),
}


@dataclass
class Shop:
    """The test's pipeline folder, its landed sources, and the oracle beside the system."""

    stack: RunningStack
    root: Path
    sources: dict[str, bytes] = field(default_factory=dict)
    oracle: Oracle = field(default_factory=Oracle)
    pipeline: Pipeline | None = None

    def write(self, **files: str) -> Path:
        self.root.mkdir(exist_ok=True)
        (self.root / "pipeline.yaml").write_text(SPEC)
        for name, text in {**FILES, **files}.items():
            (self.root / name).write_text(text)
        return self.root / "pipeline.yaml"

    async def apply(self, hw: HeadwaterClient, **files: str) -> dict[str, Any]:
        path = self.write(**files)
        self.pipeline = parse_pipeline(read_document(path))
        return await hw.apply(path)

    async def plan(self, hw: HeadwaterClient, **files: str) -> dict[str, Any]:
        return await hw.plan(self.write(**files))

    async def land(self, hw: HeadwaterClient, day: str, salt: int = 0) -> None:
        data = sales_csv(day, salt)
        self.sources[day] = data
        path = self.root / f"sales-{day}.csv"
        path.write_bytes(data)
        await hw.publish("sales", day, path, name="sales.csv")

    async def settle(self, hw: HeadwaterClient) -> list[tuple[str, str, str]]:
        """Wait, compare with the oracle, and return what the oracle had to compute anew."""
        status = await hw.wait(timeout=180)
        before = len(self.oracle.misses)
        assert self.pipeline is not None
        tables = {k: formats.read_table(v, "csv", k) for k, v in self.sources.items()}
        expected = self.oracle.evaluate(self.pipeline, {"sales": tables})
        held = held_content(status)
        assert held == expected  # convergence
        assert all(p["state"] == "ready" for p in status["partitions"])
        ran = await self.ran()
        assert sorted(ran) == sorted(fp for _, _, fp in self.oracle.misses)  # minimality
        return self.oracle.misses[before:]

    async def ran(self) -> list[str]:
        """Every fingerprint the system dispatched, ever."""
        conn = await asyncpg.connect(self.stack.settings.pg_dsn)
        try:
            rows = await conn.fetch("SELECT fingerprint FROM scheduler.tasks")
        finally:
            await conn.close()
        return [r["fingerprint"] for r in rows]


async def started(stack: RunningStack, tmp_path: Path, hw: HeadwaterClient) -> Shop:
    shop = Shop(stack, tmp_path / "shop")
    await shop.apply(hw)
    for day in DAYS:
        await shop.land(hw, day)
    first = await shop.settle(hw)
    assert len(first) == 30 + 30 + 30 + 1  # daily, weekly, busy per day; one month
    return shop


def keys(misses: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
    return {(d, k) for d, k, _ in misses}


async def test_new_and_changed_partitions_run_only_what_reads_them(
    stack: RunningStack, tmp_path: Path
) -> None:
    async with stack.client() as hw:
        shop = await started(stack, tmp_path, hw)
        # A new day among 30: its daily and busy partitions, the one window ending there, the month.
        await shop.land(hw, "2024-01-31")
        assert keys(await shop.settle(hw)) == {
            ("daily", "2024-01-31"),
            ("busy", "2024-01-31"),
            ("weekly", "2024-01-31"),
            ("monthly", "2024-01"),
        }
        # A changed day: the three windows that include it, and the rest as above.
        await shop.land(hw, "2024-01-10", salt=1)
        changed = keys(await shop.settle(hw))
        assert {
            ("daily", "2024-01-10"),
            ("weekly", "2024-01-10"),
            ("weekly", "2024-01-11"),
            ("weekly", "2024-01-12"),
            ("monthly", "2024-01"),
        } <= changed
        assert changed <= {
            ("daily", "2024-01-10"),
            ("busy", "2024-01-10"),
            ("weekly", "2024-01-10"),
            ("weekly", "2024-01-11"),
            ("weekly", "2024-01-12"),
            ("monthly", "2024-01"),
        }
        # Landing it again unchanged runs nothing.
        await shop.land(hw, "2024-01-10", salt=1)
        assert await shop.settle(hw) == []
        # Retracting a day: what read it only is retracted too; windows and the month that
        # included it are recomputed without it.
        await hw.delete("sales", "2024-01-15")
        del shop.sources["2024-01-15"]
        assert keys(await shop.settle(hw)) == {
            ("weekly", "2024-01-16"),
            ("weekly", "2024-01-17"),
            ("monthly", "2024-01"),
        }
        held = {(p["dataset"], p["partition_key"]) for p in (await hw.status())["partitions"]}
        assert not {k for k in held if k[1] == "2024-01-15"}


async def test_code_change_backfills_exactly_and_a_revert_reuses(
    stack: RunningStack, tmp_path: Path
) -> None:
    async with stack.client() as hw:
        shop = await started(stack, tmp_path, hw)
        before = {
            (p["dataset"], p["partition_key"]): p["data_sha"]
            for p in (await hw.status())["partitions"]
        }
        edited = {"weekly.sql": "SELECT region, max(total) AS total FROM daily GROUP BY region"}
        ran_before_plan = await shop.ran()
        plan = await shop.plan(hw, **edited)
        weekly = next(c for c in plan["changes"] if c["dataset"] == "weekly")
        assert weekly["change"] == "changed"
        assert len(weekly["run"]) == 30
        assert weekly["reuse"] == []
        assert plan["downstream"] == {}
        await hw.wait()
        assert await shop.ran() == ran_before_plan  # planning ran nothing
        await shop.apply(hw, **edited)
        assert keys(await shop.settle(hw)) == {("weekly", d) for d in DAYS}

        # Upstream code whose output changes: its partitions, and downstream exactly the
        # partitions whose input SHAs changed (here all of them: every daily total changes).
        upstream = {
            "daily.sql": "SELECT region, count(*) AS n, max(amount) AS total FROM sales GROUP BY region"
        }
        plan = await shop.plan(hw, **edited, **upstream)
        assert set(plan["downstream"]) == {"weekly", "busy", "monthly"}
        await shop.apply(hw, **edited, **upstream)
        assert keys(await shop.settle(hw)) == (
            {(d, k) for d in ("daily", "weekly", "busy") for k in DAYS} | {("monthly", "2024-01")}
        )

        # Back to the original code: every partition is found, nothing runs.
        plan = await shop.plan(hw)
        weekly = next(c for c in plan["changes"] if c["dataset"] == "weekly")
        assert weekly["run"] == []
        assert len(weekly["reuse"]) == 30
        await shop.apply(hw)
        assert await shop.settle(hw) == []
        after = {
            (p["dataset"], p["partition_key"]): p["data_sha"]
            for p in (await hw.status())["partitions"]
        }
        assert after == before
        why = await hw.why("weekly", "2024-01-05")
        assert [m["current"] for m in why["materializations"]] == [True, False, False]
        assert "code changed" in why["materializations"][1]["reason"]
        assert "input daily/2024-01-05 changed" in why["materializations"][2]["reason"]
        # Each kind's version is stored beside its hash (the executor says the data SHA's).
        assert {
            (m["fingerprint_version"], m["data_sha_version"]) for m in why["materializations"]
        } == {(hashing.FINGERPRINT_VERSION, hashing.DATA_SHA_VERSION)}


async def test_comment_and_formatting_changes_run_nothing(
    stack: RunningStack, tmp_path: Path
) -> None:
    cosmetic = {
        "daily.sql": "-- per region\nselect region,\n       COUNT(*) as n,\n"
        "       SUM(amount) as total\n  from sales  /* all */\n group by region\n",
        "transforms.py": (
            "import pyarrow as pa\nimport pyarrow.compute as pc\n\n\n"
            "def monthly(daily: pa.Table) -> pa.Table:\n"
            '    """Totals per region for the month."""\n'
            "    # one row per region\n"
            "    return daily.group_by( 'region' ).aggregate( [ ('total', 'sum') ] )\n"
        ),
    }
    async with stack.client() as hw:
        shop = await started(stack, tmp_path, hw)
        plan = await shop.plan(hw, **cosmetic)
        assert {c["change"] for c in plan["changes"]} == {"unchanged"}
        assert sum(len(c["run"]) for c in plan["changes"]) == 0
        applied = await shop.apply(hw, **cosmetic)
        assert applied["spec_version"] is None
        assert await shop.settle(hw) == []


async def test_an_unchanged_result_stops_the_cascade(stack: RunningStack, tmp_path: Path) -> None:
    # Different code, same output (every amount is positive): daily reruns, nothing downstream.
    same_output = {
        "daily.sql": "SELECT region, count(*) AS n, sum(amount) AS total FROM sales"
        " WHERE amount > 0 GROUP BY region",
    }
    async with stack.client() as hw:
        shop = await started(stack, tmp_path, hw)
        plan = await shop.plan(hw, **same_output)
        assert set(plan["downstream"]) == {"weekly", "busy", "monthly"}  # an upper bound
        await shop.apply(hw, **same_output)
        assert keys(await shop.settle(hw)) == {("daily", d) for d in DAYS}
