"""Environments through the running services (issue 13, item 1): an environment with a changed
transform runs only what the change affects (the oracle's misses for its spec), prod is
untouched until `promote`, which runs nothing; a landing is seen by every environment; `env
list`, `env diff` and `env drop`, which deletes only the objects nothing else references."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headwater.core import formats
from headwater.core.spec import parse_pipeline
from headwater.runtime.objectstore import open_store
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.spec_files import read_document
from tests.e2e.conftest import RunningStack
from tests.oracle import Oracle, held_content
from tests.workloads import sales_csv

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize("stack", ["local"], indirect=True)]

DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
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
  busy:
    sql: busy.sql
    inputs: {daily: identity}
"""
FILES = {
    "daily.sql": "SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region",
    "weekly.sql": "SELECT region, sum(total) AS total FROM daily GROUP BY region",
    "busy.sql": "SELECT region, n > 2 AS busy FROM daily",
}
# A real change of `weekly`: its partitions run, nothing else.
WEEKLY_MAX = {"weekly.sql": "SELECT region, max(total) AS total FROM daily GROUP BY region"}
# A real change of `daily` (a different total): daily, and what reads it, run.
DAILY_MAX = {
    "daily.sql": "SELECT region, count(*) AS n, max(amount) AS total FROM sales GROUP BY region"
}


@dataclass
class Shop:
    """Each environment's spec folder and the oracle (one cache: fingerprints are shared)."""

    stack: RunningStack
    root: Path
    sources: dict[str, bytes] = field(default_factory=dict)
    oracle: Oracle = field(default_factory=Oracle)
    specs: dict[str, dict[str, str]] = field(default_factory=dict)  # env -> its files

    def write(self, env: str, files: dict[str, str]) -> Path:
        folder = self.root / env
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pipeline.yaml").write_text(SPEC)
        for name, text in {**FILES, **files}.items():
            (folder / name).write_text(text)
        self.specs[env] = {**FILES, **files}
        return folder / "pipeline.yaml"

    async def land(self, hw: HeadwaterClient, day: str, salt: int = 0) -> None:
        data = sales_csv(day, salt)
        self.sources[day] = data
        path = self.root / f"sales-{day}.csv"
        path.write_bytes(data)
        await hw.publish("sales", day, path, name="sales.csv")

    def expected(self, env: str) -> dict[tuple[str, str], str]:
        pipeline = parse_pipeline(read_document(self.root / env / "pipeline.yaml"))
        tables = {k: formats.read_table(v, "csv", k) for k, v in self.sources.items()}
        return self.oracle.evaluate(pipeline, {"sales": tables})

    async def settle(self, hw: HeadwaterClient) -> list[tuple[str, str, str]]:
        """Wait; every environment's state equals the oracle's run of its own spec, and what
        ran is exactly the oracle's misses. Returns the misses new since the last call."""
        await hw.wait_idle(timeout=180)
        before = len(self.oracle.misses)
        for env in sorted(self.specs):
            status = await hw.status(None if env == "prod" else env)
            assert held_content(status) == self.expected(env), env
            assert all(p["state"] == "ready" for p in status["partitions"]), env
        assert sorted(await self.ran()) == sorted(fp for _, _, fp in self.oracle.misses)
        return self.oracle.misses[before:]

    async def ran(self) -> list[str]:
        conn = await asyncpg.connect(self.stack.settings.pg_dsn)
        try:
            rows = await conn.fetch("SELECT fingerprint FROM scheduler.tasks")
        finally:
            await conn.close()
        return [r["fingerprint"] for r in rows]

    def cli(self, *args: str) -> Any:
        return json.loads(self.stack.cli(*args, "--json").stdout)


