"""The shared broker set-up and the one way every service consumes and publishes.

`consume` gives each JetStream message exactly one outcome, and only after its effects are
committed: ack on success; dead-letter then terminate on permanent errors (bad input); a
delayed nak with capped backoff on anything else, for as long as it takes. A retryable failure
(a database, object store or bus that does not answer, or a bug being fixed) is never dropped:
consumers have no `max_deliver`, and only bad input reaches the dead-letter stream.
"""

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker, NatsMessage, NatsUserPassword, PullSub
from faststream.nats.message import NatsBatchMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.subscriber.usecases import LogicSubscriber
from faststream.nats.subscriber.usecases import stream_pull_subscriber as _pull
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from headwater.contracts import (
    FAMILIES,
    DeadLetter,
    Event,
    Subjects,
    dataset_of,
    family_at,
    family_of,
    parse_model,
    subject_of,
)
from headwater.contracts.errors import HeadwaterError, InputError, Superseded
from headwater.runtime.metrics import Metrics
from headwater.runtime.settings import ServiceSettings
from headwater.runtime.telemetry import (
    CODE_SHA,
    DATA_SHA,
    DATASET,
    ERROR_TYPE,
    FAMILY,
    FINGERPRINT,
    MESSAGING_BATCH_COUNT,
    MESSAGING_DESTINATION,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION,
    MESSAGING_SYSTEM,
    OUTCOME,
    PARTITION,
)
from headwater.runtime.telemetry import span as telemetry_span
from headwater.runtime.topology import consumers

_log = logging.getLogger(__name__)

# FastStream 0.7's pull loop suppresses nats.errors.TimeoutError, but nats-py 2.16's fetch can
# raise the builtin asyncio one (its superclass) when a fetch's deadline lapses: the loop task
# then dies and is restarted with an ERROR traceback. Suppressing the superclass is the fix.
_pull.TimeoutError = TimeoutError  # type: ignore[attr-defined,assignment]

E = TypeVar("E", bound=BaseModel)
# A letter keeps this much of the rejected payload: every input the contract accepts (256 KiB)
# fits whole, so it can be replayed; base64 and the letter's fields stay under NATS's 1 MiB.
DLQ_PAYLOAD_BYTES = 512 * 1024
# This process's redelivery backoff: Service.create sets it from the settings
# (`redelivery_base_s`, `redelivery_cap_s`, whose defaults these are).
NAK_BASE_DELAY_S = 0.5
NAK_MAX_DELAY_S = 30.0
STUCK_LOG_EVERY = 20  # a message failing for long logs its traceback again this often


def set_redelivery_backoff(base_s: float, cap_s: float) -> None:
    """Redeliver what fails after `base_s`, doubling per delivery up to `cap_s`."""
    global NAK_BASE_DELAY_S, NAK_MAX_DELAY_S
    NAK_BASE_DELAY_S, NAK_MAX_DELAY_S = base_s, cap_s


def make_broker(
    settings: ServiceSettings, service: str, tracer: TracerProvider, metrics: Metrics | None = None
) -> NatsBroker:
    """A FastStream NATS broker with OpenTelemetry propagation through message headers (and
    FastStream's messaging durations among the service's metrics)."""
    security = None
    if settings.nats_user:
        security = NatsUserPassword(settings.nats_user, settings.nats_password or "")
    return NatsBroker(
        settings.nats_url,
        name=f"headwater-{service}",
        middlewares=[
            NatsTelemetryMiddleware(
                tracer_provider=tracer,
                meter_provider=metrics.provider if metrics is not None else None,
            )
        ],
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        logger=logging.getLogger(f"headwater.{service}.broker"),
        # FastStream logs every message at INFO; ours are the decisions, so keep its quiet.
        log_level=logging.DEBUG,
        security=security,
    )


def durable_subscriber(
    broker: NatsBroker,
    subjects: Subjects,
    consumer: str,
    *,
    batch_size: int = 10,
    batch: bool = False,
) -> LogicSubscriber[Any]:
    """A pull subscriber bound to a durable consumer of the topology, acked by hand. With
    `batch`, the handler gets every message one pull returned (up to `batch_size`, without
    waiting for more than are there) as one `NatsBatchMessage`, for `consume_batch`."""
    spec = consumers(subjects)[consumer]
    return broker.subscriber(
        spec.filter_subject,
        stream=JStream(spec.stream, declare=False),
        durable=spec.durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0, batch=batch),
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
    )


