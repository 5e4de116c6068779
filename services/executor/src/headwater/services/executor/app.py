"""Wiring of the executor: a competing consumer of the work queue."""

import asyncpg
from faststream.nats import NatsMessage

from headwater.contracts import TaskRequested
from headwater.runtime.messaging import consume, durable_subscriber
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.service import Service
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
    pool = WorkerPool(settings.transform_workers)
    service.on_start.append(pool.start)
    service.on_stop.append(pool.close)
    app = Executor(service.res, settings.subjects, settings, pool)
    broker, s = service.broker, settings.subjects

    # One task at a time per executor, so idle executors take the rest.
    @durable_subscriber(broker, s, NAME, batch_size=1)
    async def on_task(msg: NatsMessage) -> None:
        async def run(task: TaskRequested) -> None:
            delivery = msg.raw_message.metadata.num_delivered or 1
            await app.run(task, heartbeat=msg.raw_message.in_progress, delivery=delivery)

        await consume(msg, TaskRequested, run, broker=broker, subjects=s, service=NAME)

    return service
