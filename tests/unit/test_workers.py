"""The executor's worker pool in isolation: transforms run in worker processes that a timeout,
a memory limit or a cancellation stops, without harm to the calling process or the next task."""

import asyncio
import os
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.contracts import CodeBlob, InputRef
from headwater.contracts.errors import TransformError
from headwater.core import formats, hashing
from headwater.services.executor.inputs import InputDamaged
from headwater.services.executor.workers import Inputs, WorkerPool

pytestmark = pytest.mark.timeout(60)
SALES = pa.table({"region": ["n", "s", "n"], "amount": [1, 2, 3]})


def python(body: str) -> CodeBlob:
    source = f"import os, time\nimport pyarrow as pa\n\n\ndef f(sales):\n{body}\n"
    return CodeBlob(kind="python", code=source, function="f")


SUM = CodeBlob(kind="sql", code="SELECT sum(amount) AS total FROM sales")


def stored(*tables: pa.Table) -> Inputs:
    """The objects of `sales` partitions holding `tables`, as the executor reads them."""
    parts = []
    for i, table in enumerate(tables):
        sha = hashing.data_sha(table)
        ref = InputRef(dataset="sales", partition_key=f"p{i}", data_sha=sha, object_key=sha)
        parts.append((ref, formats.to_parquet(table)))
    return {"sales": parts}


async def run(pool: WorkerPool, blob: dict[str, object], **limits: object) -> pa.Table:
    kw: dict[str, object] = {"timeout_s": 20.0, "memory_mb": None, **limits}
    out = await pool.run(blob, stored(SALES.slice(0, 1), SALES.slice(1)), **kw)  # type: ignore[arg-type]
    table = formats.from_parquet(out.parquet)
    # The worker encodes the output: its SHA and row count are those of the stored bytes.
    assert (out.data_sha, out.rows) == (hashing.data_sha(table), table.num_rows)
    return table


@pytest.fixture
async def pool() -> object:
    pool = WorkerPool(1)
    await pool.start()
    yield pool
    await pool.close()


async def test_a_transform_runs_in_another_process_and_returns_its_table(
    pool: WorkerPool,
) -> None:
    out = await run(pool, python("    return pa.table({'pid': [os.getpid()]})"))
    assert out.column("pid").to_pylist() != [os.getpid()]
    assert out.column("pid").to_pylist() == pool.pids()
    assert (await run(pool, SUM)).to_pylist() == [{"total": 6}]
    # The worker is persistent: the next task runs in the same process.
    again = await run(pool, python("    return pa.table({'pid': [os.getpid()]})"))
    assert again.column("pid").to_pylist() == out.column("pid").to_pylist()


async def test_a_started_pool_s_workers_are_warm_before_it_takes_a_task(
    pool: WorkerPool,
) -> None:
    """`start` returns once every worker has imported what it runs and opened its database
    (its "ready" came): the executor subscribes only then, so its first tasks do not wait on,
    or compete with, the workers' start."""
    assert all(worker.warmed(0) for worker in pool._workers)
    assert (await run(pool, SUM)).to_pylist() == [{"total": 6}]


async def test_the_worker_reports_the_cpu_time_a_task_took_not_the_time_it_slept(
    pool: WorkerPool,
) -> None:
    """`cpu_ms` of a materialization (the bench's orchestration overhead is wall time beyond
    it): a transform that burns CPU for 0.3 s and sleeps 0.5 s reports the 0.3 s."""
    burn = python(
        "    end = time.process_time() + 0.3\n"
        "    while time.process_time() < end:\n"
        "        pass\n"
        "    time.sleep(0.5)\n"
        "    return sales"
    )
    out = await pool.run(burn, stored(SALES), timeout_s=20.0, memory_mb=None)
    assert 0.3 <= out.cpu_s < 0.7


