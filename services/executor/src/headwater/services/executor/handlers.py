"""executor: runs one task (a fingerprint), writes its output content-addressed, and reports
`partition landed` or `task failed`. It owns no state."""

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsBroker
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from headwater.contracts import (
    CodeBlob,
    InputRef,
    PartitionLanded,
    Subjects,
    TaskAttemptFailed,
    TaskFailed,
    TaskRequested,
    parse_model,
    subject_of,
)
from headwater.contracts.errors import RetryLater, Superseded, TransformError
from headwater.contracts.tasks import ATTEMPT_ERROR_BYTES, ATTEMPT_TRACEBACK_BYTES, head, tail
from headwater.core import hashing
from headwater.runtime import failpoints
from headwater.runtime.messaging import emit
from headwater.runtime.service import Resources
from headwater.runtime.telemetry import (
    ATTEMPT,
    BYTES,
    CODE_SHA,
    DATA_SHA,
    DATASET,
    FINGERPRINT,
    MESSAGING_DESTINATION,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION,
    MESSAGING_SYSTEM,
    OUTCOME,
    PARTITION,
    REASON,
    ROWS,
    annotate,
    current_trace_id,
    span,
)
from headwater.services.executor.inputs import InputDamaged, load_inputs, verified
from headwater.services.executor.settings import ExecutorSettings
from headwater.services.executor.workers import Inputs, Output, Worker, WorkerPool

_log = logging.getLogger(__name__)
PUBLISHED = b"published:"

# A code blob is bounded by the spec limits (HEADWATER_SPEC_MAX_CODE_BYTES); this bounds reading it.
MAX_CODE_BLOB_BYTES = 16 * 1024 * 1024


