"""JetStream streams and durable consumers, declared in one place.

Every stream is file-backed; the embedded nats-server runs with `sync_interval: always`, so
an acknowledged publish is on disk. Consumers ack explicitly and are redelivered for as long as
it takes (no `max_deliver`): only bad input leaves a stream unprocessed, as a dead letter.

Retention fits each stream's role (docs/reliability.md, "Retention"): a message of the input,
events and work streams is kept until every consumer that reads it has acked it, never by age,
so those streams hold only the backlog; when the server's store is full a publish fails (the
publisher retries) rather than old messages being dropped. The dead-letter stream is bounded
by age and count and drops its oldest. (No `max_bytes`: JetStream reserves it up front.)
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError

from headwater.contracts import Subjects

_log = logging.getLogger(__name__)
DUPLICATE_WINDOW_S = 120.0
MAX_DELIVER = -1  # unlimited: a retryable failure is retried until it passes
DLQ_MAX_AGE_S = 30 * 24 * 3600.0
DLQ_MAX_MSGS = 100_000


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable consumer: who reads which subjects of which stream."""

    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 30.0
    max_deliver: int = MAX_DELIVER


def streams(s: Subjects) -> list[StreamConfig]:
    """The four streams: upstream input, facts between services, work, dead letters."""
    common: dict[str, Any] = {
        "storage": StorageType.FILE,
        "duplicate_window": DUPLICATE_WINDOW_S,
        "max_msg_size": 8 * 1024 * 1024,
    }
    # Kept until every consumer acked; never dropped to make room.
    held: dict[str, Any] = {**common, "discard": DiscardPolicy.NEW}
    return [
        StreamConfig(
            name=s.upstream_stream,
            subjects=[s.upstream_all, s.s3_events],
            retention=RetentionPolicy.INTEREST,
            description="what upstream systems publish (the public contract)",
            **held,
        ),
        StreamConfig(
            name=s.events_stream,
            subjects=[s.events_all],
            retention=RetentionPolicy.INTEREST,
            description="facts between services: code changed, partition landed, task failed",
            **held,
        ),
        StreamConfig(
            name=s.tasks_stream,
            subjects=[s.tasks_all],
            retention=RetentionPolicy.WORK_QUEUE,
            description="work for executors (competing consumers)",
            **held,
        ),
        StreamConfig(
            name=s.dlq_stream,
            subjects=[s.dlq_all],
            retention=RetentionPolicy.LIMITS,
            description="rejected input, kept for inspection and replay (bounded; oldest dropped)",
            discard=DiscardPolicy.OLD,
            max_age=DLQ_MAX_AGE_S,
            max_msgs=DLQ_MAX_MSGS,
            **common,
        ),
    ]


def consumers(
    s: Subjects, task_ack_wait_s: float = 60.0, event_ack_wait_s: float = 30.0
) -> dict[str, ConsumerSpec]:
    """Every durable consumer, by a name the services refer to."""
    w = event_ack_wait_s
    return {
        "change-detector-upstream": ConsumerSpec(
            s.upstream_stream, "change-detector-upstream", s.upstream_all, ack_wait_s=w
        ),
        "change-detector-s3": ConsumerSpec(
            s.upstream_stream, "change-detector-s3", s.s3_events, ack_wait_s=w
        ),
        "scheduler": ConsumerSpec(s.events_stream, "scheduler", s.events_all, ack_wait_s=w),
        "lineage-indexer": ConsumerSpec(
            s.events_stream, "lineage-indexer", s.events_all, ack_wait_s=w
        ),
        "executor": ConsumerSpec(
            s.tasks_stream, "executor", s.tasks_all, ack_wait_s=task_ack_wait_s
        ),
    }


async def declare(
    js: JetStreamContext, s: Subjects, task_ack_wait_s: float = 60.0, event_ack_wait_s: float = 30.0
) -> None:
    """Create or update every stream, consumer and key-value bucket (idempotent). Every
    service of the embedded stack calls it at start, with the same settings; a deployment
    with least-privilege users runs it once, as an admin (`python -m headwater.runtime.declare_topology`)."""
    for config in streams(s):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
    buckets = {
        s.leases_bucket: "task leases: who may commit the result of a fingerprint",
        s.cancels_bucket: "cancelled fingerprints: executors drop their tasks",
    }
    for bucket, description in buckets.items():
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    storage=StorageType.FILE,
                    ttl=7 * 24 * 3600.0,
                    description=description,
                )
            )
    for spec in consumers(s, task_ack_wait_s, event_ack_wait_s).values():
        await js.add_consumer(
            spec.stream,
            ConsumerConfig(
                durable_name=spec.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=spec.ack_wait_s,
                max_deliver=spec.max_deliver,
                filter_subject=spec.filter_subject,
                max_ack_pending=1000,
            ),
        )


async def wait_for_consumers(
    js: JetStreamContext, bound: list[tuple[str, str]], *, interval_s: float = 1.0
) -> None:
    """Return once every (stream, durable) consumer exists: a service that may not declare the
    topology waits for the topology step instead of failing on a consumer it cannot create."""
    waited = 0
    for stream, durable in bound:
        while True:
            try:
                await js.consumer_info(stream, durable)
                break
            except NotFoundError:
                if waited % 30 == 0:
                    _log.warning(
                        "consumer %s of stream %s does not exist yet: waiting for the topology "
                        "step (python -m headwater.runtime.declare_topology, as an admin NATS user)",
                        durable,
                        stream,
                    )
                waited += 1
                await asyncio.sleep(interval_s)
