"""Wiring of the scheduler."""

from pathlib import Path

import asyncpg
from faststream.nats import NatsMessage

from headwater.contracts import CodeChanged, PartitionLanded, PartitionRetracted, TaskFailed
from headwater.runtime.messaging import consume, durable_subscriber
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.rpc import responder
from headwater.runtime.service import Service
from headwater.services.scheduler.handlers import Scheduler
from headwater.services.scheduler.settings import SchedulerSettings
from headwater.services.scheduler.store import SCHEMA, prune_inbox

NAME = "scheduler"
MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(
    settings: SchedulerSettings,
    *,
    pool: asyncpg.Pool | None = None,
    store: ObjectStore | None = None,
) -> Service:
    service = Service.create(
        NAME, settings, schema=SCHEMA, migrations=MIGRATIONS, pool=pool, store=store
    )
    app = Scheduler(service.res, settings.subjects, settings.task_resend_s)
    broker, s = service.broker, settings.subjects
    ev = f"{s.ns}.ev."

    @durable_subscriber(broker, s, NAME)
    async def on_event(msg: NatsMessage) -> None:
        subject = msg.raw_message.subject
        kw = {"broker": broker, "subjects": s, "service": NAME}
        if subject.startswith(ev + "code.changed."):
            await consume(msg, CodeChanged, app.on_code_changed, **kw)  # type: ignore[arg-type]
        elif subject.startswith(ev + "partition.landed."):
            await consume(msg, PartitionLanded, app.on_partition_landed, **kw)  # type: ignore[arg-type]
        elif subject.startswith(ev + "partition.retracted."):
            await consume(msg, PartitionRetracted, app.on_partition_retracted, **kw)  # type: ignore[arg-type]
        elif subject.startswith(ev + "task.failed."):
            await consume(msg, TaskFailed, app.on_task_failed, **kw)  # type: ignore[arg-type]
        else:
            await msg.ack()  # a fact the scheduler does not act on

    responder(broker, s.rpc(NAME, "status"), app.status)
    responder(broker, s.rpc(NAME, "why"), app.why)
    responder(broker, s.rpc(NAME, "current"), app.current)
    responder(broker, s.rpc(NAME, "impact"), app.impact)
    responder(broker, s.rpc(NAME, "retry"), app.retry)
    service.on_start.append(app.reconcile_all)
    service.timers.append((settings.reconcile_interval_s, app.reconcile_all))

    async def prune() -> None:
        async with service.res.pool.acquire() as conn:
            await prune_inbox(conn, settings.inbox_retention_s)

    service.timers.append((300.0, prune))
    return service
