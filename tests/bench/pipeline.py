"""The embedded stack end to end (its own nats-server and Postgres, the five services as
processes): the flights graph over the real 2013 flights and its code-change backfill, the same
graph over trivial inputs against raw nats-py JetStream throughput (the reference, same run),
orchestration overhead per task, days landing while others run, a trickle feed, and the peak
memory of each service."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pyarrow as pa
import pyarrow.csv as pacsv

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.embedded import EmbeddedStack, StackSettings
from headwater.sdk.example import flights, write_day_csv
from headwater.sdk.servers import NatsServer
from tests.bench._figures import BenchSizes, Figure, rss_peak_mb

# The flights graph: per day, per 7-day window, per month and over everything; 365 days make
# 365 + 365 + 365 + 12 + 1 = 1,108 steps (with the landings), and a code change of the daily
# step re-runs the 743 derived partitions. The daily step is the slice pipeline's SQL
# (tests/e2e/slice, the example before issue 10).
SLICE = Path(__file__).resolve().parents[1] / "e2e" / "slice" / "pipeline.yaml"
GRAPH = """\
pipeline: bench
sources:
  flights: {{}}
datasets:
  delays_by_origin:
    sql: {daily}
    inputs: {{flights: identity}}
  weekly:
    sql: SELECT origin, sum(flights) AS flights, avg(avg_dep_delay) AS delay FROM delays_by_origin GROUP BY origin
    inputs: {{delays_by_origin: {{mapping: window, size: 7}}}}
  monthly:
    sql: SELECT origin, sum(flights) AS flights, avg(avg_dep_delay) AS delay FROM delays_by_origin GROUP BY origin
    inputs: {{delays_by_origin: {{mapping: rollup, to: month}}}}
  total:
    sql: SELECT origin, sum(flights) AS flights, avg(avg_dep_delay) AS delay FROM delays_by_origin GROUP BY origin
    inputs: {{delays_by_origin: all}}
"""
EXECUTORS = 2
# The transforms' own work, perfectly spread, would take their summed CPU time over the cores:
# the overhead per task is the wall time beyond that (the (wall - summed transform time)
# / tasks, with the transforms run in parallel).
CORES = os.cpu_count() or 1
TRIVIAL_DAILY = "SELECT origin, count(*) AS flights, avg(dep_delay) AS avg_dep_delay FROM flights GROUP BY origin"


def days(n: int, first: int = 0) -> list[str]:
    start = datetime.date(2013, 1, 1)
    return [(start + datetime.timedelta(days=i)).isoformat() for i in range(first, first + n)]


def example_sql() -> str:
    return " ".join(
        line
        for line in (SLICE.parent / "sql" / "delays_by_origin.sql").read_text().splitlines()
        if not line.startswith("--")
    )


def graph(daily_sql: str) -> str:
    return GRAPH.format(daily=json.dumps(daily_sql))


def tiny_csv(day: str, directory: Path) -> Path:
    """Three rows: what a trivial step reads."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"tiny-{day}.csv"
    table = pa.table({"origin": ["EWR", "JFK", "LGA"], "dep_delay": [1, 2, int(day[-2:])]})
    pacsv.write_csv(table, path)
    return path


# --- the reference: raw JetStream ------------------------------------------------------------
async def raw_jetstream(url: str, messages: int, window: int = 100) -> float:
    """Messages per second through one JetStream stream with plain nats-py, on a nats-server
    configured as the embedded one (file store, fsync always): publish with `window`
    acknowledged publishes in flight, then pull in batches of `window` and ack each."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="REF", subjects=["ref.>"])
    sub = await js.pull_subscribe("ref.x", durable="ref")
    body = b"x" * 300  # about the size of a task message
    start = time.perf_counter()
    for first in range(0, messages, window):
        await asyncio.gather(
            *(
                js.publish("ref.x", body, headers={"Nats-Msg-Id": str(i)})
                for i in range(first, min(first + window, messages))
            )
        )
    done = 0
    while done < messages:
        for msg in await sub.fetch(min(window, messages - done), timeout=10):
            await msg.ack()
            done += 1
    await nc.flush()
    seconds = time.perf_counter() - start
    await nc.close()
    return messages / seconds


# --- a stack and what its scheduler recorded ---------------------------------------------------
@contextlib.asynccontextmanager
async def stack(root: Path, spec: str) -> AsyncIterator[tuple[EmbeddedStack, HeadwaterClient]]:
    (root / "pipeline.yaml").write_text(spec)
    s = EmbeddedStack(
        root / "state",
        StackSettings(executors=EXECUTORS),
        service_env={"HEADWATER_LOG_LEVEL": "WARNING"},
        log_to_files=True,
    )
    s.start()
    try:
        async with HeadwaterClient(load_settings(s.state_dir)) as hw:
            await hw.ready(timeout=120)
            await hw.apply(root / "pipeline.yaml")
            yield s, hw
    finally:
        s.stop()


async def last_commit(dsn: str) -> float:
    """When the scheduler last recorded a materialization (epoch seconds): the end of a run,
    without the client's polling interval."""
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT extract(epoch FROM max(created_at)) FROM scheduler.materializations"
        )
    finally:
        await conn.close()
    return float(value)