@dataclass
class Executor:
    res: Resources
    subjects: Subjects
    settings: ExecutorSettings
    pool: WorkerPool
    _code: dict[str, CodeBlob] = field(default_factory=dict)
    _cancels: KeyValue | None = None
    _lease_kv: KeyValue | None = None
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @property
    def broker(self) -> NatsBroker:
        return self.res.broker

    async def run(
        self,
        task: TaskRequested,
        heartbeat: Any = None,
        delivery: int = 1,
        reason: str | None = None,
    ) -> None:
        """Run `task` in a span, "executor task", that says why it ran (`reason`: the
        scheduler's, from the message's baggage), what it made and how it ended; each outcome
        is counted."""
        d = task.dataset
        attributes = {
            DATASET: d.name,
            PARTITION: task.partition_key,
            FINGERPRINT: task.fingerprint,
            CODE_SHA: d.code_sha,
            REASON: reason,
            ATTEMPT: delivery,
            "headwater.request": task.attempt,
            "headwater.repair": task.repair,
        }
        outcome = "error"  # an outage or a bug: the task is redelivered
        with span("executor task", attributes) as current:
            try:
                outcome = await self._run(task, heartbeat, delivery)
            except RetryLater:
                outcome = "retried"
                raise
            except Superseded:
                outcome = "superseded"
                raise
            except asyncio.CancelledError:  # the executor stops: the task is redelivered
                outcome = "interrupted"
                raise
            finally:
                current.set_attribute(OUTCOME, outcome)
                self.res.metrics.task(d.name, outcome)

    async def _run(self, task: TaskRequested, heartbeat: Any, delivery: int) -> str:
        started = time.perf_counter()
        failpoints.hit("executor.after_fetch")
        # A repair computes again what was published: its object was found unusable.
        done = None if task.repair else await self._published(task.fingerprint)
        if done is not None:
            # Work whose result was already published (the executor died before acking, or
            # the scheduler re-sent a task it heard nothing of): computing it again would
            # break minimality; publishing the stored result again is harmless (the readers'
            # inboxes absorb it) and repairs a lost result.
            _log.info("%s/%s already published", task.dataset.name, task.partition_key)
            annotate(data_sha=done.data_sha, rows=done.rows, bytes=done.bytes)
            # A new message id: the first one may still be in the duplicate window though its
            # message is gone. The event id is unchanged, so readers see one event.
            with self._publish_span(done):
                await emit(
                    self.broker,
                    self.subjects,
                    done,
                    msg_id=f"{done.event_id}:again:{uuid.uuid4().hex[:8]}",
                )
            return "republished"
        if await self._cancelled(task, "before it ran"):
            return "cancelled"
        lease = await self._take_lease(task.fingerprint, delivery)
        # Heartbeats from here: waiting for a free worker counts as work in progress.
        beat = asyncio.create_task(self._heartbeat(heartbeat)) if heartbeat else None
        try:
            return await self._compute(task, delivery, lease, started)
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat

    async def _compute(self, task: TaskRequested, delivery: int, lease: int, started: float) -> str:
        settings = self.res.settings
        d = task.dataset
        try:
            # Read while another task holds the worker: storage and CPU overlap.
            with span("executor fetch inputs", {"headwater.inputs": len(task.inputs)}) as fetch:
                blob = await self._load_code(d.code_sha)
                inputs = await load_inputs(self.res.objects, settings.data_bucket, task)
                fetch.set_attribute(
                    BYTES, sum(len(data) for refs in inputs.values() for _, data in refs)
                )
            waits = self.pool.busy()
            if waits:
                _log.info("%s/%s waits for a worker", d.name, task.partition_key)
            async with self.pool.worker() as worker:
                # The wait for a worker may have been long: what is no longer wanted is
                # dropped now, not computed.
                if waits and await self._cancelled(task, "as a worker came free"):
                    return "cancelled"
                _log.info(
                    "%s/%s running in worker %s",
                    d.name,
                    task.partition_key,
                    worker.process.pid,
                )
                output = await self._transform(task, worker, blob, inputs)
            del inputs
        except InputDamaged as exc:
            _log.warning("%s/%s cannot run: %s", d.name, task.partition_key, exc)
            await self._commit_lease(task.fingerprint, lease)
            await self._failed(task, delivery, str(exc), damaged_input=exc.ref)
            return "failed"
        except TransformError as exc:
            policy = self.settings
            _log.warning(
                "%s/%s failed (attempt %d of %d): %s",
                d.name,
                task.partition_key,
                delivery,
                policy.attempts,
                exc,
            )
            # Every failed attempt is reported, before its retry: the next may run elsewhere.
            await self._attempt_failed(task, delivery, str(exc), exc.traceback)
            if delivery < policy.attempts:
                delay = min(policy.retry_cap_s, policy.retry_base_s * 2 ** (delivery - 1))
                raise RetryLater(str(exc), delay) from exc
            await self._commit_lease(task.fingerprint, lease)
            await self._failed(task, delivery, str(exc), traceback=exc.traceback)
            return "failed"
        if output is None or await self._cancelled(task, "as it finished"):
            return "cancelled"  # acked: a cancelled task publishes nothing
        data_sha, body = output.data_sha, output.parquet
        object_key = f"{data_sha}.parquet"
        annotate(data_sha=data_sha, rows=output.rows, bytes=len(body))
        if task.repair:
            # A result that does not keep its SHA through Parquet would be found damaged by
            # every reader and repaired forever: fail it instead.
            try:
                await asyncio.to_thread(verified, body, _output_ref(task, data_sha, object_key))
            except InputDamaged as exc:
                error = f"the repaired output is unusable: {exc}"
                await self._attempt_failed(task, delivery, error)
                await self._commit_lease(task.fingerprint, lease)
                await self._failed(task, delivery, error)
                return "failed"
        with span("executor write", {BYTES: len(body), DATA_SHA: data_sha}) as write:
            # A repair writes the object anew: the one stored there was found missing or
            # damaged.
            stored = not task.repair and await self.res.objects.exists(
                settings.data_bucket, object_key
            )
            if not stored:
                await self.res.objects.put(settings.data_bucket, object_key, body)
            write.set_attribute("headwater.stored_before", stored)
        failpoints.hit("executor.after_write")
        await self._commit_lease(task.fingerprint, lease)
        # A repair's result is a new event for the readers (the first was processed).
        event_id = f"landed:{task.fingerprint}"
        if task.repair:
            event_id = f"{event_id}:repair{task.attempt}"
        landed = PartitionLanded(
            event_id=event_id,
            dataset=d.name,
            partition_key=task.partition_key,
            data_sha=data_sha,
            data_sha_version=hashing.DATA_SHA_VERSION,  # its workers run this code
            fingerprint=task.fingerprint,
            code_sha=d.code_sha,
            object_key=object_key,
            rows=output.rows,
            bytes=len(body),
            inputs=task.inputs,
            duration_ms=(time.perf_counter() - started) * 1000,
            cpu_ms=output.cpu_s * 1000,
            trace_id=current_trace_id(),
            repaired=task.repair,
            attempt=delivery,
        )
        with self._publish_span(landed):
            await emit(self.broker, self.subjects, landed, msg_id=landed.event_id)
            await self._mark_published(landed)
        failpoints.hit("executor.after_commit")
        _log.info(
            "%s/%s -> %s (%d rows)",
            d.name,
            task.partition_key,
            data_sha[:12],
            output.rows,
        )
        return "succeeded"

    def _publish_span(self, landed: PartitionLanded) -> Any:
        """The span of publishing a result (FastStream's own publish span is its child)."""
        return span(
            "executor publish",
            {
                MESSAGING_SYSTEM: "nats",
                MESSAGING_OPERATION: "send",
                MESSAGING_DESTINATION: subject_of(self.subjects, landed),
                MESSAGING_MESSAGE_ID: landed.event_id,
            },
        )

    async def _failed(
        self,
        task: TaskRequested,
        delivery: int,
        error: str,
        *,
        traceback: str = "",
        damaged_input: InputRef | None = None,
    ) -> None:
        """Report that `task` failed for good (its lease is committed)."""
        failed = TaskFailed(
            event_id=f"failed:{task.fingerprint}:{task.attempt}",
            fingerprint=task.fingerprint,
            dataset=task.dataset.name,
            partition_key=task.partition_key,
            attempt=delivery,
            error=error,
            traceback=traceback,
            damaged_input=damaged_input,
            code_sha=task.dataset.code_sha,
            inputs=task.inputs,
        )
        await emit(self.broker, self.subjects, failed, msg_id=failed.event_id)

    async def _attempt_failed(
        self, task: TaskRequested, delivery: int, error: str, traceback: str = ""
    ) -> None:
        """Report that this attempt of `task` failed: its error (bounded), when, and where."""
        failed = TaskAttemptFailed(
            event_id=f"attempt-failed:{task.fingerprint}:{task.attempt}:{delivery}",
            fingerprint=task.fingerprint,
            dataset=task.dataset.name,
            partition_key=task.partition_key,
            request=task.attempt,
            attempt=delivery,
            error=head(error, ATTEMPT_ERROR_BYTES),
            traceback=tail(traceback, ATTEMPT_TRACEBACK_BYTES),
            executor=self.owner[:256],
            at=datetime.now(UTC),
        )
        await emit(self.broker, self.subjects, failed, msg_id=failed.event_id)

    async def _transform(
        self, task: TaskRequested, worker: Worker, blob: CodeBlob, inputs: Inputs
    ) -> Output | None:
        """The output, or None if the task was cancelled while it ran (its worker is killed);
        in a span, "executor transform", and timed (`headwater.transform.duration`)."""
        d = task.dataset
        started, outcome = time.perf_counter(), "error"
        with span("executor transform", {"headwater.worker": worker.process.pid}) as current:
            try:
                output = await self._run_worker(task, worker, blob, inputs)
                outcome = "cancelled" if output is None else "succeeded"
                if output is not None:
                    current.set_attributes(
                        {
                            ROWS: output.rows,
                            DATA_SHA: output.data_sha,
                            "headwater.cpu_s": output.cpu_s,
                        }
                    )
                return output
            finally:
                current.set_attribute(OUTCOME, outcome)
                self.res.metrics.transformed(d.name, outcome, time.perf_counter() - started)

    async def _run_worker(
        self, task: TaskRequested, worker: Worker, blob: CodeBlob, inputs: Inputs
    ) -> Output | None:
        d = task.dataset
        run = asyncio.create_task(
            worker.run(
                blob,
                inputs,
                ordered=d.ordered,
                timeout_s=d.timeout_s or self.settings.task_timeout_s,
                memory_mb=d.memory_mb or self.settings.task_memory_mb or None,
            )
        )
        finished = asyncio.Event()
        watch = asyncio.create_task(self._watch_cancel(task, finished))
        try:
            await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The watch is not awaited: nats-py can swallow a cancellation that lands inside a
            # key-value request, so it also stops at its next look, on `finished`.
            finished.set()
            watch.cancel()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        if run.cancelled():
            return None
        return run.result()

    # Cancellation: the scheduler marks a fingerprint it no longer wants (its dataset was
    # removed, or a newer fingerprint superseded it) in the cancels bucket, and clears the
    # mark before it asks for that fingerprint again.
    async def _cancelled(self, task: TaskRequested, when: str) -> bool:
        if self._cancels is None:
            js = self.res.broker.connection.jetstream()
            self._cancels = await js.key_value(self.subjects.cancels_bucket)
        try:
            entry = await self._cancels.get(task.fingerprint)
        except (KeyNotFoundError, KeyDeletedError):  # never cancelled, or asked for again
            return False
        if entry.value is None:
            return False
        _log.info(
            "%s/%s cancelled %s (%s)",
            task.dataset.name,
            task.partition_key,
            when,
            entry.value.decode(errors="replace"),
        )
        return True

    async def _watch_cancel(self, task: TaskRequested, finished: asyncio.Event) -> None:
        """Return once the running task is cancelled, or `finished` is set."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), self.settings.cancel_poll_s)
            if finished.is_set():
                return
            try:
                if await self._cancelled(task, "while it ran; its worker is stopped"):
                    return
            except Exception as exc:  # the bus is away for a moment: the task goes on
                _log.warning("cannot look for a cancellation of %s: %s", task.fingerprint, exc)

    # Fencing: each delivery of a task takes the lease of its fingerprint (a key-value
    # revision); only the holder of the latest lease may commit a result. An executor paused
    # past its ack deadline finds its lease taken by the redelivery and commits nothing.
    # A lease's value goes "OWNER:DELIVERY" (running) -> "OWNER:committed" (fence passed) ->
    # "published" (the result is in the events stream).
    async def _leases(self) -> KeyValue:
        # Looked up once: `key_value` asks the server for the bucket's stream each time, a
        # round trip that four lease steps per task paid in turn.
        if self._lease_kv is None:
            js = self.res.broker.connection.jetstream()
            self._lease_kv = await js.key_value(self.subjects.leases_bucket)
        return self._lease_kv

    async def _published(self, fingerprint: str) -> PartitionLanded | None:
        """The result published for `fingerprint`, if any."""
        try:
            entry = await (await self._leases()).get(fingerprint)
        except KeyNotFoundError:
            return None
        if entry.value is None or not entry.value.startswith(PUBLISHED):
            return None
        return PartitionLanded.model_validate_json(entry.value[len(PUBLISHED) :])

    async def _mark_published(self, landed: PartitionLanded) -> None:
        value = PUBLISHED + landed.model_dump_json().encode()
        await (await self._leases()).put(landed.fingerprint, value)

    async def _take_lease(self, fingerprint: str, delivery: int) -> int:
        kv = await self._leases()
        revision: int = await kv.put(fingerprint, f"{self.owner}:{delivery}".encode())
        return revision

    async def _commit_lease(self, fingerprint: str, lease: int) -> None:
        kv = await self._leases()
        try:
            await kv.update(fingerprint, f"{self.owner}:committed".encode(), last=lease)
        except KeyWrongLastSequenceError:
            raise Superseded(
                f"task {fingerprint[:12]} was taken over by a newer delivery"
            ) from None

    async def _load_code(self, code_sha: str) -> CodeBlob:
        if code_sha not in self._code:
            raw = await self.res.objects.get(self.res.settings.code_bucket, f"{code_sha}.json")
            # Not its model (a damaged object): bad input naming the field, as a missing one is.
            self._code[code_sha] = parse_model(CodeBlob, raw, max_bytes=MAX_CODE_BLOB_BYTES)
        return self._code[code_sha]

    async def _heartbeat(self, beat: Any) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            await beat()


def _output_ref(task: TaskRequested, data_sha: str, object_key: str) -> InputRef:
    return InputRef(
        dataset=task.dataset.name,
        partition_key=task.partition_key,
        data_sha=data_sha,
        object_key=object_key,
    )
