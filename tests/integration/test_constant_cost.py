"""The scheduler's work for one event does not grow with the partitions it holds (issue: scale).
On a real Postgres and a real nats-server, the scheduler's own handler is given one landing in
the middle of N held partitions; Postgres counts the rows it read (`pg_stat_user_tables`)."""

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import pytest
from faststream.nats import NatsBroker

from headwater.contracts import (
    CodeChanged,
    DatasetDefinition,
    InputDefinition,
    PartitionLanded,
)
from headwater.runtime import db, topology
from headwater.runtime.service import Resources
from headwater.services.scheduler import store
from headwater.services.scheduler.handlers import Scheduler
from headwater.services.scheduler.settings import SchedulerSettings

pytestmark = pytest.mark.timeout(120)
MIGRATIONS = Path(store.__file__).parent / "migrations"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


DEFINITIONS = [
    DatasetDefinition(name="sales", kind="source", code_sha=sha("sales")),
    DatasetDefinition(
        name="daily", kind="sql", code_sha=sha("daily"), inputs=(InputDefinition(dataset="sales"),)
    ),
    DatasetDefinition(
        name="pairs",
        kind="sql",
        code_sha=sha("pairs"),
        inputs=(InputDefinition(dataset="daily", mapping="window", size=2),),
    ),
]


async def hold(conn: asyncpg.Connection, n: int) -> None:
    """N partitions of every dataset, ready, each with its materialization and task."""
    keys = [f"k{i:06d}" for i in range(n)]
    rows = [(ds.name, k, sha(f"{ds.name}/{k}")) for ds in DEFINITIONS for k in keys]
    await conn.executemany(
        "INSERT INTO scheduler.partitions (dataset, partition_key, state, fingerprint,"
        " desired_fingerprint, data_sha, object_key, rows, bytes)"
        " VALUES ($1, $2, 'ready', $3, $3, $3, $3 || '.parquet', 1, 1)",
        rows,
    )
    await conn.executemany(
        "INSERT INTO scheduler.materializations (fingerprint, fingerprint_version, dataset,"
        " partition_key, data_sha, object_key, rows, bytes, inputs)"
        " VALUES ($3, 1, $1, $2, $3, $3 || '.parquet', 1, 1, '[]')",
        rows,
    )
    await conn.executemany(
        "INSERT INTO scheduler.tasks (fingerprint, dataset, partition_key, state)"
        " VALUES ($3, $1, $2, 'succeeded')",
        [r for r in rows if r[0] != "sales"],
    )
    await conn.execute("ANALYZE")


async def rows_read(admin: asyncpg.Connection) -> int:
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    value = await admin.fetchval(
        "SELECT sum(seq_tup_read + coalesce(idx_tup_fetch, 0)) FROM pg_stat_user_tables"
        " WHERE schemaname = 'scheduler'"
    )
    return int(value or 0)


async def one_landing(database: str, nats_url: str, namespace: str, held: int) -> int:
    settings = SchedulerSettings(namespace=f"{namespace}{held}", nats_url=nats_url, pg_dsn=database)
    subjects = settings.subjects
    broker = NatsBroker(nats_url)
    await broker.connect()
    await topology.declare(broker.connection.jetstream(), subjects)
    admin = await asyncpg.connect(database)
    try:
        setup = await db.create_pool(database)
        res = Resources(
            settings,
            broker,
            schema=store.SCHEMA,
            migrations=MIGRATIONS,
            buckets=[],
            pool=setup,
            store=None,
        )
        await res.open()
        app = Scheduler(res, subjects)
        for d in DEFINITIONS:
            await app.on_code_changed(
                CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)
            )
        async with setup.acquire() as conn:
            await hold(conn, held)
        await setup.close()  # its backends exit and flush their statistics
        await asyncio.sleep(1)
        await admin.execute("SELECT pg_stat_reset()")

        pool = await db.create_pool(database, min_size=1, max_size=1)
        res = Resources(
            settings,
            broker,
            schema=store.SCHEMA,
            migrations=None,
            buckets=[],
            pool=pool,
            store=None,
        )
        app = Scheduler(res, subjects)
        new = f"k{held // 2:06d}-b"  # lands in the middle of what is held
        data = sha(f"sales/{new}")
        await app.on_partition_landed(
            PartitionLanded(
                event_id="landed:new",
                dataset="sales",
                partition_key=new,
                data_sha=data,
                fingerprint=data,
                object_key=f"{data}.parquet",
                rows=1,
                bytes=1,
                source_version=1,
            )
        )
        async with pool.acquire() as conn:
            states = dict(
                await conn.fetch(
                    "SELECT dataset || '/' || partition_key, state FROM scheduler.partitions"
                    " WHERE partition_key = $1",
                    new,
                )
            )
        await pool.close()
        # Statistics reach the shared counters when the backend exits: wait for them.
        before, count = -1, await rows_read(admin)
        while count != before:
            await asyncio.sleep(0.5)
            before, count = count, await rows_read(admin)
    finally:
        await admin.close()
        await broker.stop()
    # The landing did its work: the new day is queued, the window over it waits for it.
    assert states == {f"sales/{new}": "ready", f"daily/{new}": "queued", f"pairs/{new}": "waiting"}
    return count


async def test_rows_read_for_one_landing_do_not_grow_with_partitions_held(
    database: str, nats_url: str, namespace: str, pg_dsn: str
) -> None:
    # Two databases: each run counts only its own scheduler schema.
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{namespace}_big"')
    finally:
        await admin.close()
    big = database.rsplit("/", 1)[0] + f"/{namespace}_big"
    small_count = await one_landing(database, nats_url, namespace, 1_000)
    big_count = await one_landing(big, nats_url, namespace, 10_000)
    assert big_count == small_count, (small_count, big_count)
    assert big_count < 200  # a few rows per partition touched, not thousands
