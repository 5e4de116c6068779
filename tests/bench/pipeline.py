"""End-to-end throughput of the embedded stack (its own nats-server and Postgres, the five
services as processes): land N days of the real 2013 flights, time until every derived
partition is ready, then time an incremental landing and a code change (smart backfill)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.embedded import EmbeddedStack, StackSettings
from headwater.sdk.example import flights, write_day_csv

DAYS = int(os.environ.get("HEADWATER_BENCH_DAYS", "60"))
SPEC = """\
pipeline: bench
sources:
  flights: {}
datasets:
  by_origin:
    sql: SELECT origin, count(*) AS n, avg(dep_delay) AS delay FROM flights GROUP BY origin
    inputs: {flights: identity}
  weekly:
    sql: SELECT origin, sum(n) AS n FROM by_origin GROUP BY origin
    inputs: {by_origin: {mapping: window, size: 7}}
  monthly:
    sql: SELECT origin, sum(n) AS n FROM by_origin GROUP BY origin
    inputs: {by_origin: {mapping: rollup, to: month}}
"""


def days(n: int) -> list[str]:
    import datetime

    start = datetime.date(2013, 1, 1)
    return [(start + datetime.timedelta(days=i)).isoformat() for i in range(n)]


async def _run(root: Path) -> dict[str, object]:
    (root / "pipeline.yaml").write_text(SPEC)
    table = flights()
    files = [write_day_csv(day, root / "days", table) for day in days(DAYS + 1)]
    stack = EmbeddedStack(
        root / "state",
        StackSettings(executors=2),
        service_env={"HEADWATER_LOG_LEVEL": "WARNING"},
        log_to_files=True,
    )
    stack.start()
    try:
        async with HeadwaterClient(load_settings(stack.state_dir)) as hw:
            await hw.ready()
            await hw.apply(root / "pipeline.yaml")
            start = time.perf_counter()
            for day, path in zip(days(DAYS), files, strict=False):
                await hw.publish("flights", day, path)
            status = await hw.wait(timeout=1800)
            initial = time.perf_counter() - start
            derived = sum(1 for p in status["partitions"] if p["dataset"] != "flights")

            start = time.perf_counter()
            await hw.publish("flights", days(DAYS + 1)[-1], files[-1])
            await hw.wait(timeout=600)
            incremental = time.perf_counter() - start

            (root / "pipeline.yaml").write_text(SPEC.replace("avg(dep_delay)", "max(dep_delay)"))
            start = time.perf_counter()
            await hw.apply(root / "pipeline.yaml")
            await hw.wait(timeout=1800)
            backfill = time.perf_counter() - start
    finally:
        stack.stop()
    return {
        "source partitions": DAYS,
        "derived partitions": derived,
        "initial run s": round(initial, 2),
        "derived partitions/s": round(derived / initial, 1),
        "one new day s": round(incremental, 2),
        "code change (backfill) s": round(backfill, 2),
    }


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as tmp:
        return asyncio.run(_run(Path(tmp)))
