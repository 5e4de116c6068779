"""A TCP proxy for fault tests, with a switch that blackholes the link.

`TcpProxy(host, port)` listens on a free local port and forwards every connection to
`host:port`, on an asyncio loop of its own thread (so it keeps serving while the test's loop
waits, and the services are other processes). `blackhole(True)` makes it swallow traffic: new
connections are accepted and read but never forwarded nor answered; established ones stall
the same way in both directions. `blackhole(False)` restores forwarding for new connections
and closes every connection the blackhole stalled (those accepted into it, and those that lost
bytes to it: their streams are broken, so a client must reconnect, as after a real partition
whose flows have timed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from headwater.sdk.servers import free_port

_CHUNK = 65536


@dataclass(eq=False)  # identity: kept in a set
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    swallowed: bool = False  # lost bytes to the blackhole: never forwards again
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


@dataclass
class ProxyStats:
    """What the proxy did, for asserting that a fault really happened."""

    accepted: int = 0  # connections accepted
    forwarded_bytes: int = 0
    swallowed_bytes: int = 0  # bytes read and dropped while blackholed
    stalled: int = 0  # connections accepted into the blackhole or that lost bytes to it
    accepted_while_blackholed: int = 0
    dropped: int = 0  # stalled connections closed when the blackhole lifted


class TcpProxy:
    """`with TcpProxy("127.0.0.1", 9000) as proxy: ... proxy.url ... proxy.blackhole(True)`"""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.stats = ProxyStats()
        self._blackholed = False
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()  # guards stats and the switch across threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    # --- lifecycle, from the test's thread -----------------------------------------------
    def start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(started))
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                started.set()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            self._thread.join()
            raise RuntimeError(f"proxy did not start on {self.port}") from failure[0]

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the proxy thread did not stop"
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def blackhole(self, on: bool) -> None:
        """Swallow all traffic (on), or forward again and reset what was stalled (off)."""
        assert self._loop is not None
        with self._lock:
            self._blackholed = on
        if not on:
            asyncio.run_coroutine_threadsafe(self._drop_stalled(), self._loop).result(10)

    # --- the proxy, on its own loop ------------------------------------------------------
    async def _serve(self, started: threading.Event) -> None:
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        started.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for conn in list(self._conns):
                await self._close(conn)
            # Let every connection handler finish, so none is left pending on the loop.
            rest = asyncio.all_tasks() - {asyncio.current_task()}
            await asyncio.wait_for(asyncio.gather(*rest, return_exceptions=True), 10)
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns.add(conn)
        with self._lock:
            self.stats.accepted += 1
            blackholed = self._blackholed
            if blackholed:
                self.stats.accepted_while_blackholed += 1
                self.stats.stalled += 1
                conn.swallowed = True
        try:
            if blackholed:
                # Answer nothing, ever: read and drop until the client gives up or the
                # blackhole lifts (which closes this connection).
                await self._pump(reader, None, conn)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, conn)),
                asyncio.create_task(self._pump(up_reader, writer, conn)),
            ]
            # Either direction ending (EOF, reset) ends the connection.
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._close(conn)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, conn: _Conn
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                with self._lock:
                    if self._blackholed or conn.swallowed or writer is None:
                        if not conn.swallowed:
                            conn.swallowed = True
                            self.stats.stalled += 1
                        self.stats.swallowed_bytes += len(data)
                        continue
                    self.stats.forwarded_bytes += len(data)
                assert writer is not None
                writer.write(data)
                await writer.drain()

    async def _drop_stalled(self) -> None:
        for conn in [c for c in self._conns if c.swallowed]:
            with self._lock:
                self.stats.dropped += 1
            await self._close(conn)

    async def _close(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        for writer in conn.writers():
            writer.close()
        for writer in conn.writers():
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        for task in conn.tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
