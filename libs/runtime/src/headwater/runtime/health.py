"""Liveness, readiness and metrics over plain HTTP, for Kubernetes probes, compose health
checks and Prometheus.

`GET /livez` answers 200 while the service's event loop runs; `GET /readyz` answers 200 once the
service has started (topology found, schema migrated, subscribers bound) and while its check
passes (NATS connected, Postgres and the object store answering, its consumers bound), else
503 with the reason; `GET /metrics` answers
the service's metrics in Prometheus's text format. Off unless `HEADWATER_HEALTH_PORT` is set
(the embedded stack does not set it).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from headwater.runtime.metrics import PROMETHEUS_CONTENT_TYPE

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else why not
Scrape = Callable[[], Awaitable[bytes]]  # the metrics, in Prometheus's text format
_log = logging.getLogger(__name__)
_MAX_HEADER_LINES = 100


class HealthServer:
    """A tiny HTTP/1.0 server with three paths; anything else is 404."""

    def __init__(
        self, host: str, port: int, ready: ReadyCheck, metrics: Scrape | None = None
    ) -> None:
        self.host, self.port, self._ready, self._metrics = host, port, ready, metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            for _ in range(_MAX_HEADER_LINES):  # the headers: read and ignored
                if (await asyncio.wait_for(reader.readline(), 5)).strip() == b"":
                    break
            parts = request.split()
            path = parts[1].decode(errors="replace") if len(parts) >= 2 else ""
            content_type = "text/plain"
            if path == "/livez":
                status, data = 200, b"ok\n"
            elif path == "/metrics" and self._metrics is not None:
                status, data = 200, await self._metrics()
                content_type = PROMETHEUS_CONTENT_TYPE
            elif path == "/readyz":
                try:
                    why = await asyncio.wait_for(self._ready(), 5)
                except Exception as exc:
                    why = f"readiness check failed: {exc!r}"
                status, data = (200, b"ok\n") if why is None else (503, why.encode() + b"\n")
            else:
                status, data = 404, b"not found: /livez, /readyz or /metrics\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError) as exc:
            _log.debug("health request dropped: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
