"""Metrics: one OpenTelemetry meter provider per service, read as Prometheus text on the health
port's `/metrics` and exported over OTLP when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) is set. Counters and histograms are updated in memory on
the path of an event; gauges (outbox backlog, consumer lag) are observed on a timer."""

import os
from collections.abc import Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

# Histogram buckets of every duration in seconds (ours and FastStream's messaging ones): the
# SDK's defaults are made for milliseconds.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Events in one reconciled batch (the scheduler pulls at most `batch_size`, 100 by default).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def otlp_configured(signal: str) -> bool:
    """Whether the standard variables name an OTLP endpoint for `signal` (traces, metrics),
    and do not turn its export off (`OTEL_TRACES_EXPORTER=none`, `OTEL_METRICS_EXPORTER=none`)."""
    name = signal.upper()
    if os.environ.get(f"OTEL_{name}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}_ENDPOINT")
    )


class Metrics:
    """The instruments of one service. Every series carries `service`; names follow
    OpenTelemetry (`headwater.events.handled`), and Prometheus sees them with its suffixes
    (`headwater_events_handled_total`, `headwater_transform_duration_seconds`)."""

    def __init__(self, service: str, *, otlp: bool | None = None) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        readers: list[MetricReader] = [
            PrometheusMetricReader(scope_info_enabled=False, registry=self.registry)
        ]
        if otlp if otlp is not None else otlp_configured("metrics"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        self.provider = MeterProvider(
            metric_readers=readers,
            resource=Resource.create({"service.name": service}),
            views=[
                View(
                    instrument_unit="s",
                    aggregation=ExplicitBucketHistogramAggregation(SECONDS_BUCKETS),
                ),
                View(
                    instrument_name="headwater.reconcile.batch.size",
                    aggregation=ExplicitBucketHistogramAggregation(BATCH_BUCKETS),
                ),
            ],
            shutdown_on_exit=False,  # Service.stop shuts it down (flushing OTLP)
        )
        meter = self.provider.get_meter("headwater")
        self._base = {"service": service}
        self._handled = meter.create_counter(
            "headwater.events.handled",
            unit="{event}",
            description="Events processed and acknowledged, per family.",
        )
        self._rejected = meter.create_counter(
            "headwater.events.rejected",
            unit="{event}",
            description="Events rejected as bad input (dead-lettered), per family.",
        )
        self._retried = meter.create_counter(
            "headwater.events.retried",
            unit="{event}",
            description="Deliveries that failed for a passing reason and will be redelivered.",
        )
        self._dead_letters = meter.create_counter(
            "headwater.dead_letters",
            unit="{letter}",
            description="Dead letters written to the dead-letter stream, per family.",
        )
        self._tasks = meter.create_counter(
            "headwater.tasks",
            unit="{task}",
            description="Tasks an executor finished, per dataset and outcome.",
        )
        self._requested = meter.create_counter(
            "headwater.tasks.requested",
            unit="{task}",
            description="Tasks the scheduler requested, per dataset and kind of request.",
        )
        self._transform = meter.create_histogram(
            "headwater.transform.duration",
            unit="s",
            description="How long a transform ran in its worker, per dataset and outcome.",
        )
        self._batch = meter.create_histogram(
            "headwater.reconcile.batch.size",
            unit="{event}",
            description="Events reconciled together in one transaction.",
        )
        self._reconcile = meter.create_histogram(
            "headwater.reconcile.duration",
            unit="s",
            description="How long one reconcile took (a batch of events, the timer, a command).",
        )
        # Gauges, observed on a timer (Service.observe): the last values seen.
        self._backlog: int | None = None
        self._consumers: dict[tuple[str, str], tuple[int, int]] = {}
        meter.create_observable_gauge(
            "headwater.outbox.backlog",
            callbacks=[self._observe_backlog],
            unit="{event}",
            description="Events committed to this service's outbox and not yet published.",
        )
        meter.create_observable_gauge(
            "headwater.consumer.pending",
            callbacks=[self._observe_pending],
            unit="{message}",
            description="Messages of a durable consumer not yet delivered (its lag).",
        )
        meter.create_observable_gauge(
            "headwater.consumer.ack_pending",
            callbacks=[self._observe_ack_pending],
            unit="{message}",
            description="Messages of a durable consumer delivered and not yet acknowledged.",
        )

    # --- on the path of an event (in memory only) ------------------------------------------
    def handled(self, family: str, count: int = 1) -> None:
        self._handled.add(count, {**self._base, "family": family})

    def rejected(self, family: str) -> None:
        self._rejected.add(1, {**self._base, "family": family})

    def retried(self, family: str, count: int = 1) -> None:
        self._retried.add(count, {**self._base, "family": family})

    def dead_lettered(self, family: str) -> None:
        self._dead_letters.add(1, {**self._base, "family": family})

    def task(self, dataset: str, outcome: str) -> None:
        self._tasks.add(1, {**self._base, "dataset": dataset, "outcome": outcome})

    def requested(self, dataset: str, request: str, count: int = 1) -> None:
        self._requested.add(count, {**self._base, "dataset": dataset, "request": request})

    def transformed(self, dataset: str, outcome: str, seconds: float) -> None:
        self._transform.record(seconds, {**self._base, "dataset": dataset, "outcome": outcome})

    def reconciled(self, trigger: str, events: int, seconds: float) -> None:
        attributes = {**self._base, "trigger": trigger}
        if trigger == "events":
            self._batch.record(events, attributes)
        self._reconcile.record(seconds, attributes)

    # --- gauges ---------------------------------------------------------------------------
    def set_backlog(self, backlog: int) -> None:
        self._backlog = backlog

    def set_consumer(self, stream: str, consumer: str, pending: int, ack_pending: int) -> None:
        self._consumers[(stream, consumer)] = (pending, ack_pending)

    def _observe_backlog(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self._backlog is not None:
            yield Observation(self._backlog, self._base)

    def _observe_pending(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (stream, consumer), (pending, _) in self._consumers.items():
            yield Observation(pending, {**self._base, "stream": stream, "consumer": consumer})

    def _observe_ack_pending(self, _options: CallbackOptions) -> Iterable[Observation]:
        for (stream, consumer), (_, ack_pending) in self._consumers.items():
            yield Observation(ack_pending, {**self._base, "stream": stream, "consumer": consumer})

    # --- reading --------------------------------------------------------------------------
    def scrape(self) -> bytes:
        """Every metric in Prometheus's text format (what `/metrics` serves)."""
        data: bytes = generate_latest(self.registry)
        return data

    def shutdown(self) -> None:
        """Export what OTLP has not sent yet, and stop."""
        self.provider.shutdown()
