"""Wiring of the lineage-indexer."""

from pathlib import Path
from typing import cast

import asyncpg
from faststream.nats import NatsMessage
from openlineage.client import OpenLineageClient

from headwater.contracts import family_at, handled_by, rpc
from headwater.runtime.messaging import consume, durable_subscriber
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.rpc import responder
from headwater.runtime.service import Service
from headwater.runtime.telemetry import REASON, baggage_of
from headwater.services.lineage_indexer.handlers import LineageEvent, LineageIndexer
from headwater.services.lineage_indexer.openlineage import Emitter, Naming, configured_client
from headwater.services.lineage_indexer.settings import LineageIndexerSettings
from headwater.services.lineage_indexer.store import SCHEMA

NAME = "lineage-indexer"
MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(
    settings: LineageIndexerSettings,
    *,
    pool: asyncpg.Pool | None = None,
    store: ObjectStore | None = None,
    openlineage: OpenLineageClient | None = None,
) -> Service:
    """The service; `openlineage` is the client to emit through (default: the one the standard
    `OPENLINEAGE_*` configuration describes, or none when nothing configures one)."""
    service = Service.create(
        NAME, settings, schema=SCHEMA, migrations=MIGRATIONS, pool=pool, store=store
    )
    client = openlineage or configured_client()
    emitter = None
    if client is not None:
        emitter = Emitter(
            client,
            queue_size=settings.openlineage_queue,
            stop_timeout_s=settings.openlineage_stop_timeout_s,
        )
        service.on_start.append(emitter.start)
        service.on_stop.append(emitter.stop)
    app = LineageIndexer(
        service.res, emitter, Naming(settings.openlineage_job_namespace) if emitter else None
    )
    broker, s, metrics = service.broker, settings.subjects, service.res.metrics
    # Other facts (a task's failed attempts: the scheduler keeps them for `why`) are acked
    # unread: headwater.contracts.registry names what this service handles.
    handled = set(handled_by(NAME))

    @durable_subscriber(broker, s, NAME)
    async def on_event(msg: NatsMessage) -> None:
        subject = msg.raw_message.subject
        family = family_at(s, subject)
        if family is None or family not in handled:
            await msg.ack()
            return
        model = cast(type[LineageEvent], family.model)

        async def record(event: LineageEvent) -> None:
            # Why the run it reports ran: the scheduler's reason, passed on as baggage.
            await app.on_event(subject, event, baggage_of(msg.raw_message.headers, REASON))

        await consume(msg, model, record, broker=broker, subjects=s, service=NAME, metrics=metrics)

    responder(broker, s, rpc.LINEAGE, app.lineage)
    responder(broker, s, rpc.HISTORY, app.history)
    return service
