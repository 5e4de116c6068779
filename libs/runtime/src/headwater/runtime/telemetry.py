"""OpenTelemetry: a tracer provider per process, exporting over OTLP when the standard
OTEL_EXPORTER_OTLP_ENDPOINT is set (the SDK reads its own variables), otherwise not at all; and
the one way services open spans around their work, with the attribute names they share."""

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import AttributeValue

from headwater.runtime.metrics import otlp_configured

_log = logging.getLogger(__name__)

# Attribute names: OpenTelemetry's semantic conventions where they have one, else `headwater.`.
MESSAGING_SYSTEM = "messaging.system"  # "nats"
MESSAGING_DESTINATION = "messaging.destination.name"  # the subject
MESSAGING_OPERATION = "messaging.operation.type"  # "process", "send"
MESSAGING_MESSAGE_ID = "messaging.message.id"  # the Nats-Msg-Id
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
DB_SYSTEM = "db.system.name"  # "postgresql"
ERROR_TYPE = "error.type"  # the exception's class
DATASET = "headwater.dataset"
PARTITION = "headwater.partition"
FINGERPRINT = "headwater.fingerprint"
CODE_SHA = "headwater.code_sha"
DATA_SHA = "headwater.data_sha"
ROWS = "headwater.rows"
BYTES = "headwater.bytes"
REASON = "headwater.reason"  # why it ran
OUTCOME = "headwater.outcome"
FAMILY = "headwater.event.family"  # the registry's family name ("partition-landed")
ATTEMPT = "headwater.attempt"

Attributes = Mapping[str, AttributeValue | None]


def setup_tracing(service_name: str) -> TracerProvider:
    """Install and return this process's tracer provider."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_configured("traces"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _log.info("exporting traces over OTLP")
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str | None:
    """The hex id of the active trace, if any."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextlib.contextmanager
def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    context: Context | None = None,
    links: Sequence[trace.Link] = (),
) -> Iterator[trace.Span]:
    """A span around a piece of real work, current inside the block (in `context`'s trace, or
    the current one). An exception leaving the block is recorded on it with its class
    (`error.type`), the span's status is ERROR and, unless the work said otherwise, its
    outcome is "error"."""
    tracer = trace.get_tracer("headwater")
    with tracer.start_as_current_span(
        name,
        context=context,
        links=links,
        attributes=_clean(attributes),
        record_exception=True,
        set_status_on_exception=True,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            if not _has(current, OUTCOME):
                current.set_attribute(OUTCOME, "error")
            raise


def annotate(target: trace.Span | None = None, /, **attributes: AttributeValue | None) -> None:
    """Set `headwater.NAME` attributes (None values left out) on `target` or the current span."""
    (target or trace.get_current_span()).set_attributes(
        {f"headwater.{k}": v for k, v in attributes.items() if v is not None}
    )


def baggage_of(headers: Mapping[str, str] | None, key: str) -> str | None:
    """A value of the W3C baggage in a message's headers. FastStream's consumer puts only the
    trace context in OpenTelemetry's context (it keeps baggage to itself, and passes it on to
    what the handler publishes), so a handler reads baggage from the headers."""
    value = baggage.get_baggage(key, _BAGGAGE.extract(dict(headers or {})))
    return value if isinstance(value, str) else None


_BAGGAGE = W3CBaggagePropagator()


def _clean(attributes: Attributes | None) -> dict[str, AttributeValue]:
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def _has(current: trace.Span, key: str) -> bool:
    return isinstance(current, ReadableSpan) and key in (current.attributes or {})
