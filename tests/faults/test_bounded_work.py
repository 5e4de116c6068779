"""Bounded work on the running services: a transform that never returns times out, one that
takes too much memory fails, and neither jams nor kills the executor; removing a dataset, or
changing its code, cancels its queued and running tasks (nothing is materialized for them),
and a revert to the cancelled code runs it again."""

import asyncio
import os
from pathlib import Path

import asyncpg
import pyarrow as pa
import pytest

from headwater.core import hashing
from headwater.sdk.client import HeadwaterClient
from tests.faults.harness import FaultStack, days
from tests.fixtures.stack import stack_settings

pytestmark = pytest.mark.timeout(240)

BOUNDED = """\
pipeline: bounded
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT region, count(*) AS n FROM sales GROUP BY region
    inputs: {sales: identity}
  stuck:
    python: slow.py:stuck
    inputs: {sales: identity}
    timeout: 2
  hungry:
    python: slow.py:hungry
    inputs: {sales: identity}
    memory_mb: 200
"""
SLOW = """\
import time

import pyarrow as pa


def stuck(sales: pa.Table) -> pa.Table:
    time.sleep(10**6)
    return sales


def hungry(sales: pa.Table) -> pa.Table:
    hoard = bytearray(8 * 2**30)
    return sales.append_column("hoard", pa.array([len(hoard)] * sales.num_rows))
"""
CANCELLED = """\
pipeline: cancelled
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT region, count(*) AS n FROM sales GROUP BY region
    inputs: {sales: identity}
  slow:
    python: slow.py:slow
    inputs: {sales: identity}
"""
# Version 1 leaves a file named by its process id and a time in STARTED, then sleeps while
# the flag file exists.
SLOW_V1 = """\
import os
import time
from pathlib import Path

import pyarrow as pa

STARTED = Path(%r)
FLAG = Path(%r)


def slow(sales: pa.Table) -> pa.Table:
    (STARTED / f"{os.getpid()}-{time.time_ns()}").touch()
    while FLAG.exists():
        time.sleep(0.1)
    return sales.group_by("region").aggregate([("amount", "sum")])
"""
SLOW_V2 = """\
import pyarrow as pa


def slow(sales: pa.Table) -> pa.Table:
    return sales.group_by("region").aggregate([("amount", "max")])
"""


async def stack_for(
    tmp_path: Path,
    namespace: str,
    nats_url: str,
    database: str,
    spec: str,
    code: str,
    **settings: str,
) -> FaultStack:
    (tmp_path / "slow.py").write_text(code)
    env = {"HEADWATER_ATTEMPTS": "2", "HEADWATER_RETRY_BASE_S": "0.1"}
    env |= {f"HEADWATER_{name.upper()}": value for name, value in settings.items()}
    stack = FaultStack(tmp_path, stack_settings(namespace, nats_url, database, None), env, spec)
    await stack.start()
    return stack