def raw_body(msg: StreamMessage[Any]) -> bytes:
    """FastStream's decoder, replaced: it would parse JSON (by the content type, or by trying
    when there is none) before Headwater sees the message, and a body it cannot decode (nested
    100,000 deep, a 5,000-digit integer, invalid UTF-8 labelled text) would raise outside
    `consume`, never settled. Headwater parses the raw bytes itself (`parse_model`)."""
    body: bytes = msg.body
    return body


async def publish(
    broker: NatsBroker, subject: str, event: Event, *, msg_id: str, stream: str
) -> None:
    """Publish `event` and wait for JetStream's ack; `msg_id` dedups inside the window."""
    await broker.publish(
        event.model_dump_json().encode(),
        subject,
        headers={"Nats-Msg-Id": msg_id, "content-type": "application/json"},
        stream=stream,
    )


async def emit(broker: NatsBroker, subjects: Subjects, event: Event, *, msg_id: str) -> None:
    """Publish `event` on its family's subject and stream (headwater.contracts.registry)."""
    stream = family_of(event).stream(subjects)
    await publish(broker, subject_of(subjects, event), event, msg_id=msg_id, stream=stream)


async def dead_letter(
    broker: NatsBroker,
    subjects: Subjects,
    service: str,
    raw: Msg,
    field: str,
    reason: str,
    metrics: Metrics | None = None,
) -> None:
    """Keep a rejected message, with the field at fault and why, in the dead-letter stream
    (counted in `metrics`, per family of the rejected message, once JetStream has it)."""
    meta = raw.metadata
    # A letter must fit in a message however large the input was: keep its head, its size
    # and its hash (the whole input stays in its own stream until the stream's limits).
    kept = raw.data[:DLQ_PAYLOAD_BYTES]
    letter = DeadLetter(
        service=service,
        subject=raw.subject,
        field=field,
        reason=reason,
        payload_b64=base64.b64encode(kept).decode(),
        payload_bytes=len(raw.data),
        payload_sha256=hashlib.sha256(raw.data).hexdigest(),
        truncated=len(kept) < len(raw.data),
        headers={k: v for k, v in (raw.headers or {}).items() if isinstance(v, str)},
        delivered=meta.num_delivered if meta.num_delivered is not None else 1,
    )
    stream_seq = meta.sequence.stream
    await publish(
        broker,
        family_of(letter).subject(subjects, service),
        letter,
        # Several services may reject the same message (every reader of the events stream).
        msg_id=f"dlq:{service}:{meta.stream}:{stream_seq}",
        stream=family_of(letter).stream(subjects),
    )
    if metrics is not None:
        metrics.dead_lettered(family_name(subjects, raw.subject))
    _log.warning("dead-lettered %s (%s: %s)", raw.subject, field, reason)


def family_name(subjects: Subjects, subject: str, model: type[BaseModel] | None = None) -> str:
    """The registry's name of the family a message belongs to (metrics label it so), by its
    model when known, else by its subject; "unknown" for a subject that is not Headwater's."""
    if model is not None and (name := _FAMILY_BY_MODEL.get(model)) is not None:
        return name
    family = family_at(subjects, subject)
    return family.name if family is not None else "unknown"


_FAMILY_BY_MODEL = {f.model: f.name for f in FAMILIES}


