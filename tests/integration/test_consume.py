"""How every service settles a message (headwater.runtime.messaging.consume), on a real
nats-server: a failure is retried with backoff and acked once it passes, however many
deliveries that takes (a retryable failure is never dropped); only bad input is dead-lettered."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import pytest
from faststream import Context
from faststream.nats import NatsBroker, NatsMessage
from faststream.nats.message import NatsBatchMessage

from headwater.contracts import PartitionLanded, Subjects
from headwater.runtime import messaging, topology
from headwater.runtime.metrics import Metrics
from headwater.runtime.settings import ServiceSettings
from headwater.sdk.client import HeadwaterClient

SHA = "a" * 64


@pytest.fixture
async def broker(nats_url: str, namespace: str) -> AsyncIterator[NatsBroker]:
    b = NatsBroker(nats_url)
    yield b
    await b.stop()


def count(metrics: Metrics, name: str) -> float | None:
    """The service's counter `name` for the family of these tests' events."""
    labels = {"service": "test", "family": "partition-landed"}
    return metrics.registry.get_sample_value(name, labels)


async def run_consumer(
    broker: NatsBroker,
    subjects: Subjects,
    outcomes: list[str],
    fail_times: int,
    metrics: Metrics | None = None,
) -> None:
    """The lineage-indexer's durable consumer, with a handler failing `fail_times` times."""

    async def process(event: PartitionLanded) -> None:
        outcomes.append("called")
        if len(outcomes) <= fail_times:
            raise RuntimeError("the database is down")

    @messaging.durable_subscriber(broker, subjects, "lineage-indexer")
    async def handle(msg: NatsMessage) -> None:
        await messaging.consume(
            msg,
            PartitionLanded,
            process,
            broker=broker,
            subjects=subjects,
            service="test",
            metrics=metrics,
        )

    await broker.connect()
    await topology.declare(broker.connection.jetstream(), subjects)
    await broker.start()
    event = PartitionLanded(
        event_id="e1",
        dataset="x",
        partition_key="k",
        data_sha=SHA,
        fingerprint=SHA,
        object_key=f"{SHA}.parquet",
        rows=1,
        bytes=1,
    )
    await messaging.publish(
        broker, subjects.partition_landed("x"), event, msg_id="e1", stream=subjects.events_stream
    )


async def settled(nats_url: str, namespace: str, timeout: float = 30) -> dict[str, int]:
    settings = ServiceSettings(nats_url=nats_url, namespace=namespace)
    async with HeadwaterClient(settings) as hw:
        js = hw.nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            info = await js.consumer_info(settings.subjects.events_stream, "lineage-indexer")
            if not info.num_pending and not info.num_ack_pending and info.delivered.stream_seq:
                return {"redelivered": int(info.num_redelivered or 0)}
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)


async def letters(nats_url: str, namespace: str) -> list[dict[str, object]]:
    async with HeadwaterClient(ServiceSettings(nats_url=nats_url, namespace=namespace)) as hw:
        return await hw.dead_letters()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # The backoff's shape is under test, not its production scale (0.5 s doubling to 30 s).
    monkeypatch.setattr(messaging, "NAK_BASE_DELAY_S", 0.01)
    monkeypatch.setattr(messaging, "NAK_MAX_DELAY_S", 0.05)


async def test_a_failure_that_passes_is_retried_then_acked(
    broker: NatsBroker, nats_url: str, namespace: str
) -> None:
    outcomes: list[str] = []
    metrics = Metrics("test", otlp=False)
    await run_consumer(broker, Subjects(namespace), outcomes, fail_times=2, metrics=metrics)
    await settled(nats_url, namespace)
    assert len(outcomes) == 3  # two failures, then success: acked, not redelivered again
    assert await letters(nats_url, namespace) == []
    assert count(metrics, "headwater_events_retried_total") == 2
    assert count(metrics, "headwater_events_handled_total") == 1
    assert count(metrics, "headwater_dead_letters_total") is None


async def test_a_long_failure_is_retried_past_the_old_delivery_limit_never_dropped(
    broker: NatsBroker, nats_url: str, namespace: str
) -> None:
    # Consumers once had max_deliver 10: the 10th failure was dead-lettered and the event
    # lost for good (a database down for two minutes). Now it is retried until it passes.
    outcomes: list[str] = []
    await run_consumer(broker, Subjects(namespace), outcomes, fail_times=25)
    await settled(nats_url, namespace)  # acked: nothing pending, nothing awaiting an ack
    assert len(outcomes) == 26  # 25 failures, then success
    assert await letters(nats_url, namespace) == []


