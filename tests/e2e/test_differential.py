"""Randomized differential test (hypothesis): random sequences of spec edits (real changes, cosmetic ones
and reverts), landings, re-landings and retractions go through the running services; after every step the
stored content must equal the oracle's from-scratch run (convergence) and the fingerprints
dispatched must be exactly the oracle's cache misses (minimality)."""

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from headwater.core import formats
from headwater.core.spec import parse_pipeline
from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.spec_files import read_document
from tests.fixtures.servers import with_database
from tests.fixtures.stack import stack_settings, started
from tests.oracle import Oracle, evaluate_environments, held_content
from tests.workloads import sales_csv

SPEC = """\
pipeline: diff
sources:
  sales: {}
datasets:
  daily:
    sql: daily.sql
    inputs: {sales: identity}
  rolling:
    sql: rolling.sql
    inputs: {daily: {mapping: window, size: 2}}
  monthly:
    python: monthly.py:monthly
    inputs: {daily: {mapping: rollup, to: month}}
"""
VARIANTS = {
    "daily.sql": [
        "SELECT region, count(*) AS n, sum(amount) AS total FROM sales GROUP BY region",
        "-- cosmetic\nselect region, COUNT(*) as n,\n  SUM(amount) as total from sales group by region",
        # same output as the first (amounts are positive): early cutoff
        "SELECT region, count(*) AS n, sum(amount) AS total FROM sales WHERE amount > 0 GROUP BY region",
        "SELECT region, count(*) AS n, max(amount) AS total FROM sales GROUP BY region",
    ],
    "rolling.sql": [
        "SELECT region, sum(total) AS total FROM daily GROUP BY region",
        "SELECT region, avg(total) AS total FROM daily GROUP BY region",
    ],
    "monthly.py": [
        "import pyarrow as pa\n\n\ndef monthly(daily: pa.Table) -> pa.Table:\n"
        "    return daily.group_by('region').aggregate([('n', 'sum')])\n",
        "import pyarrow as pa\n\n\ndef monthly(daily: pa.Table) -> pa.Table:\n"
        '    """Cosmetic: a docstring and a comment."""\n'
        "    return daily.group_by('region').aggregate([('n', 'sum')])  # per region\n",
        "import pyarrow as pa\n\n\ndef monthly(daily: pa.Table) -> pa.Table:\n"
        "    return daily.group_by('region').aggregate([('total', 'max')])\n",
    ],
}
DAYS = ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-03"]

land = st.tuples(st.just("land"), st.sampled_from(DAYS), st.integers(0, 2))
delete = st.tuples(st.just("delete"), st.sampled_from(DAYS), st.just(0))
edit = st.sampled_from(
    [("edit", f, i) for f, variants in VARIANTS.items() for i in range(len(variants))]
)
steps = st.lists(st.one_of(land, land, edit, delete), min_size=3, max_size=8)


