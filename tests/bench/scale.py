"""The scheduler at scale, in process, on a real Postgres and nats-server, with N partitions
of state written directly (as tests/integration/test_constant_cost.py does): the reaction to
one landing at N held against the same at a small N, `plan` and apply of a code change, and a
scheduler-only reconcile pass over a series of N (time and memory). Each N runs in a process of
its own (`python -m tests.bench.scale N`), so its peak memory is its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from headwater.contracts import CodeChanged, PartitionLanded
from headwater.contracts.rpc import ImpactRequest
from headwater.core import hashing
from headwater.sdk.servers import NatsServer, PostgresServer
from headwater.services.scheduler.handlers import Scheduler
from tests.bench._figures import BenchSizes, Figure
from tests.integration.scheduler_harness import definitions, scheduler, sha


def _key(i: int) -> str:
    return f"k{i:07d}"


async def hold(conn: asyncpg.Connection, keys: int) -> None:
    """`keys` keys of every dataset, ready and consistent: each derived partition's fingerprint
    is the one the reconciler would want, so a reconcile pass finds nothing to run."""
    defs = {d.name: d for d in definitions()}
    parts: list[tuple[Any, ...]] = []
    mats: list[tuple[Any, ...]] = []
    tasks: list[tuple[Any, ...]] = []

    def add(ds: str, key: str, fp: str, data: str, inputs: str) -> None:
        parts.append((ds, key, "ready", fp, fp, data, f"{data}.parquet", 1, 1, 1))
        mats.append((fp, hashing.FINGERPRINT_VERSION, ds, key, data, f"{data}.parquet", 1, 1))
        mats[-1] += (inputs, None if ds == "sales" else defs[ds].code_sha)
        if ds != "sales":
            tasks.append((fp, ds, key, "succeeded", 1))

    previous: str | None = None
    for i in range(keys):
        k = _key(i)
        s = sha(f"sales/{k}")
        add("sales", k, s, s, "[]")
        d = sha(f"daily/{k}")
        add("daily", k, hashing.fingerprint(defs["daily"].code_sha, [("sales", k, s)]), d, "[]")
        window = [("daily", k, d)] + ([("daily", _key(i - 1), previous)] if previous else [])
        p = sha(f"pairs/{k}")
        add("pairs", k, hashing.fingerprint(defs["pairs"].code_sha, window), p, "[]")
        previous = d
    await conn.copy_records_to_table(
        "partitions",
        schema_name="scheduler",
        records=parts,
        columns=[
            "dataset",
            "partition_key",
            "state",
            "fingerprint",
            "desired_fingerprint",
            "data_sha",
            "object_key",
            "rows",
            "bytes",
            "source_version",
        ],
    )
    await conn.copy_records_to_table(
        "materializations",
        schema_name="scheduler",
        records=mats,
        columns=[
            "fingerprint",
            "fingerprint_version",
            "dataset",
            "partition_key",
            "data_sha",
            "object_key",
            "rows",
            "bytes",
            "inputs",
            "code_sha",
        ],
    )
    await conn.copy_records_to_table(
        "tasks",
        schema_name="scheduler",
        records=tasks,
        columns=["fingerprint", "dataset", "partition_key", "state", "executions"],
    )
    await conn.execute("ANALYZE")


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")


class _Timed:
    """Runs one scheduler call with a time cap; records seconds, or the cap when it ran over."""

    def __init__(self, cap_s: float, out: dict[str, Any]) -> None:
        self.cap_s = cap_s
        self.out = out

    async def __call__(self, name: str, coro: Any) -> float | None:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(coro, self.cap_s)
        except TimeoutError:
            self.out[name] = {"timeout_s": self.cap_s}
            return None
        seconds = time.perf_counter() - start
        self.out[name] = {"s": seconds}
        return seconds


async def measure(
    held: int, *, nats_url: str, dsn: str, reactions: int, steps: list[str], cap_s: float
) -> dict[str, Any]:
    """Build `held` partitions of state in a fresh database and run `steps` on it."""
    keys = max(held // 3, 2)
    name = f"scale{held}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    database = dsn.rsplit("/", 1)[0] + f"/{name}"
    async with scheduler(database, nats_url, name) as app:
        return await _measure_on(app, keys, reactions=reactions, steps=steps, cap_s=cap_s)


async def _measure_on(
    app: Scheduler, keys: int, *, reactions: int, steps: list[str], cap_s: float
) -> dict[str, Any]:
    """The steps of `measure` on a scheduler whose database holds nothing yet."""
    app.task_resend_s = 1e9
    pool, res = app.res.pool, app.res
    for d in definitions():
        await app.on_code_changed(CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d))
    start = time.perf_counter()
    async with pool.acquire() as conn:
        await hold(conn, keys)
    out: dict[str, Any] = {"held": keys * 3, "write_state_s": time.perf_counter() - start}
    timed = _Timed(cap_s, out)

    if "reaction" in steps:
        decisions, reacts = [], []
        for i in range(reactions):
            new = f"{_key(keys // 2 + i)}-b"  # in the middle of what is held
            data = sha(f"sales/{new}")
            t0 = time.perf_counter()
            await app.on_partition_landed(
                PartitionLanded(
                    event_id=f"landed:{new}",
                    dataset="sales",
                    partition_key=new,
                    data_sha=data,
                    fingerprint=data,
                    object_key=f"{data}.parquet",
                    rows=1,
                    bytes=1,
                    source_version=1,
                )
            )
            decisions.append(time.perf_counter() - t0)
            # The executor's answers, as they arrive: each derived partition's result in
            # turn, until the new key's derived partitions are all ready.
            for ds in ("daily", "pairs"):
                async with pool.acquire() as conn:
                    fp = await conn.fetchval(
                        "SELECT desired_fingerprint FROM scheduler.partitions"
                        " WHERE dataset = $1 AND partition_key = $2 AND state = 'queued'",
                        ds,
                        new,
                    )
                if fp is None:
                    raise RuntimeError(f"{ds}/{new} was not queued after the landing")
                out_sha = sha(f"{ds}/{new}")
                await app.on_partition_landed(
                    PartitionLanded(
                        event_id=f"result:{fp}",
                        dataset=ds,
                        partition_key=new,
                        data_sha=out_sha,
                        fingerprint=fp,
                        code_sha=sha(ds),
                        object_key=f"{out_sha}.parquet",
                        rows=1,
                        bytes=1,
                    )
                )
            reacts.append(time.perf_counter() - t0)
        async with pool.acquire() as conn:
            states = await conn.fetch(
                "SELECT state, count(*) FROM scheduler.partitions WHERE partition_key LIKE '%-b'"
                " GROUP BY state"
            )
        if dict(states) != {"ready": reactions * 3}:
            raise RuntimeError(f"after the reactions: {dict(states)}")
        out["decision_s"] = statistics.median(decisions)
        out["reaction_s"] = statistics.median(reacts)

    if "reconcile" in steps:  # the timer's pass over everything: a scheduler-only run
        base = _rss_mb("VmRSS")
        _reset_peak()
        await timed("reconcile", app.reconcile_all())
        out["reconcile"]["rss_mb"] = _rss_mb("VmHWM") - base

    if "change" in steps:
        changed = definitions("daily, changed")[1]
        await timed("plan", app.impact(ImpactRequest(datasets=[changed])))
        committed: list[float] = []
        flush = res.flush

        async def timed_flush() -> None:  # the apply's transaction has committed by now
            committed.append(time.perf_counter())
            await flush()

        res.flush = timed_flush  # type: ignore[method-assign]
        t0 = time.perf_counter()
        event = CodeChanged(event_id="code:daily:2", spec_version=2, dataset=changed)
        if await timed("apply", app.on_code_changed(event)) is not None:
            out["apply"]["decided_s"] = committed[0] - t0
            async with pool.acquire() as conn:
                out["apply"]["tasks"] = await conn.fetchval(
                    "SELECT count(*) FROM scheduler.tasks WHERE state = 'requested'"
                )
                out["apply"]["unpublished"] = await conn.fetchval(
                    "SELECT count(*) FROM scheduler.outbox WHERE published_at IS NULL"
                )
    out["rss_peak_mb"] = _rss_mb("VmHWM")
    return out


def _child(held: int, nats_url: str, dsn: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Run `measure` in a process of its own; a run over its cap is abandoned, not waited for."""
    argv = [sys.executable, "-m", "tests.bench.scale", json.dumps([held, nats_url, dsn, opts])]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"scale child for {held} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    print(f"  scale {held:,}: {result}", flush=True)
    return result


