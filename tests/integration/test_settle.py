"""Coalescing on a live feed, on a real Postgres and nats-server: a dataset with `settle:` asks
for a partition's computation once its inputs have stopped changing (the days of a month
arriving one after another run the month once, and its `why` says what was coalesced); without
it, a newer computation of a queued partition replaces the request not yet answered."""

import asyncio
import time

import asyncpg
import pytest

from headwater.contracts import CodeChanged, DatasetDefinition, InputDefinition
from headwater.core import hashing
from tests.integration.scheduler_harness import scheduler, sha, source_landed, source_sha

pytestmark = pytest.mark.timeout(120)
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]
SETTLE_S = 1.0


def definitions(settle_s: float | None) -> list[DatasetDefinition]:
    return [
        DatasetDefinition(name="sales", kind="source", code_sha=sha("sales")),
        DatasetDefinition(
            name="monthly",
            kind="sql",
            code_sha=sha("monthly"),
            inputs=(InputDefinition(dataset="sales", mapping="rollup", pattern=r"^(\d{4}-\d{2})"),),
            settle_s=settle_s,
        ),
    ]


async def tasks(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT fingerprint, state, reason, error FROM scheduler.tasks"
        " WHERE dataset = 'monthly' ORDER BY requested_at"
    )


async def test_a_month_whose_days_arrive_in_quick_succession_runs_once_they_settle(
    database: str, nats_url: str, namespace: str
) -> None:
    async with scheduler(database, nats_url, namespace) as app:
        for d in definitions(SETTLE_S):
            await app.handle([CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)])
        for day in DAYS:  # one event each, as a live feed delivers them
            assert await app.handle([source_landed(day)]) == [None]
            await app.settle_due()  # not due: nothing is asked for yet
        async with app.res.pool.acquire() as conn:
            assert await tasks(conn) == []
            row = await conn.fetchrow(
                "SELECT state, reason FROM scheduler.partitions WHERE dataset = 'monthly'"
            )
        assert row is not None
        assert row["state"] == "queued"
        assert row["reason"].startswith("settling: runs at ")
        assert "3 change(s) so far, settle 1s" in row["reason"]

        # Once the inputs have been quiet for the delay, the month is asked for, once, over
        # every day that arrived.
        deadline = time.monotonic() + 30
        while True:
            await app.settle_due()
            async with app.res.pool.acquire() as conn:
                asked = await tasks(conn)
                held = await conn.fetchval("SELECT count(*) FROM scheduler.settling")
            if asked or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        inputs = [("sales", day, source_sha(day)) for day in DAYS]
        [task] = asked
        assert task["fingerprint"] == hashing.fingerprint(sha("monthly"), inputs)
        assert task["state"] == "requested"
        assert "3 input changes coalesced into one run (settle 1s)" in task["reason"]
        assert held == 0


async def test_without_a_settle_delay_a_newer_computation_replaces_the_queued_request(
    database: str, nats_url: str, namespace: str
) -> None:
    async with scheduler(database, nats_url, namespace) as app:
        for d in definitions(None):
            await app.handle([CodeChanged(event_id=f"code:{d.name}", spec_version=1, dataset=d)])
        assert await app.handle([source_landed(DAYS[0])]) == [None]
        assert await app.handle([source_landed(DAYS[1])]) == [None]
        async with app.res.pool.acquire() as conn:
            first, second = await tasks(conn)
            held = await conn.fetchval("SELECT count(*) FROM scheduler.settling")
    # Asked for at once (nothing held), and the first request dropped for the second, which
    # says so.
    assert held == 0
    assert (first["state"], first["error"]) == (
        "cancelled",
        f"cancelled: superseded by {second['fingerprint'][:12]}",
    )
    assert second["state"] == "requested"
    assert f"replaces request {first['fingerprint'][:12]}" in second["reason"]
