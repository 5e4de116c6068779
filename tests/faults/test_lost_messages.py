"""A lost message delays work but never loses it: a task message lost from the work queue,
and a result lost from the events stream, are both repaired by the scheduler's re-send of
unanswered tasks, with nothing computed twice."""

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import nats
import pytest

from tests.faults.harness import FaultStack
from tests.fixtures.metrics import HEALTH_ENV, health_url, scrape, value

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.parametrize(
        "fault_stack",
        [
            {
                "HEADWATER_TASK_RESEND_S": "2",
                "HEADWATER_TASK_ACK_WAIT_S": "5",
                "HEADWATER_EVENT_ACK_WAIT_S": "5",
                **HEALTH_ENV,
            }
        ],
        indirect=True,
    ),
]
DAY = "2024-06-01"


async def until(predicate_sql: str, dsn: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(dsn)
    try:
        while not await conn.fetchval(predicate_sql):
            assert time.monotonic() < deadline, f"never true: {predicate_sql}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def count(stack: FaultStack, service: str, name: str, **labels: str) -> float:
    """A counter of `service` (since it last started), read from its scrape endpoint."""
    metrics = await scrape(health_url(stack.embedded.state_dir, service))
    return value(metrics, name, **labels) or 0


async def test_a_task_lost_from_the_work_queue_is_sent_again(fault_stack: FaultStack) -> None:
    executor = fault_stack.embedded.processes["executor"]
    executor.send_signal(signal.SIGKILL)  # nobody takes the task while we lose it
    executor.wait()
    s = fault_stack.embedded.endpoints
    async with fault_stack.client() as hw:
        await fault_stack.land(hw, DAY)
        await until(
            "SELECT count(*) > 0 FROM scheduler.tasks WHERE dataset = 'daily'", fault_stack.pg_dsn
        )
        nc = await nats.connect(s["nats_url"])
        try:
            js = nc.jetstream()
            stream = f"{s['namespace'].upper()}_TASKS"
            await until_published(js, stream)
            await js.purge_stream(stream)  # the task message is lost
        finally:
            await nc.close()
        async with fault_stack.supervised():  # the executor comes back to an empty queue
            await fault_stack.converged(hw)
    resent = await count(
        fault_stack, "scheduler", "headwater_tasks_requested_total", request="resend"
    )
    assert resent >= 1


async def until_published(js: object, stream: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await js.stream_info(stream)).state.messages == 0:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the task was never published"
        await asyncio.sleep(0.05)


async def test_a_result_lost_from_the_events_stream_is_published_again(
    fault_stack: FaultStack, tmp_path: Path
) -> None:
    s = fault_stack.embedded.endpoints
    scheduler = fault_stack.embedded.processes["scheduler"]
    async with fault_stack.client() as hw:
        await fault_stack.land(hw, DAY)
        await until(
            "SELECT count(*) > 0 FROM scheduler.tasks WHERE dataset = 'daily'", fault_stack.pg_dsn
        )
        scheduler.send_signal(signal.SIGKILL)  # the result will wait in the stream for it
        scheduler.wait()
        nc = await nats.connect(s["nats_url"])
        try:
            js = nc.jetstream()
            subject = f"{s['namespace']}.ev.partition.landed.daily"
            deadline = time.monotonic() + 60
            while True:
                try:
                    landed = await js.get_last_msg(f"{s['namespace'].upper()}_EVENTS", subject)
                    break
                except nats.js.errors.NotFoundError:
                    assert time.monotonic() < deadline, "the executor never published"
                    await asyncio.sleep(0.1)
            await js.delete_msg(f"{s['namespace'].upper()}_EVENTS", landed.seq)  # lost
        finally:
            await nc.close()
        async with fault_stack.supervised():  # the scheduler comes back, never hears of it
            await fault_stack.converged(hw)
    # The restarted scheduler sent the task again; the executor published its stored result
    # again instead of computing it twice.
    resent = await count(
        fault_stack, "scheduler", "headwater_tasks_requested_total", request="resend"
    )
    assert resent >= 1
    tasks = "headwater_tasks_total"
    assert await count(fault_stack, "executor", tasks, dataset="daily", outcome="republished") >= 1
    assert await count(fault_stack, "executor", tasks, dataset="daily", outcome="succeeded") == 1