async def test_bad_input_is_dead_lettered_on_its_first_delivery(
    broker: NatsBroker, nats_url: str, namespace: str
) -> None:
    subjects = Subjects(namespace)
    calls: list[str] = []
    metrics = Metrics("test", otlp=False)

    async def process(event: PartitionLanded) -> None:
        calls.append(event.event_id)

    @messaging.durable_subscriber(broker, subjects, "lineage-indexer")
    async def handle(msg: NatsMessage) -> None:
        await messaging.consume(
            msg,
            PartitionLanded,
            process,
            broker=broker,
            subjects=subjects,
            service="test",
            metrics=metrics,
        )

    await broker.connect()
    await topology.declare(broker.connection.jetstream(), subjects)
    await broker.start()
    await broker.publish(b'{"event_id": 1}', subjects.partition_landed("x"), stream=None)
    await settled(nats_url, namespace)
    assert calls == []
    [letter] = await letters(nats_url, namespace)
    assert letter["delivered"] == 1
    assert letter["service"] == "test"
    assert count(metrics, "headwater_events_rejected_total") == 1
    assert count(metrics, "headwater_dead_letters_total") == 1
    assert count(metrics, "headwater_events_handled_total") is None


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}),
        (b"not json at all", {"content-type": "application/json"}),
        (b"\xff\xfe invalid utf-8", {"content-type": "text/plain"}),
        (b'{"event_id": ' + b"9" * 5000 + b"}", {"content-type": "application/json"}),
    ],
    ids=["nested-100k", "json-content-type-not-json", "text-not-utf8", "5000-digit-int"],
)
async def test_a_body_the_bus_library_cannot_decode_is_dead_lettered_at_once(
    broker: NatsBroker, nats_url: str, namespace: str, body: bytes, headers: dict[str, str]
) -> None:
    """Headwater parses the raw bytes itself, whatever the content type claims."""
    subjects = Subjects(namespace)
    calls: list[str] = []

    async def process(event: PartitionLanded) -> None:
        calls.append(event.event_id)

    @messaging.durable_subscriber(broker, subjects, "lineage-indexer")
    async def handle(msg: NatsMessage) -> None:
        await messaging.consume(
            msg, PartitionLanded, process, broker=broker, subjects=subjects, service="test"
        )

    await broker.connect()
    await topology.declare(broker.connection.jetstream(), subjects)
    await broker.start()
    js = broker.connection.jetstream()
    await js.publish(subjects.partition_landed("x"), body, headers=headers)
    await settled(nats_url, namespace)
    assert calls == []
    [letter] = await letters(nats_url, namespace)
    assert letter["delivered"] == 1


async def test_one_event_that_always_fails_does_not_hold_back_its_batch(
    broker: NatsBroker, nats_url: str, namespace: str
) -> None:
    """`consume_batch`: when a batch fails, its events are processed one by one, so the others
    are acked and only the failing one is retried (never dead-lettered: it may pass later)."""
    subjects = Subjects(namespace)
    done: list[str] = []
    poison_tries: list[int] = []
    metrics = Metrics("test", otlp=False)

    async def process(events: list[PartitionLanded], traces: list[object]) -> list[None]:
        if any(e.event_id == "poison" for e in events):
            poison_tries.append(len(events))
            raise RuntimeError("a bug this event hits")
        done.extend(e.event_id for e in events)
        return [None] * len(events)

    @messaging.durable_subscriber(broker, subjects, "lineage-indexer", batch_size=10, batch=True)
    async def handle(
        _body: list[bytes], batch: Annotated[NatsBatchMessage, Context("message")]
    ) -> None:
        await messaging.consume_batch(
            batch,
            lambda raw: PartitionLanded.model_validate_json(raw.data),
            process,
            broker=broker,
            subjects=subjects,
            service="test",
            metrics=metrics,
        )

    await broker.connect()
    await topology.declare(broker.connection.jetstream(), subjects)
    js = broker.connection.jetstream()
    for event_id in ("good-1", "poison", "good-2"):
        event = PartitionLanded(
            event_id=event_id,
            dataset="x",
            partition_key="k",
            data_sha=SHA,
            fingerprint=SHA,
            object_key=f"{SHA}.parquet",
            rows=1,
            bytes=1,
        )
        await js.publish(subjects.partition_landed("x"), event.model_dump_json().encode())
    await broker.start()
    deadline = time.monotonic() + 30
    while sorted(done) != ["good-1", "good-2"] or len(poison_tries) < 3:
        assert time.monotonic() < deadline, (done, poison_tries)
        await asyncio.sleep(0.05)
    assert "poison" not in done
    assert poison_tries[0] == 3  # the whole batch first, then the poison alone, again and again
    assert set(poison_tries[1:]) == {1}
    assert await letters(nats_url, namespace) == []
    # Counted per event: the good ones handled once, the poison retried on each failure.
    assert count(metrics, "headwater_events_handled_total") == 2
    assert (count(metrics, "headwater_events_retried_total") or 0) >= 2