async def consume(
    msg: NatsMessage,
    model: type[E],
    process: Callable[[E], Awaitable[None]],
    *,
    broker: NatsBroker,
    subjects: Subjects,
    service: str,
    metrics: Metrics | None = None,
) -> None:
    """Parse, process and settle one message (see the module docstring); each outcome is
    counted in `metrics` by the message's family: handled, rejected (and its dead letter),
    retried."""
    raw: Msg = msg.raw_message
    try:
        event = parse_model(model, raw.data)
        await process(event)
    except Superseded as exc:
        # A newer delivery of this message owns it now: leave settling to that one.
        _log.warning("%s: %s; leaving it to the newer delivery", raw.subject, exc)
        return
    except HeadwaterError as exc:
        if exc.retryable:
            _count(metrics, "retried", subjects, raw, model)
            await _nak_with_backoff([raw], exc)
            return
        await dead_letter(broker, subjects, service, raw, *exc.reply(), metrics=metrics)
        _count(metrics, "rejected", subjects, raw, model)
        await msg.reject()
        return
    except Exception as exc:
        # An outage or a bug: never drop the message, retry it with backoff until it passes.
        _count(metrics, "retried", subjects, raw, model)
        await _nak_with_backoff([raw], exc)
        return
    # Counted before it is settled: whoever sees it settled sees it counted.
    _count(metrics, "handled", subjects, raw, model)
    await msg.ack()


def _count(
    metrics: Metrics | None,
    outcome: str,
    subjects: Subjects,
    raw: Msg,
    model: type[BaseModel] | None = None,
) -> None:
    if metrics is None:
        return
    family = family_name(subjects, raw.subject, model)
    if outcome == "handled":
        metrics.handled(family)
    elif outcome == "rejected":
        metrics.rejected(family)
    else:
        metrics.retried(family)


async def consume_batch(
    batch: NatsBatchMessage,
    parse: Callable[[Msg], BaseModel | None],
    process: Callable[[list[Any], list[Context]], Awaitable[list[HeadwaterError | None]]],
    *,
    broker: NatsBroker,
    subjects: Subjects,
    service: str,
    metrics: Metrics | None = None,
) -> None:
    """`consume` for a batch: each message is parsed on its own (bad input is dead-lettered
    at once; `parse` returning None means "not ours", acked); the rest are processed together
    (one transaction, one reconcile) and settled after it committed. `process` returns, per
    event, the bad-input error that rejected it alone (dead-lettered) or None (acked). A
    failure of the whole batch naks every message with backoff, for as long as it takes.
    `process` also gets each event's trace context, to publish what it causes in its trace:
    the context of the event's own span, "SERVICE handle FAMILY", a child of its producer's,
    which ends when the event is settled with its outcome."""
    events: list[BaseModel] = []
    owners: list[Msg] = []
    for raw in batch.raw_message:
        try:
            event = parse(raw)
        except InputError as exc:  # parsing raises no other error
            await dead_letter(broker, subjects, service, raw, *exc.reply(), metrics=metrics)
            _count(metrics, "rejected", subjects, raw)
            await raw.term()
            continue
        if event is None:
            await raw.ack()
            continue
        events.append(event)
        owners.append(raw)
    if not events:
        return
    spans = [
        _event_span(service, subjects, raw, event)
        for raw, event in zip(owners, events, strict=True)
    ]
    traces = [trace.set_span_in_context(s) for s in spans]
    try:
        await _process_batch(
            owners, events, traces, spans, process, broker, subjects, service, metrics
        )
    finally:
        for each in spans:
            each.end()


async def _process_batch(
    owners: list[Msg],
    events: list[BaseModel],
    traces: list[Context],
    spans: list[trace.Span],
    process: Callable[[list[Any], list[Context]], Awaitable[list[HeadwaterError | None]]],
    broker: NatsBroker,
    subjects: Subjects,
    service: str,
    metrics: Metrics | None,
) -> None:
    try:
        with _batch_span(service, traces):
            rejected = await process(events, traces)
    except Superseded as exc:
        _log.warning("batch of %d: %s; leaving it to the newer delivery", len(owners), exc)
        for each in spans:
            each.set_attribute(OUTCOME, "superseded")
        return
    except Exception as exc:
        if len(owners) == 1:
            _failed(spans[0], exc)
            _count(metrics, "retried", subjects, owners[0])
            await _nak_with_backoff(owners, exc)
            return
        # One event that always fails must not hold back the others: each on its own, so
        # only what fails is retried.
        _log.warning(
            "a batch of %d failed (%s); processing its events one by one", len(owners), exc
        )
        for raw, event, ctx, span in zip(owners, events, traces, spans, strict=True):
            try:
                with _batch_span(service, [ctx]):
                    [error] = await process([event], [ctx])
            except Superseded:
                span.set_attribute(OUTCOME, "superseded")
                continue  # a newer delivery owns it
            except Exception as one:
                _failed(span, one)
                _count(metrics, "retried", subjects, raw)
                await _nak_with_backoff([raw], one)
                continue
            await _settle(broker, subjects, service, raw, error, span, metrics)
        return
    for raw, error, span in zip(owners, rejected, spans, strict=True):
        await _settle(broker, subjects, service, raw, error, span, metrics)