async def test_a_transform_past_its_timeout_is_stopped_and_the_next_task_runs(
    pool: WorkerPool,
) -> None:
    before = pool.pids()
    with pytest.raises(TransformError, match=r"^timed out after 0.5s$"):
        await run(pool, python("    time.sleep(3600)"), timeout_s=0.5)
    assert pool.pids() != before  # the stuck worker was killed and replaced
    assert (await run(pool, SUM)).to_pylist() == [{"total": 6}]


@pytest.mark.parametrize(
    "body",
    [
        "    return bytearray(8 * 2**30)",
        "    return pa.table({'a': pa.nulls(10**9, pa.int64()).fill_null(0)})",
    ],
    ids=["python", "arrow"],
)
async def test_a_transform_over_its_memory_limit_fails_with_the_limit_named(
    pool: WorkerPool, body: str
) -> None:
    with pytest.raises(TransformError, match=r"^ran out of memory \(limit 200 MB\)$"):
        await run(pool, python(body), memory_mb=200)
    assert (await run(pool, SUM, memory_mb=200)).to_pylist() == [{"total": 6}]


async def test_a_sql_transform_over_its_memory_limit_fails_with_the_limit_named(
    pool: WorkerPool,
) -> None:
    big = CodeBlob(kind="sql", code="SELECT list(range) AS l FROM range(100000000)")
    with pytest.raises(TransformError, match=r"ran out of memory \(limit 100 MB\)"):
        await run(pool, big, memory_mb=100)


async def test_a_crashed_worker_is_a_transform_error_and_is_replaced(pool: WorkerPool) -> None:
    with pytest.raises(TransformError, match="worker process was killed by SIGSEGV"):
        await run(pool, python("    os.kill(os.getpid(), 11)"))
    assert (await run(pool, SUM)).to_pylist() == [{"total": 6}]


async def test_cancelling_a_running_task_kills_its_worker(pool: WorkerPool) -> None:
    before = pool.pids()
    task = asyncio.create_task(run(pool, python("    time.sleep(3600)")))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.pids() != before
    for pid in before:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert (await run(pool, SUM)).to_pylist() == [{"total": 6}]


async def test_an_input_that_does_not_hold_its_data_sha_is_never_computed_over(
    pool: WorkerPool, tmp_path: Path
) -> None:
    [(ref, _)] = stored(SALES)["sales"]
    [(_, other)] = stored(SALES.slice(1))["sales"]
    marker = f"    open({str(tmp_path / 'ran')!r}, 'w')\n    return sales"
    for body, reason in [(other, "does not hold data SHA"), (b"PAR1junk", "not readable Parquet")]:
        with pytest.raises(InputDamaged, match=reason) as caught:
            await pool.run(python(marker), {"sales": [(ref, body)]}, timeout_s=20, memory_mb=None)
        assert caught.value.ref == ref
    assert not (tmp_path / "ran").exists()
    assert (await run(pool, SUM)).to_pylist() == [{"total": 6}]  # the worker serves on


async def test_each_task_in_flight_runs_in_a_worker_of_its_own(tmp_path: Path) -> None:
    """Two tasks at once on a pool of two: each waits (bounded) until the other has started,
    so they meet only if they run at the same time, in two processes."""
    meet = python(
        f"    mark = {str(tmp_path)!r} + '/' + str(os.getpid())\n"
        "    open(mark, 'w').close()\n"
        "    deadline = time.time() + 15\n"
        f"    while len(os.listdir({str(tmp_path)!r})) < 2 and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        f"    return pa.table({{'pid': [os.getpid()], 'met': [len(os.listdir({str(tmp_path)!r}))]}})"
    )
    pool = WorkerPool(2)
    await pool.start()
    try:
        first, second = await asyncio.gather(run(pool, meet), run(pool, meet))
    finally:
        await pool.close()
    assert first.column("met").to_pylist() == second.column("met").to_pylist() == [2]
    assert first.column("pid").to_pylist() != second.column("pid").to_pylist()
