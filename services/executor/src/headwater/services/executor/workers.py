"""Transforms run in worker processes that can be stopped: a small pool of persistent processes
(started with "spawn", never a fork of the asyncio process and its threads), each running one
task at a time under a memory limit. A task past its timeout, a cancelled one, or one whose
worker died takes its worker with it and a fresh worker takes its place: the executor's own
process never runs user code, so it never blocks or dies with it.

Inputs and results cross the pipe as Arrow IPC streams."""

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import resource
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import duckdb
import pyarrow as pa

from headwater.runtime.errors import TransformError
from headwater.services.executor.transforms import out_of_memory, run_transform

_log = logging.getLogger(__name__)
_CTX = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1
Answer = tuple[
    Any, ...
]  # ("ok", ipc) | ("error", message, traceback) | ("timeout",) | ("died", code)


class WorkerPool:
    """`size` worker processes; `run` takes an idle one for the length of one task."""

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()

    async def start(self) -> None:
        for _ in range(self.size):
            self._idle.put_nowait(self._spawn())

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.stop()
        self._workers.clear()

    def pids(self) -> list[int]:
        """The worker processes' ids (for logs and tests)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def run(
        self,
        blob: dict[str, Any],
        inputs: dict[str, list[pa.Table]],
        *,
        timeout_s: float,
        memory_mb: int | None,
    ) -> pa.Table:
        """The transform's output. A failure of the user's code, a timeout, running out of
        memory or a crash of the worker is a TransformError; cancelling the caller kills the
        worker."""
        worker = await self._idle.get()
        healthy = False
        try:
            request = await asyncio.to_thread(_request, blob, inputs, memory_mb)
            # The exchange waits in a thread: the event loop (heartbeats, other messages)
            # goes on, and killing the worker ends the wait at once.
            answer = await asyncio.to_thread(worker.call, request, timeout_s)
            if answer[0] == "ok":
                healthy = True
                table: pa.Table = await asyncio.to_thread(_from_ipc, answer[1])
                return table
            if answer[0] == "error":
                healthy = not answer[3]
                raise TransformError(answer[1], answer[2])
            if answer[0] == "timeout":
                raise TransformError(f"timed out after {timeout_s:g}s")
            raise TransformError(_died(answer[1], memory_mb))
        finally:
            # Cancelled, timed out or broken: this worker's process goes, a fresh one comes.
            if not healthy:
                self._workers.discard(worker)
                worker.stop()
                worker = self._spawn()
            self._idle.put_nowait(worker)

    def _spawn(self) -> "_Worker":
        worker = _Worker()
        self._workers.add(worker)
        return worker


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self) -> None:
        parent, child = _CTX.Pipe()
        # Started from the event loop's thread, which lives as long as the process: the
        # worker's parent-death signal is tied to the thread that started it.
        self.process: BaseProcess = _CTX.Process(
            target=_serve, args=(child, os.getpid()), name="headwater-transform"
        )
        self.process.start()
        child.close()
        self.conn: Connection = parent

    def call(self, request: dict[str, Any], timeout_s: float) -> Answer:
        """Send one task and wait for its answer (blocking: run it in a thread)."""
        try:
            self.conn.send(request)
            if not self.conn.poll(timeout_s):
                return ("timeout",)
            header: Answer = self.conn.recv()
            if header[0] == "ok":
                return ("ok", self.conn.recv_bytes())
            return header
        except (EOFError, OSError):
            self.process.join(5)
            return ("died", self.process.exitcode)

    def stop(self) -> None:
        """SIGKILL: a worker is only stopped when what it runs must not go on."""
        with contextlib.suppress(ProcessLookupError, ValueError):
            self.process.kill()
        self.process.join(5)
        # The pipe is left to close with the last reference: a thread may still be reading
        # it, and closing it under that thread could hand its descriptor to the next worker.


def _died(exitcode: int | None, memory_mb: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with code {exitcode}"
    hint = f" ({out_of_memory(memory_mb)}?)" if exitcode == -signal.SIGKILL else ""
    return f"the transform's worker process {how}{hint}"


def _request(
    blob: dict[str, Any], inputs: dict[str, list[pa.Table]], memory_mb: int | None
) -> dict[str, Any]:
    return {
        "blob": blob,
        "inputs": {name: [_to_ipc(t) for t in parts] for name, parts in inputs.items()},
        "memory_mb": memory_mb,
    }


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


# --- in the worker process ------------------------------------------------------------------
def _serve(conn: Connection, parent: int) -> None:
    """The worker's loop: one task at a time until the pipe closes."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the executor, which stops us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing transform dumps no core
    _warm_up()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        answer, body = _answer(request)
        conn.send(answer)
        if body is not None:
            conn.send_bytes(body)
        if answer[0] == "error" and answer[3]:
            return  # after running out of memory, a fresh process is the safe state


def _answer(request: dict[str, Any]) -> tuple[Answer, bytes | None]:
    memory_mb = request["memory_mb"]
    _limit_memory(memory_mb)
    try:
        inputs = {n: [_from_ipc(b) for b in parts] for n, parts in request["inputs"].items()}
        body = _to_ipc(run_transform(request["blob"], inputs, memory_mb))
        return ("ok",), body
    except TransformError as exc:
        oom = isinstance(exc.__cause__, MemoryError | duckdb.OutOfMemoryException)
        return ("error", str(exc), exc.traceback, oom), None
    except MemoryError:  # decoding the inputs or encoding the result
        return ("error", out_of_memory(memory_mb), traceback.format_exc(), True), None
    except BaseException as exc:  # SystemExit from user code: report it, then go
        return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(), True), None
    finally:
        _limit_memory(None)


def _limit_memory(memory_mb: int | None) -> None:
    """Let the task allocate `memory_mb` beyond what the idle worker holds (RLIMIT_DATA: the
    heap and private writable mappings, which is where Python, Arrow and DuckDB allocate;
    RLIMIT_AS would also count the address space DuckDB's threads reserve and never touch)."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = hard
    if memory_mb:
        soft = _data_bytes() + memory_mb * 2**20
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_bytes() -> int:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0  # not Linux: the limit is then the whole process's


def _warm_up() -> None:
    """Run DuckDB once, so what it keeps for good (threads, arenas) counts as the idle
    worker's footprint, not against the first task's memory limit."""
    con = duckdb.connect(":memory:")
    try:
        con.register("t", pa.table({"a": [1]}))
        con.sql("SELECT sum(a) FROM t").to_arrow_table()
    finally:
        con.close()


def _die_with(parent: int) -> None:
    """The kernel SIGKILLs this worker when the executor dies (Linux), so a transform that
    never returns cannot outlive it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the executor died before prctl took effect
        os._exit(1)
