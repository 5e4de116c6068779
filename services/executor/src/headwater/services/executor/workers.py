"""Transforms run in worker processes that can be stopped: a small pool of persistent processes
(started with "spawn", never a fork of the asyncio process and its threads), each running one
task at a time under a memory limit. A task past its timeout, a cancelled one, or one whose
worker died takes its worker with it and a fresh worker takes its place: the executor's own
process never runs user code, so it never blocks or dies with it.

The worker does the task's CPU work, so the executor's process is left with I/O: it is handed
each input's Parquet object as read from storage, checks it against its data SHA, runs the
transform, and hands back the output's data SHA and Parquet bytes. Bytes cross the pipe as they
are (`send_bytes`), never pickled or re-encoded."""

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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import duckdb
import pyarrow as pa

from headwater.contracts import CodeBlob, InputRef
from headwater.contracts.errors import TransformError
from headwater.core import formats, hashing
from headwater.services.executor.inputs import InputDamaged, verified
from headwater.services.executor.transforms import Sandbox, out_of_memory, run_transform

_log = logging.getLogger(__name__)
_CTX = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1
# ("ok", data_sha, rows, cpu_s, parquet) | ("damaged", input index, reason)
# | ("error", message, traceback, fatal) | ("timeout",) | ("died", code)
Answer = tuple[Any, ...]
# A task's inputs by dataset: each partition's reference and the bytes of its object.
Inputs = dict[str, list[tuple[InputRef, bytes]]]


class WorkerPool:
    """`size` worker processes; `worker()` lends an idle one for the length of one task, so
    as many tasks as there are workers run at once, each in a process of its own."""

    def __init__(self, size: int = 1, memory_mb: int | None = None) -> None:
        self.size = size
        self.memory_mb = memory_mb  # the usual limit, which each worker's database is made for
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._workers: set[Worker] = set()

    async def start(self, warm_timeout_s: float = 120.0) -> None:
        """Start the workers and wait until each has imported what it runs and opened its
        database: an executor takes no task before (a worker importing Arrow, DuckDB and
        pandas costs about a second of CPU, which the first tasks would otherwise wait on and
        compete with)."""
        workers = [self._spawn() for _ in range(self.size)]
        warm = await asyncio.gather(*(asyncio.to_thread(w.warmed, warm_timeout_s) for w in workers))
        if not all(warm):
            _log.warning("%d worker(s) not warm after %.0fs", warm.count(False), warm_timeout_s)
        for worker in workers:
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        for worker in list(self._workers):
            worker.stop()
        self._workers.clear()

    def pids(self) -> list[int]:
        """The worker processes' ids (for logs and tests)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def busy(self) -> bool:
        """Whether every worker is taken (the next `worker()` waits)."""
        return self._idle.empty()

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator["Worker"]:
        """An idle worker, once one is free; it goes back to the pool after, or is replaced
        if what it ran was cancelled, timed out or broke it."""
        worker = await self._idle.get()
        try:
            yield worker
        finally:
            if not worker.healthy:
                self._workers.discard(worker)
                worker.stop()
                worker = self._spawn()
            self._idle.put_nowait(worker)

    async def run(
        self,
        blob: CodeBlob,
        inputs: Inputs,
        *,
        ordered: bool = False,
        timeout_s: float,
        memory_mb: int | None,
    ) -> "Output":
        """`Worker.run` on the next idle worker."""
        async with self.worker() as worker:
            return await worker.run(
                blob, inputs, ordered=ordered, timeout_s=timeout_s, memory_mb=memory_mb
            )

    def _spawn(self) -> "Worker":
        worker = Worker(self.memory_mb)
        self._workers.add(worker)
        return worker


@dataclass(frozen=True)
class Output:
    """A transform's result as the worker encoded it: its data SHA, rows and Parquet bytes,
    and the CPU time the worker spent on the task (its threads included: decoding and
    verifying the inputs, the transform, hashing and encoding the output)."""

    data_sha: str
    rows: int
    cpu_s: float
    parquet: bytes


class Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, memory_mb: int | None = None) -> None:
        parent, child = _CTX.Pipe()
        # Started from the event loop's thread, which lives as long as the process: the
        # worker's parent-death signal is tied to the thread that started it.
        self.process: BaseProcess = _CTX.Process(
            target=_serve, args=(child, os.getpid(), memory_mb), name="headwater-transform"
        )
        self.process.start()
        child.close()
        self.conn: Connection = parent
        self.healthy = True  # false from a task's start until it ends cleanly
        self._warm = False  # the worker said it is ready (its first message)

    def warmed(self, timeout_s: float) -> bool:
        """Wait (blocking: in a thread) for the worker's "ready", sent once it has imported
        what it runs and opened its database; False if it did not come in time or the worker
        died (its first task then finds out how)."""
        if self._warm:
            return True
        try:
            if not self.conn.poll(timeout_s):
                return False
            self._warm = self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            return False
        return self._warm

    async def run(
        self,
        blob: CodeBlob,
        inputs: Inputs,
        *,
        ordered: bool = False,
        timeout_s: float,
        memory_mb: int | None,
    ) -> Output:
        """Verify the inputs (Parquet bytes, each checked against its data SHA: InputDamaged
        if one does not hold it), run the transform over them, and encode its output (data
        SHA as `ordered` says, and Parquet), all in the worker. A failure of the user's code,
        a timeout, running out of memory or a crash of the worker is a TransformError;
        cancelling the caller leaves this worker unhealthy (the pool kills it)."""
        self.healthy = False
        header = {
            "blob": blob,
            "inputs": {name: [ref for ref, _ in parts] for name, parts in inputs.items()},
            "memory_mb": memory_mb,
            "ordered": ordered,
        }
        bodies = [data for parts in inputs.values() for _, data in parts]
        # The exchange waits in a thread: the event loop (heartbeats, other tasks) goes on,
        # and killing the worker ends the wait at once.
        answer = await asyncio.to_thread(self._call, header, bodies, timeout_s)
        if answer[0] == "ok":
            self.healthy = True
            return Output(*answer[1:5])
        if answer[0] == "damaged":
            self.healthy = True
            refs = [ref for parts in inputs.values() for ref, _ in parts]
            raise InputDamaged(refs[answer[1]], answer[2])
        if answer[0] == "error":
            self.healthy = not answer[3]
            raise TransformError(answer[1], answer[2])
        if answer[0] == "timeout":
            raise TransformError(f"timed out after {timeout_s:g}s")
        raise TransformError(_died(answer[1], memory_mb))

    def _call(self, header: dict[str, Any], bodies: list[bytes], timeout_s: float) -> Answer:
        """Send one task and wait for its answer (blocking: run it in a thread). The objects
        cross the pipe as they are, unpickled."""
        try:
            if not self.warmed(timeout_s):
                self.process.join(1)
                if self.process.exitcode is not None:
                    return ("died", self.process.exitcode)
                return ("timeout",)  # still starting after the task's whole time
            self.conn.send(header)
            for body in bodies:
                self.conn.send_bytes(body)
            if not self.conn.poll(timeout_s):
                return ("timeout",)
            answer: Answer = self.conn.recv()
            if answer[0] == "ok":
                return (*answer, self.conn.recv_bytes())
            return answer
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


# --- in the worker process ------------------------------------------------------------------
def _serve(conn: Connection, parent: int, memory_mb: int | None) -> None:
    """The worker's loop: one task at a time until the pipe closes."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the executor, which stops us
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing transform dumps no core
    sandbox = Sandbox()  # one DuckDB database for every task this worker runs
    _warm_up(sandbox, memory_mb)
    conn.send(("ready",))
    while True:
        try:
            header = conn.recv()
            bodies = [conn.recv_bytes() for parts in header["inputs"].values() for _ in parts]
        except EOFError:
            return
        answer, body = _answer(header, bodies, sandbox)
        conn.send(answer)
        if body is not None:
            conn.send_bytes(body)
        if answer[0] == "error" and answer[3]:
            return  # after running out of memory, a fresh process is the safe state