async def _nak_with_backoff(owners: list[Msg], exc: BaseException) -> None:
    """Redeliver `owners` after a delay (capped exponential, or the error's own). An
    unexpected error logs its traceback on the 1st and every STUCK_LOG_EVERY-th delivery."""
    delivered = max(raw.metadata.num_delivered or 1 for raw in owners)
    if not isinstance(exc, HeadwaterError) and (delivered == 1 or delivered % STUCK_LOG_EVERY == 0):
        _log.error("processing %s failed (delivery %d)", owners[0].subject, delivered, exc_info=exc)
    delay = _backoff(delivered)
    if isinstance(exc, HeadwaterError) and exc.retry_after is not None:
        delay = exc.retry_after
    _log.warning(
        "will retry %s (%d message(s)) in %.1fs: %s", owners[0].subject, len(owners), delay, exc
    )
    for raw in owners:
        await raw.nak(delay=delay)


async def _settle(
    broker: NatsBroker,
    subjects: Subjects,
    service: str,
    raw: Msg,
    error: HeadwaterError | None,
    span: trace.Span,
    metrics: Metrics | None,
) -> None:
    """Ack a processed message, or dead-letter and terminate one rejected as bad input."""
    if error is None:
        span.set_attribute(OUTCOME, "handled")
        _count(metrics, "handled", subjects, raw)
        await raw.ack()
        return
    await dead_letter(broker, subjects, service, raw, *error.reply(), metrics=metrics)
    _failed(span, error, "rejected")
    _count(metrics, "rejected", subjects, raw)
    await raw.term()


def _event_span(service: str, subjects: Subjects, raw: Msg, event: BaseModel) -> trace.Span:
    """The span of one event of a batch, in its producer's trace (not yet current)."""
    family = family_name(subjects, raw.subject, type(event))
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: "nats",
        MESSAGING_OPERATION: "process",
        MESSAGING_DESTINATION: raw.subject,
        MESSAGING_MESSAGE_ID: (raw.headers or {}).get("Nats-Msg-Id"),
        FAMILY: family,
        DATASET: _dataset(event),
        PARTITION: getattr(event, "partition_key", None),
        FINGERPRINT: getattr(event, "fingerprint", None),
        DATA_SHA: getattr(event, "data_sha", None),
        CODE_SHA: getattr(event, "code_sha", None),
    }
    return trace.get_tracer("headwater").start_span(
        f"{service} handle {family}",
        context=propagate.extract(raw.headers or {}),
        kind=trace.SpanKind.CONSUMER,
        attributes={k: v for k, v in attributes.items() if isinstance(v, str | int)},
    )


def _dataset(event: BaseModel) -> str | None:
    try:
        return dataset_of(event)
    except TypeError:
        return None


def _failed(span: trace.Span, exc: BaseException, outcome: str = "retried") -> None:
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)[:256]))
    span.set_attributes({ERROR_TYPE: type(exc).__qualname__, OUTCOME: outcome})


def _batch_span(service: str, traces: list[Context]) -> Any:
    """A span for processing a batch: in the trace of its first message, linked to the
    others' (FastStream's own span for a batch only links them). What each event causes is
    published in that event's trace (`process` gets `traces`; the outbox keeps them)."""
    links = [
        trace.Link(span.get_span_context())
        for ctx in traces[1:]
        if (span := trace.get_current_span(ctx)).get_span_context().is_valid
    ]
    return telemetry_span(
        f"{service} process batch",
        {MESSAGING_BATCH_COUNT: len(traces)},
        context=traces[0],
        links=links,
    )


def _backoff(delivered: int) -> float:
    delay: float = NAK_BASE_DELAY_S * 2.0 ** min(delivered - 1, 16)
    return min(NAK_MAX_DELAY_S, delay)