# Each example (of every test below) starts the five services, so no shrinking phase: a failure reports its steps as
# generated (they are short) instead of replaying hundreds of stacks.
def examples(n: int) -> settings:
    """Hypothesis settings of a differential test: `n` examples, generated, never shrunk."""
    return settings(
        phases=[Phase.explicit, Phase.generate],
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.mark.slow
@examples(5)
@given(steps=steps)
def test_random_histories_match_the_oracle(
    steps: list[tuple[str, str, int]],
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    pg_dsn: str,
) -> None:
    root = tmp_path_factory.mktemp("diff")
    asyncio.run(run_history(steps, root, nats_url, pg_dsn))


async def run_history(
    steps: list[tuple[str, str, int]],
    root: Path,
    nats_url: str,
    pg_dsn: str,
    history: "type[History] | None" = None,
) -> None:
    """Run `steps` as a `history` (History by default) on a stack of their own, in a database
    of their own."""
    namespace = f"d{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{namespace}"')
    await admin.close()
    dsn = with_database(pg_dsn, namespace)
    try:
        async with (
            started(root / "state", stack_settings(namespace, nats_url, dsn, None)) as stack,
            HeadwaterClient(load_settings(stack.state_dir)) as hw,
        ):
            await (history or History)(root, hw, dsn).run(steps)
    finally:
        admin = await asyncpg.connect(pg_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{namespace}" WITH (FORCE)')
        await admin.close()


class History:
    def __init__(self, root: Path, hw: HeadwaterClient, dsn: str) -> None:
        self.root, self.hw, self.dsn = root, hw, dsn
        self.files = {name: variants[0] for name, variants in VARIANTS.items()}
        self.sources: dict[str, bytes] = {}
        self.oracle = Oracle()

    async def run(self, steps: list[tuple[str, str, int]]) -> None:
        await self.apply()
        for step in steps:
            if step[0] == "land":
                _, day, salt = step
                data = sales_csv(day, salt)
                self.sources[day] = data
                path = self.root / f"{day}.csv"
                path.write_bytes(data)
                await self.hw.publish("sales", day, path, name="sales.csv")
            elif step[0] == "delete":
                _, day, _ = step
                if day not in self.sources:
                    continue  # nothing to retract
                del self.sources[day]
                await self.hw.delete("sales", day)
            else:
                _, name, variant = step
                self.files[name] = VARIANTS[name][variant]
                await self.apply()
            await self.check(step)

    async def apply(self) -> None:
        (self.root / "pipeline.yaml").write_text(SPEC)
        for name, text in self.files.items():
            (self.root / name).write_text(text)
        await self.hw.apply(self.root / "pipeline.yaml")

    async def check(self, step: tuple[str, str, int]) -> None:
        status = await self.hw.wait(timeout=120)
        pipeline = parse_pipeline(read_document(self.root / "pipeline.yaml"))
        tables = {k: formats.read_table(v, "csv", k) for k, v in self.sources.items()}
        expected = self.oracle.evaluate(pipeline, {"sales": tables})
        held = held_content(status)
        assert held == expected, f"after {step}"
        conn = await asyncpg.connect(self.dsn)
        try:
            ran = [
                r["fingerprint"]
                for r in await conn.fetch("SELECT fingerprint FROM scheduler.tasks")
            ]
        finally:
            await conn.close()
        assert sorted(ran) == sorted(fp for _, _, fp in self.oracle.misses), f"after {step}"


# --- the same histories over a source with two dimensions (issue 13 item 2) ----------------
# Sales per (date, region): the daily SQL per key, a window of 2 along the date per region,
# and a month over every region (a rollup on one dimension, `all` on the other).
DIM_SPEC = """\
pipeline: diffdims
sources:
  sales:
    partitions: {date: daily, region: [north, south]}
datasets:
  daily:
    sql: daily.sql
    inputs: {sales: identity}
  rolling:
    sql: rolling.sql
    inputs: {daily: {dimensions: {date: {mapping: window, size: 2}}}}
  monthly:
    python: monthly.py:monthly
    inputs: {daily: {dimensions: {date: {mapping: rollup, to: month}, region: all}}}
"""
DIM_KEYS = [f"date={day},region={region}" for day in DAYS[:4] for region in ("north", "south")]
dim_land = st.tuples(st.just("land"), st.sampled_from(DIM_KEYS), st.integers(0, 2))
dim_delete = st.tuples(st.just("delete"), st.sampled_from(DIM_KEYS), st.just(0))
dim_steps = st.lists(st.one_of(dim_land, dim_land, edit, dim_delete), min_size=3, max_size=8)


class DimHistory(History):
    """A history whose steps name (date, region) keys, over DIM_SPEC."""

    async def apply(self) -> None:
        (self.root / "pipeline.yaml").write_text(DIM_SPEC)
        for name, text in self.files.items():
            (self.root / name).write_text(text)
        await self.hw.apply(self.root / "pipeline.yaml")


@pytest.mark.slow
@examples(4)
@given(steps=dim_steps)
def test_random_histories_with_two_dimensions_match_the_oracle(
    steps: list[tuple[str, str, int]],
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    pg_dsn: str,
) -> None:
    root = tmp_path_factory.mktemp("diffdims")
    asyncio.run(run_history(steps, root, nats_url, pg_dsn, DimHistory))


# --- environments (issue 13, item 1) ------------------------------------------------------
# Histories that also create and change environments (`apply --env`), promote and drop them,
# beside prod's edits and landings: after every step each environment's state equals the
# oracle's from-scratch run of its own spec, and what ran is exactly the oracle's misses over
# all of them (one cache: an environment computes only what no other already did).
ENVS = ["dev", "exp"]
env_edit = st.sampled_from(
    [
        (f"env:{e}", f, i)
        for e in ENVS
        for f, variants in VARIANTS.items()
        for i in range(len(variants))
    ]
)
env_op = st.tuples(st.sampled_from(["promote", "drop"]), st.sampled_from(ENVS), st.just(0))
env_steps = st.lists(
    st.one_of(land, edit, env_edit, env_edit, env_op, delete), min_size=4, max_size=9
)


@pytest.mark.slow
@examples(4)
@given(steps=env_steps)
def test_random_histories_with_environments_match_the_oracle(
    steps: list[tuple[str, str, int]],
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    pg_dsn: str,
) -> None:
    root = tmp_path_factory.mktemp("diffenv")
    asyncio.run(run_history(steps, root, nats_url, pg_dsn, EnvHistory))


class EnvHistory(History):
    def __init__(self, root: Path, hw: HeadwaterClient, dsn: str) -> None:
        super().__init__(root, hw, dsn)
        self.envs: dict[str, dict[str, str]] = {}  # environment -> its files

    async def run(self, steps: list[tuple[str, str, int]]) -> None:
        await self.apply()
        for step in steps:
            kind, name, variant = step
            if kind.startswith("env:"):
                env = kind.removeprefix("env:")
                files = dict(self.envs.get(env, self.files))
                files[name] = VARIANTS[name][variant]
                self.envs[env] = files
                await self.hw.apply(self.write(env, files), env=env)
            elif kind == "promote":
                if name not in self.envs:
                    continue
                await self.hw.promote(name)
                self.files = dict(self.envs[name])
                self.write("prod", self.files)
            elif kind == "drop":
                if name not in self.envs:
                    continue
                await self.hw.drop_env(name)
                del self.envs[name]
            elif kind == "edit":
                self.files[name] = VARIANTS[name][variant]
                await self.apply()
            else:
                await self.land_or_delete(step)
            await self.check_all(step)

    def write(self, env: str, files: dict[str, str]) -> Path:
        folder = self.root / env
        folder.mkdir(exist_ok=True)
        (folder / "pipeline.yaml").write_text(SPEC)
        for file, text in files.items():
            (folder / file).write_text(text)
        return folder / "pipeline.yaml"

    async def apply(self) -> None:
        await self.hw.apply(self.write("prod", self.files))

    async def land_or_delete(self, step: tuple[str, str, int]) -> None:
        kind, day, salt = step
        if kind == "land":
            data = sales_csv(day, salt)
            self.sources[day] = data
            path = self.root / f"{day}.csv"
            path.write_bytes(data)
            await self.hw.publish("sales", day, path, name="sales.csv")
        elif day in self.sources:
            del self.sources[day]
            await self.hw.delete("sales", day)

    async def check_all(self, step: tuple[str, str, int]) -> None:
        await self.hw.wait_idle(timeout=120)
        pipelines = {
            env: parse_pipeline(read_document(self.root / env / "pipeline.yaml"))
            for env in ["prod", *self.envs]
        }
        tables = {k: formats.read_table(v, "csv", k) for k, v in self.sources.items()}
        expected = evaluate_environments(self.oracle, pipelines, {"sales": tables})
        for env in pipelines:
            status = await self.hw.status(None if env == "prod" else env)
            assert held_content(status) == expected[env], f"{env} after {step}"
        conn = await asyncpg.connect(self.dsn)
        try:
            ran = [
                r["fingerprint"]
                for r in await conn.fetch("SELECT fingerprint FROM scheduler.tasks")
            ]
        finally:
            await conn.close()
        assert sorted(ran) == sorted(fp for _, _, fp in self.oracle.misses), f"after {step}"