async def runs_since(dsn: str, since: float) -> tuple[int, float]:
    """Derived partitions computed since `since` and the CPU time their transforms took (s:
    what the executors' workers spent on them, `cpu_ms`)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*), coalesce(sum(cpu_ms), 0) FROM scheduler.materializations"
            " WHERE code_sha IS NOT NULL AND created_at >= to_timestamp($1)",
            since,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), float(row[1]) / 1000


async def land(hw: HeadwaterClient, files: dict[str, Path], gap_s: float = 0) -> float:
    """Publish each day; return when the first was published (epoch seconds)."""
    start = time.time()
    for day, path in files.items():
        await hw.publish("flights", day, path)
        if gap_s:
            await asyncio.sleep(gap_s)
    return start


@contextlib.contextmanager
def profiled(stack: EmbeddedStack, directory: Path | None, label: str) -> Iterator[None]:
    """With HEADWATER_BENCH_PROFILE_DIR set: py-spy records every service while the block runs
    (py-spy is not needed otherwise)."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if directory is None or spy is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                *(spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "20"),
                *("--output", str(directory / f"{label}-{name}.txt"), "--subprocesses"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, proc in stack.processes.items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(2)  # SIGINT: py-spy writes what it recorded
        for spy in spies:
            spy.wait(30)


# --- the runs --------------------------------------------------------------------------------
async def trivial(root: Path, sizes: BenchSizes, ref_per_s: float) -> list[Figure]:
    files = {d: tiny_csv(d, root / "days") for d in days(sizes.trivial_days)}
    async with stack(root, graph(TRIVIAL_DAILY)) as (s, hw):
        start = await land(hw, files)
        await hw.wait(timeout=1800)
        wall = await last_commit(s.admin_dsn) - start
        runs, _ = await runs_since(s.admin_dsn, start)
    steps = runs + len(files)
    return [
        Figure(
            "pipeline",
            f"partition-steps/s, trivial transforms ({len(files)} days: {steps:,} steps)",
            steps / wall,
            "steps/s",
            reference="raw nats-py JetStream publish+pull+ack (msgs/s)",
            reference_value=ref_per_s,
            target=">= 0.03",
        )
    ]


async def real_flights(root: Path, sizes: BenchSizes, profile: Path | None) -> list[Figure]:
    table = flights()
    files = {d: write_day_csv(d, root / "days", table) for d in days(sizes.flights_days)}
    daily = example_sql()
    async with stack(root, graph(daily)) as (s, hw):
        with profiled(s, profile, "flights"):
            start = await land(hw, files)
            await hw.wait(timeout=1800)
        wall = await last_commit(s.admin_dsn) - start
        runs, transform_cpu_s = await runs_since(s.admin_dsn, start)

        (root / "pipeline.yaml").write_text(graph(daily.replace(", 2)", ", 3)")))
        with profiled(s, profile, "backfill"):
            changed = time.time()
            await hw.apply(root / "pipeline.yaml")
            await hw.wait(timeout=1800)
        backfill = await last_commit(s.admin_dsn) - changed
        backfill_runs, _ = await runs_since(s.admin_dsn, changed)
        rss = {name: rss_peak_mb(proc.pid) for name, proc in sorted(s.processes.items())}
        held = len((await hw.status())["partitions"])
    n = len(files)
    full = n == 365
    figures = [
        Figure(
            "pipeline",
            f"flights graph, {n} days ({n + runs:,} steps), landing to all ready",
            wall,
            "s",
            target="<= 8" if full else None,
        ),
        Figure(
            "pipeline",
            f"its code-change backfill ({backfill_runs:,} runs)",
            backfill,
            "s",
            target="<= 5" if full else None,
        ),
        Figure(
            "pipeline",
            f"orchestration overhead per task ((wall - summed transform CPU time / {CORES}"
            " cores) / tasks)",
            (wall - transform_cpu_s / CORES) / runs * 1000,
            "ms",
            target="<= 10",
            note=f"transform CPU time per task: {transform_cpu_s / runs * 1000:.1f} ms",
        ),
    ]
    figures += [
        Figure("pipeline", f"peak RSS of {name} ({held:,} partitions held)", mb, "MB")
        for name, mb in rss.items()
    ]
    return figures


async def concurrent(root: Path, sizes: BenchSizes) -> list[Figure]:
    """Days landing one every gap while earlier ones run; then a trickle, one day at a time."""
    files = {d: tiny_csv(d, root / "days") for d in days(sizes.concurrent_days)}
    trickle = {d: tiny_csv(d, root / "days") for d in days(sizes.trickle_days, len(files))}
    async with stack(root, graph(TRIVIAL_DAILY)) as (s, hw):
        start = await land(hw, files, sizes.concurrent_gap_s)
        await hw.wait(timeout=1800)
        needless = await needless_reruns(s.admin_dsn, start)
        quiet = time.time()
        for day, path in trickle.items():
            await land(hw, {day: path})
            await hw.wait(timeout=600)
        extra = await extra_runs(s.admin_dsn, quiet, ("monthly", "total"))
    return [
        Figure(
            "pipeline",
            f"{len(files)} days landing every {sizes.concurrent_gap_s * 1000:.0f} ms: output"
            " partitions run again though all their inputs were there when their task started",
            needless,
            "partitions",
            target="<= 0",
        ),
        Figure(
            "pipeline",
            f"trickle feed ({len(trickle)} days one at a time): extra runs of month and `all`"
            " partitions (runs beyond one per partition touched)",
            extra,
            "runs",
        ),
    ]


async def needless_reruns(dsn: str, since: float) -> int:
    """Output partitions with a second run whose first task was requested when every source
    partition it (transitively) reads had already landed, as it reads them in the end."""
    conn = await asyncpg.connect(dsn)
    try:
        landed = {
            (r["dataset"], r["partition_key"]): r["at"]
            for r in await conn.fetch(
                "SELECT dataset, partition_key, min(created_at) AS at"
                " FROM scheduler.materializations WHERE code_sha IS NULL GROUP BY 1, 2"
            )
        }
        current = {
            (r["dataset"], r["partition_key"]): json.loads(r["inputs"])
            for r in await conn.fetch(
                "SELECT p.dataset, p.partition_key, m.inputs FROM scheduler.partitions p"
                " JOIN scheduler.materializations m ON m.fingerprint = p.fingerprint"
            )
        }
        runs = await conn.fetch(
            "SELECT dataset, partition_key, sum(executions) AS runs, min(requested_at) AS first"
            " FROM scheduler.tasks WHERE requested_at >= to_timestamp($1) GROUP BY 1, 2",
            since,
        )
    finally:
        await conn.close()

    def sources(part: tuple[str, str]) -> set[tuple[str, str]]:
        if not current.get(part):  # a source (or a partition gone): it reads nothing
            return {part}
        out: set[tuple[str, str]] = set()
        for ref in current[part]:
            out |= sources((ref["dataset"], ref["partition_key"]))
        return out

    needless = 0
    for r in runs:
        if r["runs"] > 1:
            read = sources((r["dataset"], r["partition_key"]))
            if all(p in landed and landed[p] <= r["first"] for p in read):
                needless += 1
    return needless


async def extra_runs(dsn: str, since: float, datasets: tuple[str, ...]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT coalesce(sum(runs - 1), 0) FROM (SELECT sum(executions) AS runs"
            " FROM scheduler.tasks WHERE requested_at >= to_timestamp($1)"
            " AND dataset = ANY($2::text[]) GROUP BY dataset, partition_key) r",
            since,
            list(datasets),
        )
    finally:
        await conn.close()
    return int(value)


async def _run(root: Path, sizes: BenchSizes) -> list[Figure]:
    with NatsServer(root / "ref-nats", log_path=root / "ref-nats.log") as server:
        ref_per_s = await raw_jetstream(server.url, sizes.nats_messages)
    print(f"  raw JetStream: {ref_per_s:,.0f} msgs/s", flush=True)
    profile = os.environ.get("HEADWATER_BENCH_PROFILE_DIR")
    figures = await trivial(root / "trivial", sizes, ref_per_s)
    print(f"  trivial: {figures[-1]}", flush=True)
    figures += await real_flights(root / "flights", sizes, Path(profile) if profile else None)
    print(f"  flights: {figures[-3:]}", flush=True)
    figures += await concurrent(root / "concurrent", sizes)
    return figures


def run(sizes: BenchSizes) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as tmp:
        return asyncio.run(_run(Path(tmp), sizes))
