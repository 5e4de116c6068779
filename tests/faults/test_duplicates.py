"""Duplicated, reordered and replayed events, and a transform that always fails.

(a) one upstream landing sent several ways (same event id twice, the same event without a
message id, a new event id, the file re-uploaded) lands once and computes once;
(b) content A, then B, then A again ends as A, and a replay of B's `partition landed` (verbatim,
and under a new event id) changes nothing;
(c) a duplicated `task requested` (an old one and the current one) computes nothing new;
(d) a transform that always raises runs exactly HEADWATER_ATTEMPTS times, ends `errored` with
its readers `blocked`, and stays so: the reconcile timer does not retry it forever.
"""

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from headwater.core import formats, hashing
from headwater.sdk.client import HeadwaterClient
from tests.faults.harness import FaultStack
from tests.fixtures.stack import stack_settings
from tests.workloads import sales_csv

pytestmark = pytest.mark.timeout(240)

DAY = "2024-05-01"
RECONCILE_INTERVAL_S = 0.5  # failing_stack's (FaultStack.start sets 2 s)


async def rows(stack: FaultStack, query: str, *args: object) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        return [tuple(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def tasks(stack: FaultStack) -> list[tuple[Any, ...]]:
    """(dataset, partition, fingerprint, state, attempts) of every task, in order."""
    return await rows(
        stack,
        "SELECT dataset, partition_key, fingerprint, state, attempts FROM scheduler.tasks"
        " ORDER BY dataset, requested_at",
    )


async def landings(stack: FaultStack, dataset: str) -> list[dict[str, Any]]:
    """The `partition landed` events the lineage-indexer recorded for `dataset`."""
    found = await rows(
        stack,
        "SELECT payload FROM lineage.events WHERE kind = 'partition_landed' AND dataset = $1"
        " ORDER BY received_at",
        dataset,
    )
    return [json.loads(p) for (p,) in found]


def partition(status: dict[str, Any], dataset: str, key: str = DAY) -> dict[str, Any]:
    return next(
        p for p in status["partitions"] if p["dataset"] == dataset and p["partition_key"] == key
    )


def sha_of(day: str, salt: int) -> str:
    return hashing.data_sha(formats.read_table(sales_csv(day, salt), "csv", "x.csv"))


def log(stack: FaultStack, name: str) -> str:
    return (stack.embedded.state_dir / "logs" / f"{name}.log").read_text()


async def publish_file(
    stack: FaultStack, hw: HeadwaterClient, day: str, salt: int, event_id: str
) -> None:
    """Upload the day's file (again) and publish its event under `event_id`."""
    path = stack.root / f"{day}-{salt}.csv"
    path.write_bytes(sales_csv(day, salt))
    await hw.publish("sales", day, path, name="sales.csv", event_id=event_id)
    stack.landed[day] = sales_csv(day, salt)


@contextlib.asynccontextmanager
async def connected(stack: FaultStack) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(stack.settings.nats_url or "")
    try:
        yield nc
    finally:
        await nc.close()


async def test_a_landing_sent_several_times_lands_and_computes_once(
    fault_stack: FaultStack,
) -> None:
    stack = fault_stack
    ns = stack.settings.namespace
    async with stack.client() as hw, connected(stack) as nc:
        await publish_file(stack, hw, DAY, 0, "first")
        await hw.wait(timeout=120)
        # The same event again, same id (and the file re-uploaded): JetStream drops it.
        await publish_file(stack, hw, DAY, 0, "first")
        # The same event bytes with no message id: it reaches the change-detector.
        event = {
            "dataset": "sales",
            "partition": DAY,
            "key": f"sales/{DAY}/sales.csv",
            "format": "csv",
            "event_id": "first",
        }
        await nc.jetstream().publish(f"{ns}.upstream.sales", json.dumps(event).encode())
        # A new event id for the same, re-uploaded file.
        await publish_file(stack, hw, DAY, 0, "second")
        await hw.wait(timeout=120)
        info = await nc.jetstream().stream_info(f"{ns.upper()}_UPSTREAM")
        await stack.converged(hw)
        assert await hw.dead_letters() == []

    # Three were stored (the repeat under the same message id was dropped), and every one was
    # consumed: the stream keeps a message only until its readers acked it.
    assert (info.state.last_seq, info.state.messages) == (3, 0)
    # The change-detector re-hashed the two that reached it and found nothing new.
    assert log(stack, "change-detector").count(f"sales/{DAY}/ unchanged") == 2
    assert await rows(
        stack, "SELECT partition_key, version FROM change_detector.source_partitions"
    ) == [(DAY, 1)]
    assert [e["source_version"] for e in await landings(stack, "sales")] == [1]
    # One computation per derived partition, one `partition landed` each.
    assert [(d, k, s) for d, k, _, s, _ in await tasks(stack)] == [
        ("daily", DAY, "succeeded"),
        ("pairs", DAY, "succeeded"),
    ]
    assert len(await landings(stack, "daily")) == 1
    assert len(await landings(stack, "pairs")) == 1


async def test_reordered_and_replayed_landings_never_win(fault_stack: FaultStack) -> None:
    stack = fault_stack
    ns = stack.settings.namespace
    a, b = sha_of(DAY, 0), sha_of(DAY, 1)
    assert a != b
    async with stack.client() as hw, connected(stack) as nc:
        # Content A, then B, then A again (a new event id: the first one's is in JetStream's
        # duplicate window, so reusing it would be a duplicate of the first landing).
        for salt, event_id in ((0, "a"), (1, "b"), (0, "a-again")):
            await publish_file(stack, hw, DAY, salt, event_id)
            await hw.wait(timeout=120)
        status = await hw.status()
        assert partition(status, "sales")["data_sha"] == a
        daily_a = partition(status, "daily")["fingerprint"]
        before = await tasks(stack)
        # A again reused A's materializations: two computations per derived dataset (A, B).
        assert [(d, s) for d, _, _, s, _ in before] == [("daily", "succeeded")] * 2 + [
            ("pairs", "succeeded")
        ] * 2
        assert daily_a == before[0][2]
        events = await landings(stack, "sales")
        assert [(e["source_version"], e["data_sha"]) for e in events] == [(1, a), (2, b), (3, a)]

        # Replay B's landing: verbatim under a new message id, then under a new event id too.
        js = nc.jetstream()
        subject = f"{ns}.ev.partition.landed.sales"
        old = events[1]
        await js.publish(subject, json.dumps(old).encode(), headers={"Nats-Msg-Id": "replay-1"})
        renamed = {**old, "event_id": "replayed-b"}
        await js.publish(subject, json.dumps(renamed).encode(), headers={"Nats-Msg-Id": "replay-2"})
        status = await hw.wait(timeout=120)
        assert partition(status, "sales")["data_sha"] == a
        assert partition(status, "daily")["fingerprint"] == daily_a
        assert await tasks(stack) == before  # no new task
        # The scheduler did consume the renamed replay (it is in its inbox), and ignored it.
        assert await rows(
            stack, "SELECT event_id FROM scheduler.inbox WHERE event_id = 'replayed-b'"
        ) == [("replayed-b",)]
        assert await hw.dead_letters() == []
        await stack.converged(hw)
        assert await tasks(stack) == before


async def test_a_duplicated_task_computes_nothing_new(fault_stack: FaultStack) -> None:
    stack = fault_stack
    ns = stack.settings.namespace
    captured: list[Msg] = []
    async with stack.client() as hw, connected(stack) as nc:
        # Capture every task request as the scheduler publishes it.
        sub = await nc.subscribe(f"{ns}.task.requested.>", cb=_append(captured))
        for salt, event_id in ((0, "a"), (1, "b")):
            await publish_file(stack, hw, DAY, salt, event_id)
            await hw.wait(timeout=120)
        await sub.unsubscribe()
        before = await tasks(stack)
        assert [(d, s) for d, _, _, s, _ in before] == [("daily", "succeeded")] * 2 + [
            ("pairs", "succeeded")
        ] * 2
        daily = [m for m in captured if m.subject == f"{ns}.task.requested.daily"]
        assert [json.loads(m.data)["fingerprint"] for m in daily] == [before[0][2], before[1][2]]
        materializations = await rows(stack, "SELECT count(*) FROM scheduler.materializations")

        # Request both again (the old content's task and the current one), as new messages.
        js = nc.jetstream()
        for i, msg in enumerate(daily):
            await js.publish(msg.subject, msg.data, headers={"Nats-Msg-Id": f"again-{i}"})
        await hw.wait(timeout=120)
        executor = log(stack, "executor")
        assert executor.count(f"daily/{DAY} already published") == 2
        assert executor.count(f"daily/{DAY} -> ") == 2  # A and B, each once
        assert await rows(stack, "SELECT count(*) FROM scheduler.materializations") == (
            materializations
        )
        assert len(await landings(stack, "daily")) == 2
        assert await tasks(stack) == before
        assert await hw.dead_letters() == []
        await stack.converged(hw)


def _append(into: list[Msg]) -> Any:
    async def cb(msg: Msg) -> None:
        into.append(msg)

    return cb


FAILING_SPEC = """\
pipeline: failing
sources:
  sales: {}
datasets:
  daily:
    python: fail.py:fn
    inputs: {sales: identity}
  reader:
    sql: SELECT * FROM daily
    inputs: {daily: identity}
  fine:
    sql: SELECT count(*) AS n FROM sales
    inputs: {sales: identity}
"""
FAIL_PY = """\
import pyarrow as pa


def fn(sales: pa.Table) -> pa.Table:
    raise ValueError("the transform always fails")
"""


@pytest.fixture
async def failing_stack(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> AsyncIterator[FaultStack]:
    env = {
        "HEADWATER_ATTEMPTS": "3",
        "HEADWATER_RETRY_BASE_S": "0.1",
        # The test waits several reconcile intervals to see that none retries the errored
        # partition: short ones, so that it waits seconds, not tens of them.
        "HEADWATER_RECONCILE_INTERVAL_S": str(RECONCILE_INTERVAL_S),
    }
    (tmp_path / "fail.py").write_text(FAIL_PY)
    stack = FaultStack(
        tmp_path, stack_settings(namespace, nats_url, database, None), env, spec=FAILING_SPEC
    )
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()
        if stack.stack is not None:
            print(stack.logs())  # shown only when the test failed


async def test_a_transform_that_always_fails_runs_attempts_times_then_rests(
    failing_stack: FaultStack,
) -> None:
    stack = failing_stack
    attempt = re.compile(rf"daily/{DAY} failed \(attempt (\d+) of 3\)")
    async with stack.client() as hw:
        await stack.land(hw, DAY)
        status = await hw.wait(timeout=120)
        runs = attempt.findall(log(stack, "executor"))
        assert runs == ["1", "2", "3"]
        daily, reader = partition(status, "daily"), partition(status, "reader")
        assert daily["state"] == "errored"
        assert "the transform always fails" in (daily["reason"] or "")
        assert reader["state"] == "blocked"
        assert partition(status, "fine")["state"] == "ready"  # the rest of the pipeline ran
        failed = await tasks(stack)

        # Several reconcile intervals later nothing has run again: it is stable, not retrying.
        await asyncio.sleep(4 * RECONCILE_INTERVAL_S)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert not any((await hw.busy()).values())
            await asyncio.sleep(0.2)
        assert attempt.findall(log(stack, "executor")) == runs
        assert await tasks(stack) == failed
        assert [(d, s, n) for d, _, _, s, n in failed] == [
            ("daily", "failed", 1),
            ("fine", "succeeded", 1),
        ]
        later = await hw.status()
        assert later["partitions"] == status["partitions"]
        assert len(await landings(stack, "daily")) == 0
        failures = await rows(
            stack, "SELECT count(*) FROM lineage.events WHERE kind = 'task_failed'"
        )
        assert failures == [(1,)]
        assert await hw.dead_letters() == []


async def test_a_landing_replayed_after_its_retraction_does_not_resurrect_it(
    fault_stack: FaultStack,
) -> None:
    stack = fault_stack
    ns = stack.settings.namespace
    async with stack.client() as hw, connected(stack) as nc:
        await publish_file(stack, hw, DAY, 0, "land")
        await hw.wait(timeout=120)
        await hw.delete("sales", DAY)
        del stack.landed[DAY]
        status = await hw.wait(timeout=120)
        assert [p for p in status["partitions"] if p["partition_key"] == DAY] == []
        landed = (await landings(stack, "sales"))[0]
        await nc.jetstream().publish(
            f"{ns}.ev.partition.landed.sales",
            json.dumps({**landed, "event_id": "replayed-after-retraction"}).encode(),
            headers={"Nats-Msg-Id": "replay-after-retraction"},
        )
        status = await hw.wait(timeout=120)
        assert [p for p in status["partitions"] if p["partition_key"] == DAY] == []
        assert await rows(
            stack, "SELECT 1 FROM scheduler.inbox WHERE event_id = 'replayed-after-retraction'"
        ) == [(1,)]  # consumed, and ignored
        await stack.converged(hw)