def keys(misses: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
    return {(d, k) for d, k, _ in misses}


async def test_an_environment_runs_only_its_change_and_promote_runs_nothing(
    stack: RunningStack, tmp_path: Path
) -> None:
    shop = Shop(stack, tmp_path / "shop")
    async with stack.client() as hw:
        await hw.apply(shop.write("prod", {}))
        for day in DAYS:
            await shop.land(hw, day)
        assert len(await shop.settle(hw)) == 3 * len(DAYS)
        prod_before = held_content(await hw.status())

        # A changed transform in `dev`: `plan --env` says only its partitions would run ...
        dev_spec = str(shop.write("dev", WEEKLY_MAX))
        planned = shop.cli("plan", "--env", "dev", dev_spec)
        runs = {c["dataset"]: sorted(c["run"]) for c in planned["changes"] if c["run"]}
        assert runs == {"weekly": DAYS}, planned
        assert not any(planned["downstream"].values()), planned
        # ... and applying it runs exactly those; prod is untouched.
        applied = shop.cli("apply", "--env", "dev", dev_spec)
        assert applied["env"] == "dev"
        assert {c["dataset"]: c["change"] for c in applied["changes"]}["weekly"] == "changed"
        ran = await shop.settle(hw)
        assert keys(ran) == {("weekly", d) for d in DAYS}
        assert held_content(await hw.status()) == prod_before
        # `plan --env` compares with the environment's definitions, not prod's: prod's spec is
        # no change for prod, and for dev a change of `weekly` back, which reuses prod's outputs.
        prod_spec = str(shop.root / "prod" / "pipeline.yaml")
        assert [
            c for c in shop.cli("plan", prod_spec)["changes"] if c["change"] != "unchanged"
        ] == []
        back = shop.cli("plan", "--env", "dev", prod_spec)
        changed = {c["dataset"]: c for c in back["changes"] if c["change"] != "unchanged"}
        assert set(changed) == {"weekly"}, back
        assert (changed["weekly"]["run"], sorted(changed["weekly"]["reuse"])) == ([], DAYS)

        # Unchanged datasets are prod's rows, not copies: dev holds rows only for `weekly`.
        conn = await asyncpg.connect(stack.settings.pg_dsn)
        try:
            own = await conn.fetch(
                "SELECT DISTINCT dataset FROM scheduler.partitions WHERE env = 'dev'"
            )
        finally:
            await conn.close()
        assert {r["dataset"] for r in own} == {"weekly"}

        # A landing is seen by prod and dev: each computes what its own spec needs.
        await shop.land(hw, "2024-01-05")
        ran = await shop.settle(hw)
        assert sorted((d, k) for d, k, _ in ran) == [
            ("busy", "2024-01-05"),
            ("daily", "2024-01-05"),  # once, for both
            ("weekly", "2024-01-05"),  # prod's code
            ("weekly", "2024-01-05"),  # and dev's
        ]

        # `why --env` and `lineage --env` answer for the environment's own partition.
        why = shop.cli("why", "weekly", "2024-01-05", "--env", "dev")
        current = [m for m in why["materializations"] if m["current"]]
        assert len(current) == 1
        assert (
            current[0]["code_sha"]
            == parse_pipeline(read_document(shop.root / "dev" / "pipeline.yaml"))
            .datasets["weekly"]
            .code_sha
        )
        lineage = shop.cli("lineage", "weekly", "2024-01-05", "--env", "dev")
        made = {
            e["fingerprint"]
            for e in lineage["upstream"]
            if (e["output_dataset"], e["output_key"]) == ("weekly", "2024-01-05")
        }
        assert made == {current[0]["fingerprint"]}

        listed = {e["env"]: e for e in shop.cli("env", "list")}
        assert listed["dev"]["differ"] == 1
        assert listed["prod"]["differ"] == 0
        diff = shop.cli("env", "diff", "prod", "dev")
        assert [d["dataset"] for d in diff["datasets"]] == ["weekly"]
        prod_now, dev_now = shop.expected("prod"), shop.expected("dev")
        assert {(p["dataset"], p["partition_key"]) for p in diff["partitions"]} == {
            ref for ref in prod_now if prod_now[ref] != dev_now[ref]
        }

        # Promote: prod takes dev's definitions and adopts what dev computed; nothing runs.
        tasks_before = len(await shop.ran())
        promoted = shop.cli("promote", "dev")
        assert [c["dataset"] for c in promoted["changes"]] == ["weekly"]
        shop.write("prod", WEEKLY_MAX)
        assert await shop.settle(hw) == []
        assert len(await shop.ran()) == tasks_before
        diff = shop.cli("env", "diff", "prod", "dev")
        assert diff["datasets"] == []
        assert diff["partitions"] == []


async def test_drop_deletes_only_what_nothing_else_references(
    stack: RunningStack, tmp_path: Path
) -> None:
    shop = Shop(stack, tmp_path / "shop")
    store = open_store(stack.settings)
    bucket = stack.settings.data_bucket
    async with stack.client() as hw:
        await hw.apply(shop.write("prod", {}))
        for day in DAYS:
            await shop.land(hw, day)
        await shop.settle(hw)
        prod = await hw.status()
        prod_objects = {p["object_key"] for p in prod["partitions"]}

        # Two environments with the same change of `daily`: the second computes nothing
        # (fingerprints are shared), and reads what the first computed.
        await hw.apply(shop.write("exp", DAILY_MAX), env="exp")
        assert keys(await shop.settle(hw)) == {
            (ds, d) for ds in ("daily", "weekly", "busy") for d in DAYS
        }
        await hw.apply(shop.write("exp2", DAILY_MAX), env="exp2")
        assert await shop.settle(hw) == []
        exp = await hw.status("exp")
        theirs = {p["object_key"] for p in exp["partitions"]} - prod_objects
        assert theirs  # `busy` gives the same data as prod's: its objects are prod's

        # Dropping `exp` deletes nothing: `exp2` references every object it made.
        dropped = shop.cli("env", "drop", "exp")
        assert dropped["objects_deleted"] == 0
        assert dropped["partitions"] > 0
        del shop.specs["exp"]
        for key in theirs | prod_objects:
            assert await store.exists(bucket, key), key
        await shop.settle(hw)

        # Dropping `exp2` too deletes exactly the objects only they made; prod's stay.
        dropped = shop.cli("env", "drop", "exp2")
        del shop.specs["exp2"]
        assert dropped["objects_deleted"] == len(theirs)
        for key in theirs:
            assert not await store.exists(bucket, key), key
        for key in prod_objects:
            assert await store.exists(bucket, key), key
        assert held_content(await hw.status()) == held_content(prod)
        assert [e["env"] for e in shop.cli("env", "list")] == ["prod"]

        # The same change applied again computes again what was deleted (and only that), and
        # what it reads is checked against its SHA as ever.
        await hw.apply(shop.write("exp3", DAILY_MAX), env="exp3")
        await hw.wait_idle(timeout=180)
        status = await hw.status("exp3")
        assert held_content(status) == shop.expected("exp3")
        for p in status["partitions"]:
            assert await store.exists(bucket, p["object_key"]), p
