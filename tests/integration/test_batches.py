"""The scheduler takes events in batches (one transaction, one reconcile over the union of what
they touch). A batch mixing landings, a re-landing, a retraction, a failure and a code change
wants the same work as the same events one by one, and once that work is done (an executor's
results fed back) both converge to the same state: partitions, states, current and desired
fingerprints, materializations. On a real Postgres and nats-server."""

import json
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.context import Context

from headwater.contracts import (
    CodeChanged,
    PartitionLanded,
    PartitionRetracted,
    TaskFailed,
)
from headwater.core import hashing
from headwater.services.scheduler.handlers import SchedulerEvent
from tests.integration.scheduler_harness import (
    definitions,
    scheduler,
    sha,
    source_landed,
    source_sha,
)

pytestmark = pytest.mark.timeout(120)
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04"]


def daily_fingerprint(day: str, code: str = "daily", version: int = 1) -> str:
    return hashing.fingerprint(sha(code), [("sales", day, source_sha(day, version))])


def history() -> list[SchedulerEvent]:
    v1, v2 = definitions(), definitions("daily v2")
    fp1 = daily_fingerprint(DAYS[0])
    result = sha("daily result")
    return [
        *(CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d) for d in v1),
        *(source_landed(day) for day in DAYS),
        # The executor's answers for the first code: a result, and a final failure.
        PartitionLanded(
            event_id=f"landed:{fp1}",
            dataset="daily",
            partition_key=DAYS[0],
            data_sha=result,
            fingerprint=fp1,
            code_sha=sha("daily"),
            object_key=f"{result}.parquet",
            rows=1,
            bytes=1,
        ),
        TaskFailed(
            event_id=f"failed:{daily_fingerprint(DAYS[1])}:1",
            fingerprint=daily_fingerprint(DAYS[1]),
            dataset="daily",
            partition_key=DAYS[1],
            attempt=3,
            error="boom",
        ),
        PartitionRetracted(
            event_id="retracted:sales:2024-05-03:v2",
            dataset="sales",
            partition_key=DAYS[2],
            source_version=2,
        ),
        source_landed(DAYS[3], version=2),  # new content for the last day
        source_landed(DAYS[0]),  # a duplicate: the inbox absorbs it
        CodeChanged(event_id="code:daily:2", spec_version=2, dataset=v2[1]),
    ]


async def state(conn: asyncpg.Connection) -> dict[str, Any]:
    partitions = await conn.fetch(
        "SELECT dataset, partition_key, state, fingerprint, desired_fingerprint, data_sha"
        " FROM scheduler.partitions ORDER BY 1, 2"
    )
    wanted = await conn.fetch(
        "SELECT fingerprint, dataset, partition_key FROM scheduler.tasks"
        " WHERE state = 'requested' ORDER BY 1"
    )
    materialized = await conn.fetch(
        "SELECT fingerprint, data_sha FROM scheduler.materializations ORDER BY 1"
    )
    return {
        "partitions": [tuple(r) for r in partitions],
        "wanted": [tuple(r) for r in wanted],
        "materialized": [tuple(r) for r in materialized],
    }


async def drain(app: Any) -> None:
    """Answer every wanted task as an executor would (its output named by its fingerprint),
    until nothing is wanted."""
    while True:
        async with app.res.pool.acquire() as conn:
            wanted = await conn.fetch(
                "SELECT t.fingerprint, t.dataset, t.partition_key, d.code_sha"
                " FROM scheduler.tasks t JOIN scheduler.datasets d ON d.name = t.dataset"
                " WHERE t.state = 'requested' ORDER BY 1"
            )
        if not wanted:
            return
        for fp, dataset, key, code_sha in wanted:
            out = sha(f"output of {dataset}/{key}")  # deterministic: equal outputs cut off
            [error] = await app.handle(
                [
                    PartitionLanded(
                        event_id=f"landed:{fp}",
                        dataset=dataset,
                        partition_key=key,
                        data_sha=out,
                        fingerprint=fp,
                        code_sha=code_sha,
                        object_key=f"{out}.parquet",
                        rows=1,
                        bytes=1,
                    )
                ]
            )
            assert error is None


async def test_a_batch_ends_where_the_same_events_one_by_one_end(
    database: str, nats_url: str, namespace: str, pg_dsn: str
) -> None:
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{namespace}_batch"')
    finally:
        await admin.close()
    batch_db = database.rsplit("/", 1)[0] + f"/{namespace}_batch"
    events = history()

    async with scheduler(database, nats_url, f"{namespace}a") as app:
        for event in events:
            [error] = await app.handle([event])
            assert error is None
        async with app.res.pool.acquire() as conn:
            wanted_one_by_one = (await state(conn))["wanted"]
        await drain(app)
        async with app.res.pool.acquire() as conn:
            one_by_one = await state(conn)
    async with scheduler(batch_db, nats_url, f"{namespace}b") as app:
        assert await app.handle(events) == [None] * len(events)
        async with app.res.pool.acquire() as conn:
            wanted_batched = (await state(conn))["wanted"]
        await drain(app)
        async with app.res.pool.acquire() as conn:
            batched = await state(conn)

    # The same work is wanted (the new code for every live day), and the same state reached.
    assert wanted_batched == wanted_one_by_one
    assert {k for _, d, k in wanted_batched} == {DAYS[0], DAYS[1], DAYS[3]}
    assert batched == one_by_one
    states = {(d, k): s for d, k, s, *_ in batched["partitions"]}
    assert states[("sales", DAYS[2])] == "retracted"
    assert ("daily", DAYS[2]) not in states
    assert set(states.values()) == {"ready", "retracted"}


def traced(trace_id: int) -> Context:
    """A context carrying a remote span of `trace_id` (as extracted from a message)."""
    span = trace.NonRecordingSpan(
        trace.SpanContext(trace_id, 1, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    return trace.set_span_in_context(span)


async def test_each_task_of_a_batch_continues_the_trace_of_the_event_that_caused_it(
    database: str, nats_url: str, namespace: str
) -> None:
    """One batch holding an apply's `code changed` and a landing: the task the landing causes
    is published in the landing's trace, not the batch's first message's."""
    apply_trace, landing_trace = 0xA1, 0xB2
    code = [
        CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d) for d in definitions()
    ]
    events: list[SchedulerEvent] = [*code, source_landed(DAYS[0])]
    traces = [traced(apply_trace)] * len(code) + [traced(landing_trace)]
    async with scheduler(database, nats_url, namespace) as app:
        assert await app.handle(events, traces) == [None] * len(events)
        async with app.res.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT subject, trace FROM scheduler.outbox WHERE subject LIKE '%task.requested%'"
            )
    [(subject, carrier)] = rows
    assert subject.endswith(".task.requested.daily")
    assert json.loads(carrier)["traceparent"].split("-")[1] == f"{landing_trace:032x}"
