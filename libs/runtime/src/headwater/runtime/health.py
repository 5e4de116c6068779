"""Liveness and readiness over plain HTTP, for Kubernetes probes and compose health checks.

`GET /livez` answers 200 while the service's event loop runs; `GET /readyz` answers 200 once the
service has started (topology found, schema migrated, subscribers bound) and while its check
passes (NATS connected, Postgres answering), else 503 with the reason. Off unless
`HEADWATER_HEALTH_PORT` is set (the embedded stack does not set it).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else why not
_log = logging.getLogger(__name__)
_MAX_HEADER_LINES = 100


class HealthServer:
    """A tiny HTTP/1.0 server with two paths; anything else is 404."""

    def __init__(self, host: str, port: int, ready: ReadyCheck) -> None:
        self.host, self.port, self._ready = host, port, ready
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
            if path == "/livez":
                status, body = 200, "ok"
            elif path == "/readyz":
                try:
                    why = await asyncio.wait_for(self._ready(), 5)
                except Exception as exc:
                    why = f"readiness check failed: {exc!r}"
                status, body = (200, "ok") if why is None else (503, why)
            else:
                status, body = 404, "not found: /livez or /readyz"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            data = body.encode() + b"\n"
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\n"
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
