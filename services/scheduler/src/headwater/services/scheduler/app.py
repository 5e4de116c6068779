"""Wiring of the scheduler."""

from pathlib import Path
from typing import Annotated, cast

import asyncpg
from faststream import Context
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg

from headwater.contracts import family_at, handled_by, parse_model, rpc
from headwater.runtime.messaging import consume_batch, durable_subscriber
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.rpc import responder
from headwater.runtime.service import Service
from headwater.services.scheduler.handlers import Scheduler, SchedulerEvent
from headwater.services.scheduler.queries import ImpactQueries, StatusQueries
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
    handled = {f.model for f in handled_by(NAME)}

    def parse(raw: Msg) -> SchedulerEvent | None:
        family = family_at(s, raw.subject)
        if family is None or family.model not in handled:
            return None  # a fact the scheduler does not act on
        return cast(SchedulerEvent, parse_model(family.model, raw.data))

    # Events come in batches (what one pull returns): one transaction and one reconcile over
    # the union of what they touch, then every message is settled.
    @durable_subscriber(broker, s, NAME, batch_size=settings.batch_size, batch=True)
    async def on_events(
        _body: list[bytes], batch: Annotated[NatsBatchMessage, Context("message")]
    ) -> None:
        await consume_batch(
            batch,
            parse,
            app.handle,
            broker=broker,
            subjects=s,
            service=NAME,
            metrics=service.res.metrics,
        )

    responder(broker, s, rpc.WHY, app.why)
    responder(broker, s, rpc.CURRENT, app.current)
    responder(broker, s, rpc.IMPACT, app.impact)
    responder(broker, s, rpc.RETRY, app.retry)
    responder(broker, s, rpc.DROP_ENV_PARTITIONS, app.drop_env)
    # `status` and `wait` of the CLI: replies bounded whatever the partitions held.
    queries = StatusQueries(service.res)
    responder(broker, s, rpc.SUMMARY, queries.summary)
    responder(broker, s, rpc.PARTITIONS, queries.partitions)
    responder(broker, s, rpc.PENDING, queries.pending)
    responder(broker, s, rpc.AFFECTED, ImpactQueries(service.res).affected)
    service.on_start.append(app.reconcile_all)
    service.timers.append((settings.reconcile_interval_s, app.reconcile_all))
    service.timers.append((settings.settle_poll_s, app.settle_due))

    async def prune() -> None:
        async with service.res.pool.acquire() as conn:
            await prune_inbox(conn, settings.inbox_retention_s)

    service.timers.append((300.0, prune))
    return service
