"""Wiring of the executor: a competing consumer of the work queue."""

import asyncpg
from faststream.nats import NatsMessage

from headwater.contracts import TaskRequested
from headwater.runtime.messaging import consume, durable_subscriber
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.service import Service
from headwater.runtime.telemetry import REASON, baggage_of
from headwater.services.executor.concurrency import InFlight
from headwater.services.executor.handlers import Executor
from headwater.services.executor.settings import ExecutorSettings
from headwater.services.executor.workers import WorkerPool

NAME = "executor"


def build_app(
    settings: ExecutorSettings,
    *,
    pool: asyncpg.Pool | None = None,
    store: ObjectStore | None = None,
) -> Service:
    service = Service.create(
        NAME, settings, buckets=[settings.data_bucket, settings.code_bucket], store=store
    )
    pool = WorkerPool(settings.transform_workers, settings.task_memory_mb or None)
    in_flight = InFlight(settings.concurrency)
    service.on_start.append(pool.start)
    service.on_stop.append(pool.close)
    service.on_stop.append(in_flight.close)  # hooks stop in reverse: tasks first, then workers
    app = Executor(service.res, settings.subjects, settings, pool)
    broker, s = service.broker, settings.subjects

    # One message fetched at a time, and only when a task may start: up to `concurrency`
    # tasks run here, the rest stay in the queue for idle executors.
    @durable_subscriber(broker, s, NAME, batch_size=1)
    async def on_task(msg: NatsMessage) -> None:
        async def run(task: TaskRequested) -> None:
            raw = msg.raw_message
            await app.run(
                task,
                heartbeat=raw.in_progress,
                delivery=raw.metadata.num_delivered or 1,
                reason=baggage_of(raw.headers, REASON),  # why the scheduler asked for it
            )

        await in_flight.start(
            consume(
                msg,
                TaskRequested,
                run,
                broker=broker,
                subjects=s,
                service=NAME,
                metrics=service.res.metrics,
            )
        )

    return service
