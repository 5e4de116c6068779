"""The scheduler's handlers in-process, on a real Postgres and a real nats-server: for tests
that drive its events directly and read its tables (state written directly where needed)."""

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from faststream.nats import NatsBroker

from headwater.contracts import DatasetDefinition, InputDefinition, PartitionLanded
from headwater.runtime import db, topology
from headwater.runtime.service import Resources
from headwater.services.scheduler import store
from headwater.services.scheduler.handlers import Scheduler
from headwater.services.scheduler.settings import SchedulerSettings

MIGRATIONS = Path(store.__file__).parent / "migrations"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def definitions(daily_code: str = "daily") -> list[DatasetDefinition]:
    """A source, an identity dataset over it and a window of 2 over that."""
    return [
        DatasetDefinition(name="sales", kind="source", code_sha=sha("sales")),
        DatasetDefinition(
            name="daily",
            kind="sql",
            code_sha=sha(daily_code),
            inputs=(InputDefinition(dataset="sales"),),
        ),
        DatasetDefinition(
            name="pairs",
            kind="sql",
            code_sha=sha("pairs"),
            inputs=(InputDefinition(dataset="daily", mapping="window", size=2),),
        ),
    ]


def source_landed(key: str, version: int = 1, dataset: str = "sales") -> PartitionLanded:
    """What the change-detector says of `dataset/key` at content `version`."""
    data = source_sha(key, version, dataset)
    return PartitionLanded(
        event_id=f"landed:{dataset}:{key}:v{version}",
        dataset=dataset,
        partition_key=key,
        data_sha=data,
        fingerprint=data,
        object_key=f"{data}.parquet",
        rows=1,
        bytes=1,
        source_version=version,
    )


def source_sha(key: str, version: int = 1, dataset: str = "sales") -> str:
    return sha(f"{dataset}/{key}/v{version}")


@contextlib.asynccontextmanager
async def scheduler(
    database: str, nats_url: str, namespace: str, *, pool_size: int = 5
) -> AsyncIterator[Scheduler]:
    """A Scheduler with its own pool (closed on exit: its backends flush their statistics)."""
    settings = SchedulerSettings(namespace=namespace, nats_url=nats_url, pg_dsn=database)
    broker = NatsBroker(nats_url)
    await broker.connect()
    pool = await db.create_pool(database, min_size=1, max_size=pool_size)
    try:
        await topology.declare(broker.connection.jetstream(), settings.subjects)
        res = Resources(
            settings,
            broker,
            schema=store.SCHEMA,
            migrations=MIGRATIONS,
            buckets=[],
            pool=pool,
            store=None,
        )
        await res.open()
        yield Scheduler(res, settings.subjects)
    finally:
        await pool.close()
        await broker.stop()
