"""The scheduler's work for one event does not grow with the partitions it holds (issue: scale).
On a real Postgres and a real nats-server, the scheduler's own handler is given one landing in
the middle of N held partitions; Postgres counts the rows it read (`pg_stat_user_tables`)."""

import asyncio
import datetime
from collections.abc import Callable

import asyncpg
import pytest

from headwater.contracts import CodeChanged, DatasetDefinition
from headwater.core.mappings import Mapping
from tests.integration.scheduler_harness import definitions, scheduler, sha, source_landed

pytestmark = pytest.mark.timeout(120)
DEFINITIONS = definitions()
# A source and its monthly rollup, as a spec's `{mapping: rollup, to: month}` is told to the
# scheduler.
MONTHLY = [
    DEFINITIONS[0],
    DatasetDefinition(
        name="monthly",
        kind="sql",
        code_sha=sha("monthly"),
        inputs=(Mapping(mapping="rollup", to="month").definition("sales"),),
    ),
]


def plain_keys(n: int) -> list[str]:
    return [f"k{i:06d}" for i in range(n)]


def days(n: int) -> list[str]:
    first = datetime.date(1990, 1, 1)
    return [(first + datetime.timedelta(days=i)).isoformat() for i in range(n)]


async def hold(conn: asyncpg.Connection, defs: list[DatasetDefinition], keys: list[str]) -> None:
    """The partitions `keys` of every dataset, ready, each with its materialization and task
    (a rollup's keys are those its inputs roll into)."""
    rows = []
    for ds in defs:
        mine = keys
        if ds.inputs and (m := Mapping.of(ds.inputs[0])).mapping == "rollup":
            mine = sorted(m.output_keys(keys))
        rows += [(ds.name, k, sha(f"{ds.name}/{k}")) for k in mine]
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


async def one_landing(
    database: str,
    nats_url: str,
    namespace: str,
    held: int,
    defs: list[DatasetDefinition] = DEFINITIONS,
    keys: Callable[[int], list[str]] = plain_keys,
) -> tuple[int, dict[str, str]]:
    """Rows the scheduler read for one landing among `held` keys, and the states of the
    partitions named like the new key."""
    admin = await asyncpg.connect(database)
    try:
        async with scheduler(database, nats_url, f"{namespace}{held}") as app:
            for d in defs:
                await app.on_code_changed(
                    CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)
                )
            async with app.res.pool.acquire() as conn:
                await hold(conn, defs, keys(held))
        await asyncio.sleep(1)  # the closed pool's backends flush their statistics
        await admin.execute("SELECT pg_stat_reset()")

        async with scheduler(database, nats_url, f"{namespace}{held}", pool_size=1) as app:
            new = f"{keys(held)[held // 2]}-b"  # lands in the middle of what is held
            await app.on_partition_landed(source_landed(new))
            async with app.res.pool.acquire() as conn:
                states = dict(
                    await conn.fetch(
                        "SELECT dataset || '/' || partition_key, state FROM scheduler.partitions"
                        " WHERE partition_key = $1",
                        new,
                    )
                )
        # Statistics reach the shared counters when the backend exits: wait for them.
        before, count = -1, await rows_read(admin)
        while count != before:
            await asyncio.sleep(0.5)
            before, count = count, await rows_read(admin)
    finally:
        await admin.close()
    return count, states


async def second_database(pg_dsn: str, database: str, namespace: str) -> str:
    """Another database beside the test's: each run counts only its own scheduler schema."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{namespace}_big"')
    finally:
        await admin.close()
    return database.rsplit("/", 1)[0] + f"/{namespace}_big"


async def test_rows_read_for_one_landing_do_not_grow_with_partitions_held(
    database: str, nats_url: str, namespace: str, pg_dsn: str
) -> None:
    # Two databases: each run counts only its own scheduler schema.
    big = await second_database(pg_dsn, database, namespace)
    small_count, _ = await one_landing(database, nats_url, namespace, 1_000)
    big_count, states = await one_landing(big, nats_url, namespace, 10_000)
    # The landing did its work: the new day is queued, the window over it waits for it.
    new = f"{plain_keys(10_000)[5_000]}-b"
    assert states == {f"sales/{new}": "ready", f"daily/{new}": "queued", f"pairs/{new}": "waiting"}
    assert big_count == small_count, (small_count, big_count)
    assert big_count < 200  # a few rows per partition touched, not thousands


async def test_rows_read_for_a_day_of_a_monthly_rollup_do_not_grow_with_days_held(
    database: str, nats_url: str, namespace: str, pg_dsn: str
) -> None:
    """A month rollup reads the days of its month, found by prefix, not every day held (it
    travels to the scheduler as a pattern, which it reads back as the month)."""
    big = await second_database(pg_dsn, database, namespace)
    small_count, _ = await one_landing(database, nats_url, namespace, 1_000, MONTHLY, days)
    big_count, states = await one_landing(big, nats_url, namespace, 10_000, MONTHLY, days)
    # 10,000 days from 1990-01-01: the middle one is 2003-09-09, in month 2003-09.
    new = f"{days(10_000)[5_000]}-b"
    assert states == {f"sales/{new}": "ready"}
    conn = await asyncpg.connect(big)
    try:
        month = await conn.fetchval(
            "SELECT state FROM scheduler.partitions WHERE dataset = 'monthly'"
            " AND partition_key = $1",
            new[:7],
        )
    finally:
        await conn.close()
    assert month == "queued"
    # About the 30 days of one month, not 10,000 (at 1,000 held Postgres scans some small
    # tables whole, so the smaller count is not always the lower).
    assert big_count < 400, (small_count, big_count)
    assert big_count <= small_count, (small_count, big_count)
