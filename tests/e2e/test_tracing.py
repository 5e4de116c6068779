"""OpenTelemetry: with the standard OTEL_EXPORTER_OTLP_ENDPOINT set, every service exports
its spans (and its metrics) over OTLP; one landing and the work it causes share one trace, whose
spans say what each service did (dataset, partition, fingerprint, SHAs, rows, bytes, why it ran,
how it ended), parent to child from the upstream event to the last derived partition."""

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.example import write_day_csv
from tests.e2e.conftest import all_flights
from tests.fixtures.stack import stack_settings, started

# Two derived levels, so the trace goes scheduler -> executor twice; a third level held until
# its input settles, so a settle reconcile (a timer) requests its task.
PIPELINE = """\
pipeline: traced
sources:
  flights: {}
datasets:
  delays_by_origin:
    sql: SELECT origin, count(*) AS flights, avg(dep_delay) AS avg_dep_delay FROM flights GROUP BY origin
    inputs: {flights: identity}
  worst_origin:
    sql: SELECT origin, avg_dep_delay FROM delays_by_origin ORDER BY avg_dep_delay DESC LIMIT 1
    inputs: {delays_by_origin: identity}
  settled_origin:
    sql: SELECT origin FROM worst_origin
    inputs: {worst_origin: identity}
    settle: 0.5
"""
DAY = "2013-01-03"
BAD_DAY = "2013-01-04"  # a file that is not Parquet lands there: dead-lettered
ERROR = 2  # OTLP's STATUS_CODE_ERROR


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    attributes: dict[str, Any]
    status: int
    events: list[str]


