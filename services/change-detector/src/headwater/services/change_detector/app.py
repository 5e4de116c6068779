"""Wiring of change-detector."""

from pathlib import Path

import asyncpg
from faststream.nats import NatsMessage

from headwater.contracts import S3EventRecords, UpstreamEvent
from headwater.runtime.messaging import consume, durable_subscriber
from headwater.runtime.objectstore import ObjectStore
from headwater.runtime.service import Service
from headwater.services.change_detector.handlers import ChangeDetector
from headwater.services.change_detector.settings import ChangeDetectorSettings
from headwater.services.change_detector.store import SCHEMA

NAME = "change-detector"
MIGRATIONS = Path(__file__).parent / "migrations"


def build_app(
    settings: ChangeDetectorSettings,
    *,
    pool: asyncpg.Pool | None = None,
    store: ObjectStore | None = None,
) -> Service:
    service = Service.create(
        NAME,
        settings,
        schema=SCHEMA,
        migrations=MIGRATIONS,
        buckets=[settings.landing_bucket, settings.data_bucket],
        pool=pool,
        store=store,
    )
    app = ChangeDetector(service.res, settings.subjects, settings.datasets_cache_s)
    broker, s, metrics = service.broker, settings.subjects, service.res.metrics

    @durable_subscriber(broker, s, "change-detector-upstream")
    async def on_upstream(msg: NatsMessage) -> None:
        await consume(
            msg,
            UpstreamEvent,
            app.on_upstream,
            broker=broker,
            subjects=s,
            service=NAME,
            metrics=metrics,
        )

    @durable_subscriber(broker, s, "change-detector-s3")
    async def on_s3(msg: NatsMessage) -> None:
        await consume(
            msg, S3EventRecords, app.on_s3, broker=broker, subjects=s, service=NAME, metrics=metrics
        )

    return service
