"""Retention (docs/reliability.md): nothing grows forever, and nothing unprocessed is pruned.
On a real nats-server and a real Postgres."""

from pathlib import Path

import nats
from nats.js.api import RetentionPolicy

from headwater.contracts import Subjects
from headwater.runtime import db, topology
from headwater.runtime.outbox import OUTBOX_DDL, Outbox
from headwater.services.scheduler import store as scheduler_store

SCHEDULER_MIGRATIONS = Path(scheduler_store.__file__).parent / "migrations"


async def test_streams_keep_a_message_until_its_readers_acked_it_and_bound_dead_letters(
    nats_url: str, namespace: str
) -> None:
    s = Subjects(namespace)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await topology.declare(js, s)
        configs = {n: (await js.stream_info(n)).config for n in topology_streams(s)}
        assert configs[s.upstream_stream].retention == RetentionPolicy.INTEREST
        assert configs[s.events_stream].retention == RetentionPolicy.INTEREST
        assert configs[s.tasks_stream].retention == RetentionPolicy.WORK_QUEUE
        dlq = configs[s.dlq_stream]
        assert (dlq.max_age, dlq.max_msgs) == (topology.DLQ_MAX_AGE_S, topology.DLQ_MAX_MSGS)
        for name in (s.upstream_stream, s.events_stream, s.tasks_stream):
            assert configs[name].max_age in (None, 0), f"{name} must not drop by age"

        # An event stays while any reader has not acked it, and goes once all have.
        await js.publish(s.partition_landed("x"), b"{}")
        readers = ("scheduler", "lineage-indexer")
        subs = [
            await js.pull_subscribe_bind(durable, stream=s.events_stream) for durable in readers
        ]
        [first] = await subs[0].fetch(1, timeout=5)
        await first.ack_sync()
        assert (await js.stream_info(s.events_stream)).state.messages == 1
        [second] = await subs[1].fetch(1, timeout=5)
        await second.ack_sync()
        assert (await js.stream_info(s.events_stream)).state.messages == 0
    finally:
        await nc.close()


def topology_streams(s: Subjects) -> list[str]:
    return [c.name for c in topology.streams(s) if c.name]


async def test_the_outbox_forgets_published_rows_past_retention_never_unpublished_ones(
    database: str,
) -> None:
    pool = await db.create_pool(database)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA svc")
            await conn.execute("SET search_path TO svc")
            await conn.execute(OUTBOX_DDL)
            await conn.executemany(
                "INSERT INTO svc.outbox (subject, stream, msg_id, payload, created_at,"
                " published_at) VALUES ($1, 'S', $1, '\\x', now() - make_interval(hours => $2),"
                " CASE WHEN $3 THEN now() - make_interval(hours => $2) END)",
                [("old-published", 5, True), ("old-unpublished", 5, False), ("new", 0, True)],
            )
        pruned = await Outbox("svc").prune(pool, older_than_s=3600)
        left = [r["msg_id"] for r in await pool.fetch("SELECT msg_id FROM svc.outbox ORDER BY id")]
    finally:
        await pool.close()
    assert pruned == 1
    assert left == ["old-unpublished", "new"]


async def test_the_scheduler_inbox_forgets_event_ids_past_retention(database: str) -> None:
    pool = await db.create_pool(database)
    try:
        await db.apply_migrations(pool, scheduler_store.SCHEMA, SCHEDULER_MIGRATIONS)
        async with pool.acquire() as conn:
            assert await scheduler_store.first_time(conn, "recent")
            await conn.execute(
                "INSERT INTO scheduler.inbox (event_id, processed_at)"
                " VALUES ('old', now() - interval '8 days')"
            )
            pruned = await scheduler_store.prune_inbox(conn, older_than_s=7 * 24 * 3600)
            kept = await conn.fetch("SELECT event_id FROM scheduler.inbox")
            # Within retention a redelivery is still recognised.
            assert not await scheduler_store.first_time(conn, "recent")
    finally:
        await pool.close()
    assert pruned == 1
    assert [r["event_id"] for r in kept] == ["recent"]