def _seconds(result: dict[str, Any], step: str) -> tuple[float, str | None]:
    r = result.get(step, {})
    if "s" in r:
        return r["s"], None
    return r.get("timeout_s", math.nan), f"did not finish within {r.get('timeout_s')} s (stopped)"


def run(sizes: BenchSizes) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="headwater-bench-scale-") as tmp:
        root = Path(tmp)
        with (
            NatsServer(root / "nats", log_path=root / "nats.log") as nats,
            PostgresServer(root / "pg", log_path=root / "pg.log") as pg,
        ):
            return _figures(sizes, nats.url, pg.dsn)


def _figures(sizes: BenchSizes, nats_url: str, dsn: str) -> list[Figure]:
    cap = sizes.op_timeout_s
    opts = {"reactions": sizes.reactions, "cap_s": cap}
    small = _child(sizes.held_small, nats_url, dsn, {**opts, "steps": ["reaction"]})
    large = _child(sizes.held_large, nats_url, dsn, {**opts, "steps": ["reaction", "change"]})
    figures = [
        Figure(
            "scale",
            f"reaction to one landing at {large['held']:,} held (scheduler side)",
            large["reaction_s"] * 1000,
            "ms",
            reference=f"the same at {small['held']:,} held (ms)",
            reference_value=small["reaction_s"] * 1000,
            target="<= 1.5",
        ),
        Figure(
            "scale",
            f"decision for one landing at {large['held']:,} held",
            large["decision_s"] * 1000,
            "ms",
            target="<= 50",
        ),
    ]
    plan_s, plan_note = _seconds(large, "plan")
    figures.append(
        Figure(
            "scale",
            f"plan of a code change at {large['held']:,} held",
            plan_s,
            "s",
            target="<= 2",
            note=plan_note,
            met=False if plan_note else None,
        )
    )
    apply_s, apply_note = _seconds(large, "apply")
    apply = large.get("apply", {})
    if "decided_s" in apply:
        figures.append(
            Figure(
                "scale",
                f"apply of a code change at {large['held']:,} held: decided and committed"
                f" ({apply['tasks']:,} tasks)",
                apply["decided_s"],
                "s",
                target="<= 2",
            )
        )
    figures.append(
        Figure(
            "scale",
            f"apply of a code change at {large['held']:,} held: all tasks committed and published",
            apply_s,
            "s",
            target="<= 15",
            note=apply_note,
            met=False if apply_note else None,
        )
    )
    figures += _series(sizes, nats_url, dsn, opts)
    figures.append(
        Figure(
            "scale",
            f"scheduler peak RSS at {large['held']:,} held (in-process, bench included)",
            large["rss_peak_mb"],
            "MB",
        )
    )
    return figures