def _answer(
    header: dict[str, Any], bodies: list[bytes], sandbox: Sandbox
) -> tuple[Answer, bytes | None]:
    memory_mb = header["memory_mb"]
    _limit_memory(memory_mb)
    cpu = _cpu_s()
    try:
        inputs: dict[str, list[pa.Table]] = {}
        n = 0
        for name, refs in header["inputs"].items():
            inputs[name] = []
            for ref in refs:
                try:
                    inputs[name].append(verified(bodies[n], ref))
                except InputDamaged as exc:
                    return ("damaged", n, exc.reason), None
                bodies[n] = b""  # decoded: the bytes can go
                n += 1
        table = run_transform(header["blob"], inputs, memory_mb, sandbox)
        del inputs
        data_sha = hashing.data_sha(table, ordered=header["ordered"])
        parquet = formats.to_parquet(table)
        return ("ok", data_sha, table.num_rows, _cpu_s() - cpu), parquet
    except TransformError as exc:
        oom = isinstance(exc.__cause__, MemoryError | duckdb.OutOfMemoryException)
        return ("error", str(exc), exc.traceback, oom), None
    except MemoryError:  # decoding the inputs or encoding the result
        return ("error", out_of_memory(memory_mb), traceback.format_exc(), True), None
    except BaseException as exc:  # SystemExit from user code: report it, then go
        return ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(), True), None
    finally:
        _limit_memory(None)


def _cpu_s() -> float:
    """CPU seconds this process has used, all its threads (DuckDB's and Arrow's) included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


def _warm_up(sandbox: Sandbox, memory_mb: int | None) -> None:
    """Open the database for the usual memory limit and run it once, so what DuckDB keeps for
    good (threads, arenas) counts as the idle worker's footprint, not against the first
    task's memory limit."""
    sandbox.query("SELECT sum(a) FROM t", {"t": pa.table({"a": [1]})}, memory_mb)


def _die_with(parent: int) -> None:
    """The kernel SIGKILLs this worker when the executor dies (Linux), so a transform that
    never returns cannot outlive it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the executor died before prctl took effect
        os._exit(1)