class Collector(HTTPServer):
    """The smallest OTLP/HTTP receiver: keeps every span, and the names of the metrics each
    service sent."""

    spans: list[Span]
    metrics: dict[str, set[str]]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.endswith("/v1/metrics"):
            metrics = ExportMetricsServiceRequest.FromString(body)
            for rm in metrics.resource_metrics:
                service = {a.key: _value(a.value) for a in rm.resource.attributes}["service.name"]
                for sm in rm.scope_metrics:
                    names = {m.name for m in sm.metrics}
                    self.server.metrics.setdefault(service, set()).update(names)
        else:
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                service = {a.key: _value(a.value) for a in rs.resource.attributes}["service.name"]
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.server.spans.append(
                            Span(
                                service,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.name,
                                {a.key: _value(a.value) for a in s.attributes},
                                s.status.code,
                                [e.name for e in s.events],
                            )
                        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(("127.0.0.1", 0), _Handler)
    server.spans, server.metrics = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    """`span` and its parents up to the root (as far as the collector received them)."""
    chain = [span]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return chain


def one(spans: list[Span], name: str, **attributes: Any) -> Span:
    found = [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, found)
    return found[0]


async def test_one_landing_is_one_trace_across_services(
    collector: Collector, tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "HEADWATER_RECONCILE_INTERVAL_S": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    settings = stack_settings(namespace, nats_url, database, None)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(PIPELINE)
    # The services flush their spans when the stack stops, at the end of the block.
    async with (
        started(tmp_path / "state", settings, env) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        await hw.apply(spec)
        await hw.publish("flights", DAY, write_day_csv(DAY, tmp_path, all_flights()))
        bad = tmp_path / "bad.parquet"
        bad.write_bytes(b"not parquet at all")
        await hw.publish("flights", BAD_DAY, bad)
        await hw.wait(timeout=120)
        deadline = time.monotonic() + 60
        while not await hw.dead_letters():
            assert time.monotonic() < deadline, "the bad file was not dead-lettered"
            await asyncio.sleep(0.1)
        worst = await hw.why("worst_origin", DAY)
        # `wait` waits for the computation `settle:` held, too.
        assert (await hw.partitions("settled_origin", states=["ready"]))["partitions"]

    spans = collector.spans
    services = {s.service for s in spans}
    assert {"change-detector", "scheduler", "executor", "lineage-indexer"} <= services

    # What each service did, on its spans.
    refresh = one(
        spans,
        "change-detector refresh",
        **{"headwater.dataset": "flights", "headwater.partition": DAY},
    )
    assert refresh.attributes["headwater.outcome"] == "landed"
    assert refresh.attributes["headwater.rows"] > 0
    assert refresh.attributes["headwater.bytes"] > 0
    source_sha = refresh.attributes["headwater.data_sha"]
    steps = {s.name for s in spans if s.parent_id == refresh.span_id}
    assert {"change-detector list", "change-detector read", "change-detector hash"} <= steps
    assert {"change-detector write", "change-detector record"} <= steps

    tasks = {
        d: one(spans, "executor task", **{"headwater.dataset": d})
        for d in ("delays_by_origin", "worst_origin")
    }
    for task in tasks.values():
        a = task.attributes
        assert a["headwater.partition"] == DAY
        assert a["headwater.outcome"] == "succeeded"
        assert len(a["headwater.fingerprint"]) == 64
        assert len(a["headwater.code_sha"]) == 64
        assert len(a["headwater.data_sha"]) == 64
        assert a["headwater.rows"] > 0
        assert a["headwater.bytes"] > 0
        assert a["headwater.reason"] == "new partition"  # why it ran, from the scheduler
        steps = {s.name for s in spans if s.parent_id == task.span_id}
        assert {
            "executor fetch inputs",
            "executor transform",
            "executor write",
            "executor publish",
        } <= steps, steps
    last = tasks["worst_origin"].attributes
    materialization = worst["materializations"][-1]
    assert last["headwater.fingerprint"] == materialization["fingerprint"]
    assert last["headwater.data_sha"] == materialization["data_sha"]
    transform = next(
        s
        for s in spans
        if s.name == "executor transform" and s.parent_id == tasks["worst_origin"].span_id
    )
    assert transform.attributes["headwater.rows"] == 1

    handled = one(
        spans,
        "scheduler handle partition-landed",
        **{"headwater.dataset": "flights", "headwater.partition": DAY},
    )
    assert handled.attributes["headwater.outcome"] == "handled"
    assert handled.attributes["headwater.data_sha"] == source_sha
    assert handled.attributes["messaging.system"] == "nats"
    assert any(s.name == "scheduler reconcile" for s in spans if s.trace_id == handled.trace_id)

    recorded = one(
        spans,
        "lineage-indexer record",
        **{"headwater.dataset": "worst_origin", "headwater.event.family": "partition-landed"},
    )
    assert recorded.attributes["headwater.outcome"] == "recorded"
    assert recorded.attributes["headwater.reason"] == "new partition"
    assert recorded.attributes["db.system.name"] == "postgresql"

    # A failure is recorded on the span of the work that failed, with its exception.
    failed = one(spans, "change-detector refresh", **{"headwater.partition": BAD_DAY})
    assert failed.status == ERROR
    assert failed.attributes["error.type"] == "FormatError"
    assert failed.attributes["headwater.outcome"] == "error"
    assert "exception" in failed.events
    read = one(spans, "change-detector read", **{"error.type": "FormatError"})
    assert read.parent_id == failed.span_id

    # One trace, parent to child: the upstream event's landing, the scheduler, the first
    # executor, the scheduler again, the executor of the last derived partition.
    by_id = {s.span_id: s for s in spans}
    chain = ancestors(tasks["worst_origin"], by_id)
    assert {s.trace_id for s in chain} == {refresh.trace_id}
    ours = [
        (s.name, s.attributes.get("headwater.dataset"))
        for s in reversed(chain)
        if s.name.split()[0] in ("change-detector", "scheduler", "executor")
        and s.name.split()[1] in ("refresh", "handle", "task")
    ]
    assert ours == [
        ("change-detector refresh", "flights"),
        ("scheduler handle partition-landed", "flights"),
        ("executor task", "delays_by_origin"),
        ("scheduler handle partition-landed", "delays_by_origin"),
        ("executor task", "worst_origin"),
    ], [(s.service, s.name) for s in reversed(chain)]
    assert chain[-1].service == "change-detector"  # the root: the upstream event's consumer
    assert not [s for s in chain if s.status == ERROR]

    # The reconciles on a timer have spans of their own (roots: no event caused them): the
    # periodic one over every derived dataset, and the settle one, whose task continues its
    # trace.
    timer = [
        s
        for s in spans
        if s.name == "scheduler reconcile" and s.attributes["headwater.trigger"] == "timer"
    ]
    assert timer
    assert all(s.parent_id == "" for s in timer)
    assert max(s.attributes["headwater.datasets"] for s in timer) == 3
    settled = one(spans, "executor task", **{"headwater.dataset": "settled_origin"})
    assert settled.attributes["headwater.outcome"] == "succeeded"
    settle = one(spans, "scheduler reconcile", **{"headwater.trigger": "settle"})
    assert settle.parent_id == ""
    assert settle.attributes["headwater.tasks_requested"] == 1
    assert ancestors(settled, by_id)[-1] == settle

    # Metrics go out over OTLP too.
    assert "headwater.events.handled" in collector.metrics.get("scheduler", set())
    assert "headwater.tasks" in collector.metrics.get("executor", set())
