"""OpenTelemetry: with the standard OTEL_EXPORTER_OTLP_ENDPOINT set, every service exports
its spans over OTLP, and one landing and the work it causes share one trace."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from headwater.sdk.client import HeadwaterClient
from headwater.sdk.config import load_settings
from headwater.sdk.example import write_day_csv
from tests.e2e.conftest import SLICE, all_flights
from tests.fixtures.stack import stack_settings, started


class Collector(HTTPServer):
    """The smallest OTLP/HTTP trace receiver: keeps (service, trace id, span name)."""

    spans: list[tuple[str, str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.server.spans.append(
                        (attrs["service.name"], span.trace_id.hex(), span.name)
                    )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector(("127.0.0.1", 0), _Handler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_one_landing_is_one_trace_across_services(
    collector: Collector, tmp_path: Path, namespace: str, nats_url: str, database: str
) -> None:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    settings = stack_settings(namespace, nats_url, database, None)
    # The services flush their spans when the stack stops, at the end of the block.
    async with (
        started(tmp_path / "state", settings, env) as stack,
        HeadwaterClient(load_settings(stack.state_dir)) as hw,
    ):
        await hw.apply(SLICE)
        await hw.publish(
            "flights", "2013-01-03", write_day_csv("2013-01-03", tmp_path, all_flights())
        )
        await hw.wait(timeout=120)

    services = {s for s, _, _ in collector.spans}
    assert {"change-detector", "scheduler", "executor", "lineage-indexer"} <= services
    traces: dict[str, set[str]] = {}
    for service, trace_id, _ in collector.spans:
        traces.setdefault(trace_id, set()).add(service)
    # The landing's trace reaches the executor through the scheduler.
    assert any({"change-detector", "scheduler", "executor"} <= s for s in traces.values()), traces
