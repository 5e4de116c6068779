"""The transactional outbox: an event is published if and only if its state change committed.

A handler adds events to its schema's `outbox` table in the transaction that commits the
effect, then flushes before acknowledging its input; a timer flushes what a crash left.
JetStream's duplicate window (message id) absorbs a publish repeated after a crash.
"""

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import asyncpg
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import propagate

from headwater.contracts import Event, Subjects, family_of, subject_of

_log = logging.getLogger(__name__)

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    subject text NOT NULL,
    stream text NOT NULL,
    msg_id text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
-- The trace context the event was added in (W3C headers): it is published in that trace.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS trace jsonb;
"""


@dataclass(frozen=True)
class OutboxItem:
    """One event to publish: where, its message id, and the trace it continues (None: the
    current one)."""

    subject: str
    stream: str
    msg_id: str
    event: Event
    trace: otel_context.Context | None = None

    @classmethod
    def of(
        cls,
        subjects: Subjects,
        event: Event,
        msg_id: str,
        trace: otel_context.Context | None = None,
    ) -> "OutboxItem":
        """`event` on its family's subject and stream (headwater.contracts.registry)."""
        stream = family_of(event).stream(subjects)
        return cls(subject_of(subjects, event), stream, msg_id, event, trace)


class Outbox:
    """The outbox of one service schema."""

    def __init__(self, schema: str, unordered: Collection[str] = ()) -> None:
        self.table = f'"{schema}".outbox'
        # Streams whose consumers need no order (a work queue): published all at once.
        self.unordered = frozenset(unordered)

    async def add(self, conn: asyncpg.Connection, item: OutboxItem) -> None:
        """Queue one item in the caller's transaction."""
        await self.add_many(conn, [item])

    async def add_many(self, conn: asyncpg.Connection, items: Sequence[OutboxItem]) -> None:
        """Queue `items` in the caller's transaction, in order, in one statement (each with
        its trace, or the current one)."""
        if not items:
            return
        traces: list[str | None] = []
        for item in items:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=item.trace)
            traces.append(json.dumps(carrier) if carrier else None)
        await conn.execute(
            f"INSERT INTO {self.table} (subject, stream, msg_id, payload, trace)"
            " SELECT s, st, m, p, t::jsonb FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::bytea[], $5::text[]) WITH ORDINALITY AS n(s, st, m, p, t, i) ORDER BY i",
            [i.subject for i in items],
            [i.stream for i in items],
            [i.msg_id for i in items],
            [i.event.model_dump_json().encode() for i in items],
            traces,
        )

    async def flush(self, pool: asyncpg.Pool, broker: NatsBroker) -> int:
        """Publish every unpublished event in order; returns how many were sent."""
        sent = 0
        while True:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"SELECT id, subject, stream, msg_id, payload, trace FROM {self.table}"
                    " WHERE published_at IS NULL ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED"
                )
                if not rows:
                    return sent
                # Acknowledged publishes in flight together (one round trip each would bound
                # the rate by the latency); in order within a subject of an ordered stream.
                groups: dict[object, list[asyncpg.Record]] = {}
                for row in rows:
                    key = row["id"] if row["stream"] in self.unordered else row["subject"]
                    groups.setdefault(key, []).append(row)
                gate, js = asyncio.Semaphore(_IN_FLIGHT), broker.connection.jetstream()
                await asyncio.gather(*(_publish(js, g, gate) for g in groups.values()))
                await conn.execute(
                    f"UPDATE {self.table} SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
                sent += len(rows)

    async def prune(self, pool: asyncpg.Pool, older_than_s: float, batch: int = 10_000) -> int:
        """Delete published events older than `older_than_s` (past the duplicate window a
        repeat of them would not be absorbed anyway); oldest first, at most `batch`."""
        status: str = await pool.execute(
            f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table}"
            " WHERE published_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2)",
            older_than_s,
            batch,
        )
        return int(status.split()[-1])

    async def pending(self, pool: asyncpg.Pool) -> int:
        """How many events are committed but not yet published."""
        value = await pool.fetchval(f"SELECT count(*) FROM {self.table} WHERE published_at IS NULL")
        return int(value)


_IN_FLIGHT = 64  # acknowledged publishes awaited at once
_PUBLISH_TIMEOUT_S = 30.0  # for JetStream's ack (a busy server fsyncs every write)


async def _publish(
    js: JetStreamContext, rows: list[asyncpg.Record], gate: asyncio.Semaphore
) -> None:
    for row in rows:
        # Published in the trace of what caused it, whoever flushes it and when: the trace
        # context it was added in travels in its headers (W3C trace context), as a
        # subscriber's telemetry reads it.
        headers = json.loads(row["trace"]) if row["trace"] else {}
        headers.update({"Nats-Msg-Id": row["msg_id"], "content-type": "application/json"})
        async with gate:
            await js.publish(
                row["subject"],
                bytes(row["payload"]),
                stream=row["stream"],
                headers=headers,
                timeout=_PUBLISH_TIMEOUT_S,
            )
