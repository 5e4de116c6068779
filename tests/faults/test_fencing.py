"""Fencing: an executor paused (SIGSTOP) past its ack deadline loses its task to a redelivery on
another executor, which completes it; when the paused one resumes (SIGCONT) and finishes its
transform, its lease is no longer current, so it commits and publishes nothing. One
materialization, one `partition landed`, and the pipeline converges."""

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.kv import KeyValue

from tests.faults.harness import FaultStack
from tests.fixtures.stack import stack_settings

pytestmark = pytest.mark.timeout(240)

DAY = "2024-05-01"
TRANSFORM_S = 3.0
ACK_WAIT_S = 2.0
SPEC = """\
pipeline: fencing
sources:
  sales: {}
datasets:
  slow:
    python: slow.py:fn
    inputs: {sales: identity}
"""
SLOW_PY = f"""\
import time

import pyarrow as pa


def fn(sales: pa.Table) -> pa.Table:
    time.sleep({TRANSFORM_S})
    return sales.group_by("region").aggregate([("amount", "sum")])
"""


@pytest.fixture
async def two_executors(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> AsyncIterator[FaultStack]:
    """A FaultStack with two executor processes, a short ack wait and fast heartbeats, and
    the pipeline above (its Python file written beside pipeline.yaml before the apply)."""
    settings = stack_settings(namespace, nats_url, database, None).model_copy(
        update={"executors": 2}
    )
    # One task at a time per executor: a paused executor then has no fetch outstanding that
    # the redelivery could go to (with two in flight it may, and be redelivered once more).
    env = {
        "HEADWATER_TASK_ACK_WAIT_S": str(ACK_WAIT_S),
        "HEADWATER_HEARTBEAT_S": "0.5",
        "HEADWATER_EXECUTOR_CONCURRENCY": "1",
    }
    (tmp_path / "slow.py").write_text(SLOW_PY)
    stack = FaultStack(tmp_path, settings, env, spec=SPEC)
    try:
        await stack.start()
        yield stack
    finally:
        if stack.stack is not None:
            for proc in stack.embedded.processes.values():  # never leave one stopped
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
        stack.stop()
        if stack.stack is not None:
            print(stack.logs())  # shown only when the test failed


class LeaseLog:
    """Every value the lease bucket takes, in order (a KV watcher on all keys)."""

    def __init__(self) -> None:
        self.values: list[tuple[str, str]] = []  # (fingerprint, value)
        self._task: asyncio.Task[None] | None = None

    async def start(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()

        async def collect() -> None:
            try:
                async for entry in watcher:
                    if entry is not None and entry.value is not None:
                        self.values.append((entry.key, entry.value.decode()))
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()

        self._task = asyncio.create_task(collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def first(self, predicate: Callable[[str], bool], timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.values:
                if predicate(item[1]):
                    return item
            await asyncio.sleep(0.02)
        raise AssertionError(f"no lease value matched within {timeout}s: {self.values}")


def owner_pid(value: str) -> int:
    """A running lease is "HOSTNAME-PID:DELIVERY"."""
    owner, _ = value.rsplit(":", 1)
    return int(owner.rsplit("-", 1)[1])


async def wait_for_log(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path.name} did not log {text!r} within {timeout}s")


async def test_a_paused_executor_is_fenced_off_by_the_redelivery(
    two_executors: FaultStack,
) -> None:
    stack = two_executors
    procs = stack.embedded.processes
    assert sorted(procs) == [
        "change-detector",
        "executor",
        "executor-2",
        "lineage-indexer",
        "scheduler",
        "spec-registry",
    ]
    logs = stack.embedded.state_dir / "logs"
    ns = stack.settings.namespace
    nc = await nats.connect(stack.settings.nats_url or "")
    leases = LeaseLog()
    try:
        js = nc.jetstream()
        await leases.start(await js.key_value(f"{ns.upper()}_LEASES"))
        # A witness consumer of the results: the events stream keeps a message until every
        # consumer acked it, so what was published stays countable here.
        await js.add_consumer(
            f"{ns.upper()}_EVENTS",
            ConsumerConfig(
                durable_name="witness",
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject=f"{ns}.ev.partition.landed.slow",
            ),
        )
        async with stack.client() as hw:
            await stack.land(hw, DAY)

            # The first delivery takes the lease: that executor (A) is running the task.
            fp, first = await leases.first(lambda v: v.endswith(":1"), timeout=60)
            a_pid = owner_pid(first)
            a_name = next(n for n, p in procs.items() if p.pid == a_pid)
            b_name = "executor-2" if a_name == "executor" else "executor"
            await asyncio.sleep(0.5)  # inside the transform, heartbeating
            os.kill(a_pid, signal.SIGSTOP)
            try:
                # No heartbeat from A: after the ack wait JetStream redelivers to B, which
                # takes a newer lease, computes, commits and publishes.
                await leases.first(lambda v: v.startswith("published:"), timeout=60)
            finally:
                os.kill(a_pid, signal.SIGCONT)

            # A wakes up, finishes its transform, and finds its lease taken.
            a_log = logs / f"{a_name}.log"
            await wait_for_log(a_log, "taken over by a newer delivery", timeout=60)
            await stack.converged(hw)

        # The lease went A:1 -> B:2 -> B committed -> published; A never wrote again. (The
        # watcher may miss a value replaced within a moment, as the bucket keeps one: only
        # "committed", a few milliseconds before "published", can be.)
        # A published lease keeps the published result after "published:".
        values = [v.split(":{", 1)[0] for k, v in leases.values if k == fp]
        b_owner = values[1].rsplit(":", 1)[0]
        assert owner_pid(values[1]) == procs[b_name].pid, values
        assert values[:2] == [first, f"{b_owner}:2"], values  # no extra redelivery
        assert values[2:] in (["published"], [f"{b_owner}:committed", "published"]), values
        final = (await (await js.key_value(f"{ns.upper()}_LEASES")).get(fp)).value or b""
        assert final.startswith(b"published:")
        assert json.loads(final.removeprefix(b"published:"))["fingerprint"] == fp

        # A published nothing; B published the result once.
        a_text, b_text = a_log.read_text(), (logs / f"{b_name}.log").read_text()
        assert f"slow/{DAY} -> " not in a_text
        assert f"task {fp[:12]} was taken over by a newer delivery" in a_text
        assert b_text.count(f"slow/{DAY} -> ") == 1
        witness = await js.consumer_info(f"{ns.upper()}_EVENTS", "witness")
        assert witness.num_pending == 1  # one `partition landed` for the slow dataset

        conn = await asyncpg.connect(stack.pg_dsn)
        try:
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM scheduler.materializations WHERE fingerprint = $1", fp
                )
                == 1
            )
            tasks = await conn.fetch("SELECT dataset, partition_key, state FROM scheduler.tasks")
            assert [tuple(t) for t in tasks] == [("slow", DAY, "succeeded")]
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM lineage.events WHERE kind = 'partition_landed'"
                    " AND dataset = 'slow'"
                )
                == 1
            )
        finally:
            await conn.close()
        # Both executors are still serving.
        assert procs[a_name].poll() is None
        assert procs[b_name].poll() is None
    finally:
        await leases.stop()
        await nc.close()