def partitions(status: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    return {(p["dataset"], p["partition_key"]): p for p in status["partitions"]}  # type: ignore[attr-defined,index]


async def materialized(dsn: str, dataset: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT code_sha FROM scheduler.materializations WHERE dataset = $1", dataset
        )
    finally:
        await conn.close()
    return sorted(r["code_sha"] for r in rows)


async def code_sha(hw: HeadwaterClient, dataset: str) -> str:
    datasets = await hw.call("spec-registry", "datasets", {})
    return str(datasets[dataset]["code_sha"])


async def queued(hw: HeadwaterClient, dataset: str, key: str, timeout: float = 30) -> None:
    """Return once the scheduler has asked for `dataset/key` (the partition is queued)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (state := partitions(await hw.status()).get((dataset, key), {}).get("state")) != "queued":
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{dataset}/{key} not queued after {timeout} s: {state}")
        await asyncio.sleep(0.1)


async def started(directory: Path, n: int) -> list[int]:
    """The pids of the workers that started the slow transform, once `n` have."""
    while len(list(directory.iterdir())) < n:  # noqa: ASYNC110 - a file another process writes
        await asyncio.sleep(0.2)
    return [int(p.name.split("-")[0]) for p in directory.iterdir()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_stuck_or_hungry_transform_fails_with_its_reason_and_jams_nothing(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    stack = await stack_for(tmp_path, namespace, nats_url, database, BOUNDED, SLOW)
    try:
        executor = stack.embedded.processes["executor"]  # the only one
        async with stack.client() as hw:
            for day in days(3):
                await stack.land(hw, day)
            status = partitions(await hw.wait(timeout=120))
            for day in days(3):
                # The other dataset's tasks completed on the same single executor.
                assert status[("daily", day)]["state"] == "ready"
                assert status[("stuck", day)]["state"] == "errored"
                assert status[("stuck", day)]["error"] == "timed out after 2s"
                assert status[("hungry", day)]["state"] == "errored"
                assert status[("hungry", day)]["error"] == "ran out of memory (limit 200 MB)"

            # A new timeout is no new code: nothing runs again until asked, then with it.
            spec = tmp_path / "pipeline.yaml"
            spec.write_text(BOUNDED.replace("timeout: 2", "timeout: 3"))
            changes = (await hw.apply(spec))["changes"]
            assert [(c["dataset"], c["change"]) for c in changes if c["change"] != "unchanged"] == [
                ("stuck", "limits")
            ]
            assert partitions(await hw.wait(timeout=60)) == status
            assert (await hw.retry("stuck", days(1)[0]))["retried"] == [days(1)[0]]
            status = partitions(await hw.wait(timeout=60))
            assert status[("stuck", days(1)[0])]["error"] == "timed out after 3s"
        assert executor.poll() is None  # the same executor process, never restarted
        assert stack.embedded.processes["executor"] is executor
        log = (stack.embedded.state_dir / "logs" / "executor.log").read_text()
        assert "failed (attempt 2 of 2): timed out after 2s" in log  # the retry policy held
    finally:
        stack.stop()
        print(stack.logs())


async def test_removing_a_dataset_cancels_its_running_task(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    marks, flag = tmp_path / "started", tmp_path / "flag"
    marks.mkdir()
    flag.touch()
    code = SLOW_V1 % (str(marks), str(flag))
    stack = await stack_for(tmp_path, namespace, nats_url, database, CANCELLED, code)
    try:
        executor = stack.embedded.processes["executor"]
        async with stack.client() as hw:
            await stack.land(hw, "2024-05-01")
            [worker] = await started(marks, 1)  # the slow task is running
            spec = tmp_path / "pipeline.yaml"
            spec.write_text(CANCELLED.split("  slow:")[0])
            await hw.apply(spec)
            status = partitions(await hw.wait(timeout=60))
            assert set(status) == {("sales", "2024-05-01"), ("daily", "2024-05-01")}
            assert {p["state"] for p in status.values()} == {"ready"}
            assert await materialized(stack.pg_dsn, "slow") == []
        assert not alive(worker)  # the worker running it was killed, the flag still stands
        assert flag.exists()
        assert executor.poll() is None
        log = (stack.embedded.state_dir / "logs" / "executor.log").read_text()
        assert "cancelled while it ran" in log
    finally:
        stack.stop()
        print(stack.logs())


async def test_new_code_cancels_the_old_tasks_and_a_revert_runs_them_again(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    marks, flag = tmp_path / "started", tmp_path / "flag"
    marks.mkdir()
    flag.touch()
    v1 = SLOW_V1 % (str(marks), str(flag))
    # One task at a time: the second waits in the queue, not in the executor. Only `slow` reads
    # the source: with another reader, its task for the second day could queue behind the
    # first slow task instead, and the second slow task would not be asked for before the change.
    stack = await stack_for(
        tmp_path, namespace, nats_url, database, ONLY_SLOW, v1, executor_concurrency="1"
    )
    spec = tmp_path / "pipeline.yaml"
    try:
        async with stack.client() as hw:
            old = await code_sha(hw, "slow")
            first, second = days(2)
            for day in (first, second):
                await stack.land(hw, day)
            [worker] = await started(marks, 1)  # one slow task runs ...
            await queued(hw, "slow", second)  # ... and the other waits behind it

            (tmp_path / "slow.py").write_text(SLOW_V2)
            await hw.apply(spec)
            new = await code_sha(hw, "slow")
            status = partitions(await hw.wait(timeout=90))
            assert {p["state"] for p in status.values()} == {"ready"}
            # Neither old task was materialized: the running one was killed, the queued one
            # dropped before it ran.
            assert await materialized(stack.pg_dsn, "slow") == [new, new]
            assert not alive(worker)
            assert flag.exists()
            assert len(list(marks.iterdir())) == 1
            log = (stack.embedded.state_dir / "logs" / "executor.log").read_text()
            assert "cancelled while it ran" in log
            assert "cancelled before it ran" in log

            # The old code again (now quick): its cancelled fingerprints are asked for again.
            flag.unlink()
            (tmp_path / "slow.py").write_text(v1)
            await hw.apply(spec)
            status = partitions(await hw.wait(timeout=90))
            assert {p["state"] for p in status.values()} == {"ready"}
            assert await materialized(stack.pg_dsn, "slow") == sorted([old, old, new, new])
    finally:
        stack.stop()
        print(stack.logs())


ONLY_SLOW = """\
pipeline: only_slow
sources:
  sales: {}
datasets:
  slow:
    python: slow.py:slow
    inputs: {sales: identity}
"""
# Each task leaves a mark named by its worker's pid, then waits (at most 60 s) until two have
# started: run one after the other, the first would wait out its minute alone.
MEET = """\
import os
import time
from pathlib import Path

import pyarrow as pa

STARTED = Path(%r)


def slow(sales: pa.Table) -> pa.Table:
    (STARTED / str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(list(STARTED.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.1)
    return pa.table({"met": [len(list(STARTED.iterdir()))]})
"""


async def test_one_executor_runs_two_tasks_at_once_each_in_a_worker_of_its_own(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    marks = tmp_path / "started"
    marks.mkdir()
    code = MEET % str(marks)
    stack = await stack_for(
        tmp_path, namespace, nats_url, database, ONLY_SLOW, code, transform_workers="2"
    )
    try:
        executor = stack.embedded.processes["executor"]  # the only one
        async with stack.client() as hw:
            for day in days(2):
                await stack.land(hw, day)
            status = partitions(await hw.wait(timeout=120))
        # Both tasks were running at once: each saw the other start before it finished.
        both = hashing.data_sha(pa.table({"met": [2]}))
        for day in days(2):
            assert status[("slow", day)]["state"] == "ready"
            assert status[("slow", day)]["data_sha"] == both
        # In two worker processes of the one executor, as its log says.
        log = (stack.embedded.state_dir / "logs" / "executor.log").read_text()
        workers = {int(p.name) for p in marks.iterdir()}
        assert len(workers) == 2
        for pid in workers:
            assert f"running in worker {pid}" in log
        assert executor.poll() is None
    finally:
        stack.stop()
        print(stack.logs())


async def test_a_task_waiting_for_a_worker_is_dropped_when_it_is_no_longer_wanted(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    marks, flag = tmp_path / "started", tmp_path / "flag"
    marks.mkdir()
    flag.touch()
    v1 = SLOW_V1 % (str(marks), str(flag))
    # Two tasks in flight, one worker: the second is taken from the queue and waits here.
    stack = await stack_for(
        tmp_path,
        namespace,
        nats_url,
        database,
        ONLY_SLOW,
        v1,
        executor_concurrency="2",
        transform_workers="1",
    )
    log = stack.embedded.state_dir / "logs" / "executor.log"
    try:
        async with stack.client() as hw:
            for day in days(2):
                await stack.land(hw, day)
            [worker] = await started(marks, 1)  # the first runs, so the other waits
            while "waits for a worker" not in log.read_text():  # noqa: ASYNC110 - a log file
                await asyncio.sleep(0.2)

            (tmp_path / "slow.py").write_text(SLOW_V2)
            await hw.apply(tmp_path / "pipeline.yaml")
            new = await code_sha(hw, "slow")
            status = partitions(await hw.wait(timeout=90))
            assert {p["state"] for p in status.values()} == {"ready"}
            # The running task was killed; the waiting one was dropped when the worker came
            # free, never started.
            assert await materialized(stack.pg_dsn, "slow") == [new, new]
            assert len(list(marks.iterdir())) == 1
            assert not alive(worker)
            text = log.read_text()
            assert "cancelled while it ran" in text
            assert "cancelled as a worker came free" in text
    finally:
        stack.stop()
        print(stack.logs())