def _series(sizes: BenchSizes, nats_url: str, dsn: str, opts: dict[str, Any]) -> list[Figure]:
    """A reconcile pass over each size of the series: time and memory per partition held."""
    figures: list[Figure] = []
    points: list[tuple[int, float, float]] = []
    skipped: list[int] = []
    for held in sizes.held_series:
        if points and math.isnan(points[-1][1]):
            skipped.append(held)  # the smaller size ran over its cap: this one would too
            continue
        result = _child(held, nats_url, dsn, {**opts, "steps": ["reconcile"]})
        seconds, note = _seconds(result, "reconcile")
        rss = result.get("reconcile", {}).get("rss_mb", math.nan)
        points.append((result["held"], math.nan if note else seconds, rss))
        figures.append(
            Figure(
                "scale",
                f"scheduler-only reconcile pass over {result['held']:,} held",
                seconds,
                "s",
                note=note,
            )
        )
        if not note:
            figures.append(
                Figure(
                    "scale",
                    f"scheduler memory growth during that pass ({result['held']:,} held)",
                    rss,
                    "MB",
                )
            )
    done = [p for p in points if not math.isnan(p[1])]
    if len(done) >= 2:
        (n0, t0, m0), (n1, t1, m1) = done[0], done[-1]
        exponent = math.log(t1 / t0) / math.log(n1 / n0)
        figures.append(
            Figure(
                "scale",
                f"reconcile time growth exponent, {n0:,} -> {n1:,} held (1 = linear)",
                exponent,
                "",
                target="<= 1.15",
            )
        )
        if m0 > 0 and m1 > 0:
            figures.append(
                Figure(
                    "scale",
                    f"reconcile memory growth exponent, {n0:,} -> {n1:,} held (1 = linear)",
                    math.log(m1 / m0) / math.log(n1 / n0),
                    "",
                    target="<= 1.15",
                )
            )
    for held in skipped:
        figures.append(
            Figure(
                "scale",
                f"scheduler-only reconcile pass over {held:,} held",
                math.nan,
                "s",
                met=False,
                note="not run: a smaller size already ran over its cap",
            )
        )
    return figures


if __name__ == "__main__":
    held, nats_url, dsn, opts = json.loads(sys.argv[1])
    result = asyncio.run(measure(held, nats_url=nats_url, dsn=dsn, **opts))
    print(json.dumps(result), flush=True)
    os._exit(0)  # an abandoned (over its cap) call may hold connections: do not wait for them
