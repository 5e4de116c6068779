"""OpenTelemetry: a tracer provider per process, exporting over OTLP when the standard
OTEL_EXPORTER_OTLP_ENDPOINT is set (the SDK reads its own variables), otherwise not at all."""

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_log = logging.getLogger(__name__)


def setup_tracing(service_name: str) -> TracerProvider:
    """Install and return this process's tracer provider."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _log.info("exporting traces over OTLP")
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str | None:
    """The hex id of the active trace, if any."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
