"""scheduler: its event handlers, commands and explanations. Events say where to look (the
reconciler, reconciler.py, decides and writes); on start and on a timer it re-derives
everything from stored facts. A partition is dispatched only when every input it reads is
ready; a task's identity is its fingerprint, and a fingerprint materialized before is reused.
The read side of `status` and `wait` is queries.py."""

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
from opentelemetry.context import Context

from headwater.contracts import (
    PROD_ENV,
    CodeChanged,
    DatasetDefinition,
    InputRef,
    PartitionLanded,
    PartitionRetracted,
    PartitionState,
    Subjects,
    TaskAttemptFailed,
    TaskFailed,
    TaskState,
)
from headwater.contracts.errors import HeadwaterError, InputError
from headwater.contracts.rpc import (
    CurrentFingerprint,
    CurrentReply,
    CurrentRequest,
    DropEnvRequest,
    DroppedPartitions,
    ImpactReply,
    ImpactRequest,
    PartitionRecord,
    PartitionRequest,
    RetractedWas,
    Retraction,
    RetryReply,
    RetryRequest,
    RunReuse,
    TaskRecord,
    WhyReply,
)
from headwater.core import reconcile
from headwater.core.reconcile import Desired, PartitionFact
from headwater.runtime.service import Resources
from headwater.runtime.telemetry import Attributes, span
from headwater.services.scheduler import store
from headwater.services.scheduler.reconciler import Reconciler, Work, merge

_log = logging.getLogger(__name__)
# The events the scheduler handles (headwater.contracts.registry names it their consumer).
SchedulerEvent = CodeChanged | PartitionLanded | PartitionRetracted | TaskFailed | TaskAttemptFailed


_DUE_AT_ONCE = 5000  # held computations asked for per `settle_due`
TASKS_REQUESTED = "headwater.tasks_requested"  # on a reconcile's span


@dataclass
class Scheduler:
    res: Resources
    subjects: Subjects
    task_resend_s: float = 300.0
    reconciler: Reconciler = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(self.res, self.subjects)
        # What each event does: the work it leaves for the reconciler.
        self.effects: dict[
            type[SchedulerEvent], Callable[[asyncpg.Connection, Any], Awaitable[Work]]
        ]
        self.effects = {
            CodeChanged: self._code_changed,
            PartitionLanded: self._partition_landed,
            PartitionRetracted: self._partition_retracted,
            TaskFailed: self._task_failed,
            TaskAttemptFailed: self._attempt_failed,
        }

    # --- events -----------------------------------------------------------------------
    async def handle(
        self, events: Sequence[SchedulerEvent], traces: Sequence[Context] | None = None
    ) -> list[HeadwaterError | None]:
        """Apply a batch of events in one transaction, then reconcile once over the union of
        the partitions they touch, and commit. Each event runs in a savepoint: one rejected
        as bad input leaves no trace and is returned (per event: its error, or None); an
        event processed before (the inbox) is skipped. Reconciling is a function of the
        stored facts, so the batch ends where the same events one by one would. `traces`
        (each event's trace context) put each task in the trace of the event that caused it."""
        errors: list[HeadwaterError | None] = [None] * len(events)
        started = time.perf_counter()
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            self.reconciler.begin()  # under the lock: one batch (or reconcile) at a time
            work: Work = {}
            for i, event in enumerate(events):
                try:
                    async with conn.transaction():  # a savepoint
                        if await store.first_time(conn, event.event_id):
                            effect = await self._effect(conn, event)
                            if traces is not None:
                                self.reconciler.caused(effect, traces[i])
                            merge(work, effect)
                except InputError as exc:
                    errors[i] = exc
            if work or self.reconciler.pending:
                attributes: Attributes = {
                    "headwater.trigger": "events",
                    "headwater.datasets": len(work),
                }
                with span("scheduler reconcile", attributes) as current:
                    await self.reconciler.run(conn, work)
                    current.set_attribute(TASKS_REQUESTED, self.reconciler.requested.total())
        self.reconciler.count_requested()
        self.res.metrics.reconciled("events", len(events), time.perf_counter() - started)
        await self.res.flush()
        if self.reconciler.cancel_pending:
            await self.reconciler.write_cancels()
        return errors

    async def _effect(self, conn: asyncpg.Connection, event: SchedulerEvent) -> Work:
        return await self.effects[type(event)](conn, event)

    async def _one(self, event: SchedulerEvent) -> None:
        [error] = await self.handle([event])
        if error is not None:
            raise error

    async def on_code_changed(self, event: CodeChanged) -> None:
        await self._one(event)

    async def on_partition_landed(self, event: PartitionLanded) -> None:
        await self._one(event)

    async def on_partition_retracted(self, event: PartitionRetracted) -> None:
        await self._one(event)

    async def on_task_failed(self, event: TaskFailed) -> None:
        await self._one(event)

    async def _code_changed(self, conn: asyncpg.Connection, event: CodeChanged) -> Work:
        env = event.env
        if env != PROD_ENV:
            through = await store.dropped_through(conn, env)
            if through is not None and event.spec_version <= through:
                return {}  # announced before the environment was dropped
        await store.put_dataset(conn, event.dataset, event.removed, env)
        if event.promoted_from is not None:  # what it computed is prod's now
            await store.adopt_materializations(conn, event.promoted_from, event.dataset.name)
        if event.removed:  # its partitions leave `status`; what it had asked for stops
            fingerprints = await store.requested_tasks_of(conn, event.dataset.name)
            await self.reconciler.cancel(
                conn, [(fp, "its dataset was removed") for fp in fingerprints], env
            )
            return {}
        if event.dataset.kind == "source":
            return {}
        if env != PROD_ENV:
            # A definition a new environment copied from prod changes nothing there (what
            # reads a changed one follows from its reconcile).
            if event.previous_code_sha != event.dataset.code_sha:
                self.reconciler.in_env(env, {event.dataset.name: None})
            return {}
        return {event.dataset.name: None}

    async def _partition_landed(self, conn: asyncpg.Connection, event: PartitionLanded) -> Work:
        if event.code_sha is None:  # a source partition: its fingerprint is its data SHA
            current = await store.partition(conn, event.dataset, event.partition_key)
            known = current["source_version"] if current is not None else None
            version = event.source_version
            if version is not None and known is not None and version <= known:
                return {}  # older content, replayed or reordered: already superseded
            await store.add_materialization(conn, event, "landed")
            await store.set_partition(
                conn,
                event.dataset,
                event.partition_key,
                state=PartitionState.READY,
                fingerprint=event.fingerprint,
                desired_fingerprint=event.fingerprint,
                data_sha=event.data_sha,
                object_key=event.object_key,
                rows=event.rows,
                bytes=event.bytes,
                reason=None,
                source_version=event.source_version,
            )
            self.reconciler.changed(PROD_ENV, event.dataset, {event.partition_key})
            return await self.reconciler.downstream_of(conn, event.dataset, {event.partition_key})
        task = await store.task(conn, event.fingerprint)
        await store.add_materialization(
            conn, event, task["reason"] if task else None, task["env"] if task else PROD_ENV
        )
        if event.repaired:  # the object was written anew: what it backs is usable again
            await store.mark_repaired(conn, event.object_key)
        # Every delivery up to the one that made it ran the transform (or was lost running it).
        await store.finish_task(
            conn, event.fingerprint, TaskState.SUCCEEDED, executions=event.attempt
        )
        # Reconciled like any partition: adopted if it is still what is wanted (a result for
        # an older desire is kept for reuse, not made current), in every environment.
        self.reconciler.in_every_env({event.dataset: {event.partition_key}})
        return {event.dataset: {event.partition_key}}

    async def _partition_retracted(
        self, conn: asyncpg.Connection, event: PartitionRetracted
    ) -> Work:
        current = await store.partition(conn, event.dataset, event.partition_key)
        if current is None:
            return {}
        known = current["source_version"]
        if known is not None and event.source_version <= known:
            return {}  # a newer landing already superseded this retraction
        work = await self.reconciler.downstream_of(conn, event.dataset, {event.partition_key})
        # Kept as `retracted` with its version, so an older landing replayed later loses.
        await store.set_partition(
            conn,
            event.dataset,
            event.partition_key,
            state=PartitionState.RETRACTED,
            data_sha=None,
            object_key=None,
            fingerprint=None,
            desired_fingerprint=None,
            rows=None,
            bytes=None,
            reason="its files were deleted",
            source_version=event.source_version,
        )
        self.reconciler.changed(PROD_ENV, event.dataset, {event.partition_key})
        return work

    async def _task_failed(self, conn: asyncpg.Connection, event: TaskFailed) -> Work:
        # The executor has already retried with backoff: this failure is final for the task.
        if event.damaged_input is not None:
            work = await self._input_damaged(conn, event, event.damaged_input)
            if work is not None:
                return work
        # The executor reports how many deliveries ran it (none did when an input was bad).
        ran = 0 if event.damaged_input is not None else event.attempt
        await store.finish_task(
            conn, event.fingerprint, TaskState.FAILED, event.error, event.traceback, executions=ran
        )
        # Every environment whose own row waits for it is errored too (one that sees prod's
        # row follows prod).
        for own in await store.own_partitions(
            conn, event.dataset, event.partition_key, await store.envs(conn)
        ):
            if own["desired_fingerprint"] == event.fingerprint and own["state"] == "queued":
                await store.set_partition(
                    conn,
                    event.dataset,
                    event.partition_key,
                    env=own["env"],
                    state=PartitionState.ERRORED,
                    reason=event.error,
                )
                self.reconciler.changed(own["env"], event.dataset, {event.partition_key})
        current = await store.partition(conn, event.dataset, event.partition_key)
        if current is None or current["desired_fingerprint"] != event.fingerprint:
            return {}
        await store.set_partition(
            conn,
            event.dataset,
            event.partition_key,
            state=PartitionState.ERRORED,
            reason=event.error,
        )
        self.reconciler.changed(PROD_ENV, event.dataset, {event.partition_key})
        return await self.reconciler.downstream_of(conn, event.dataset, {event.partition_key})

    async def _attempt_failed(self, conn: asyncpg.Connection, event: TaskAttemptFailed) -> Work:
        # Kept for `why`; what the failure means for the partition waits for `task failed`.
        await store.add_attempt(conn, event)
        return {}

    async def _input_damaged(
        self, conn: asyncpg.Connection, event: TaskFailed, ref: InputRef
    ) -> Work | None:
        """A task could not read `ref`: its object is missing or does not match its data SHA.
        No materialization stored there is reused again. If a computation produced it, the
        partition is recomputed and the reader waits for it (its task is sent again once the
        input is ready); returns the work. For a source partition there is nothing to
        recompute: returns None, and the reader is errored like any failed task."""
        await store.mark_damaged(conn, ref.object_key, event.error)
        producer = await store.partition(conn, ref.dataset, ref.partition_key)
        produced = None
        if producer is not None and producer["data_sha"] == ref.data_sha:
            produced = await store.materialization_any(conn, producer["fingerprint"])
        if producer is not None and producer["data_sha"] != ref.data_sha:
            # The input has changed since the task was requested: the reader's reconcile
            # asks for what is wanted now.
            await store.finish_task(conn, event.fingerprint, TaskState.INTERRUPTED, event.error)
            return {event.dataset: {event.partition_key}}
        if produced is None or produced["code_sha"] is None:
            return None
        _log.warning(
            "%s/%s: object %s of %s/%s is unusable (%s); recomputing it",
            event.dataset,
            event.partition_key,
            ref.object_key,
            ref.dataset,
            ref.partition_key,
            event.error,
        )
        await store.finish_task(conn, event.fingerprint, TaskState.INTERRUPTED, event.error)
        await store.set_partition(
            conn,
            event.dataset,
            event.partition_key,
            state=PartitionState.WAITING,
            reason=f"input {ref.dataset}/{ref.partition_key} is being recomputed: {event.error}",
        )
        # Not current any more: its reconcile finds the materialization unusable and the
        # task succeeded before, and sends it again as a repair.
        await store.set_partition(
            conn, ref.dataset, ref.partition_key, state=PartitionState.QUEUED, fingerprint=None
        )
        self.reconciler.changed(PROD_ENV, event.dataset, {event.partition_key})
        self.reconciler.changed(PROD_ENV, ref.dataset, {ref.partition_key})
        return {ref.dataset: {ref.partition_key}}

    async def retry(self, request: RetryRequest) -> RetryReply:
        """Run the errored partitions of a dataset (or one of them) again; what they block
        follows once they succeed. Nothing that succeeded runs again."""
        dataset, key = request.dataset, request.partition_key
        retried: list[str] = []

        async def apply(conn: asyncpg.Connection) -> Work:
            defs = await store.definitions(conn)
            d = defs.get(dataset)
            if d is None:
                raise InputError("dataset", f"{dataset!r} is not a dataset of any applied pipeline")
            facts = await store.facts(conn, [*(i.dataset for i in d.inputs), d.name])
            stored = await store.rows(conn, d.name, None if key is None else [key])
            index = reconcile.index_of(facts, [i.dataset for i in d.inputs])
            requests: dict[str, tuple[reconcile.Request, Desired]] = {}
            for k, row in sorted(stored.items()):
                if row.state != PartitionState.ERRORED:
                    continue
                decision = reconcile.decide(d, k, facts, index)
                if isinstance(decision, Desired):
                    requests[k] = ("again", decision)
            queued = {
                k: replace(
                    stored[k], state=PartitionState.QUEUED, desired_fingerprint=dec.fingerprint
                )
                for k, (_, dec) in requests.items()
            }
            await store.put_rows(conn, d.name, queued)
            await self.reconciler.request(conn, d, requests, stored)
            retried.extend(sorted(requests))
            if key is not None and not retried:
                raise InputError("partition", f"{dataset}/{key} is not errored")
            return {}

        await self._transact(apply, "retry")
        return RetryReply(dataset=dataset, retried=retried)

    async def reconcile_all(self) -> None:
        """Re-derive every derived partition from stored facts."""

        async def apply(conn: asyncpg.Connection) -> Work:
            defs = await store.definitions(conn)
            await self._resend_unanswered(conn)
            for env in await store.envs(conn):
                mine = await store.definitions(conn, env)
                self.reconciler.in_env(env, {d.name: None for d in mine.values()})
            return {d.name: None for d in defs.values() if d.kind != "source"}

        await self._transact(apply, "timer")

    async def settle_due(self) -> None:
        """Ask for the held computations (`settle:`) whose inputs have been quiet long
        enough: reconciled again, they are requested (a few thousand at a time)."""
        async with self.res.pool.acquire() as conn:
            if not await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {store.SCHEMA}.settling WHERE due_at <= now())"
            ):
                return  # the common case, without waiting for the reconciler's lock

        async def apply(conn: asyncpg.Connection) -> Work:
            due = await store.settled_due(conn, _DUE_AT_ONCE)
            for env, work in due.items():
                if env != PROD_ENV:
                    self.reconciler.in_env(env, {name: keys for name, keys in work.items()})
            return {name: keys for name, keys in due.get(PROD_ENV, {}).items()}

        await self._transact(apply, "settle")

    async def _resend_unanswered(self, conn: asyncpg.Connection) -> None:
        """Send again a task nobody answered for `task_resend_s` (its message, or its result,
        was lost). Only when the work queue is empty and nothing is in flight, so a backlog is
        never mistaken for a loss; an executor that already published the result publishes it
        again instead of computing it twice."""
        tasks = await store.unanswered_tasks(conn, self.task_resend_s)
        if not tasks:
            return
        js = self.res.broker.connection.jetstream()
        info = await js.consumer_info(self.subjects.tasks_stream, "executor")
        if info.num_pending or info.num_ack_pending:
            return
        defs: dict[str, dict[str, DatasetDefinition]] = {}
        for task in tasks:
            env = task["env"]
            if env not in defs:
                defs[env] = await store.definitions(conn, env)
            d = defs[env].get(task["dataset"])
            if d is None:
                continue
            scopes = reconcile.scopes(d, {task["partition_key"]})
            facts = await store.scoped_facts(conn, scopes, env)
            decision = reconcile.decide(d, task["partition_key"], facts)
            if not isinstance(decision, Desired) or decision.fingerprint != task["fingerprint"]:
                continue  # no longer wanted; the reconcile below requests what is
            _log.warning("re-sending task %s: unanswered", task["fingerprint"][:12])
            await self.reconciler.uncancel(task["fingerprint"])  # wanted: no stray mark may drop it
            await store.mark_sent(conn, task["fingerprint"])
            self.reconciler.requested[(d.name, "resend")] += 1  # a message or result was lost
            again = "sent again: neither the task nor its result was heard of"
            await self.reconciler.publish(
                conn,
                [
                    self.reconciler.task(
                        d, task["partition_key"], decision, task["attempts"], again, resend=True
                    )
                ],
            )

    # --- queries ------------------------------------------------------------------------
    async def why(self, request: PartitionRequest) -> WhyReply:
        dataset, key, env = request.dataset, request.partition_key, request.env
        async with self.res.pool.acquire() as conn:
            current = await store.partition(conn, dataset, key, env)
            if (
                current is not None
                and current["env"] != PROD_ENV
                and current["state"] == (PartitionState.RETRACTED)
            ):
                current = None  # not in this environment (it holds prod's partition no more)
            history = await store.materializations_of(conn, dataset, key, env)
            gone = await store.retraction(conn, dataset, key, env) if current is None else None
            task, attempts = None, []
            if current is not None and current["desired_fingerprint"]:
                task = await store.task(conn, current["desired_fingerprint"])
                attempts = await store.attempts_of(conn, current["desired_fingerprint"])
        retracted: Retraction | None = None
        if current is None:
            if gone is None:
                raise InputError("partition", f"{dataset}/{key} is not known to the scheduler")
            # A derived partition that went away: answered from what was kept of it.
            partition = PartitionRecord(
                dataset=dataset,
                partition_key=key,
                state=PartitionState.RETRACTED,
                reason=gone["reason"],
                updated_at=gone["retracted_at"],
            )
            retracted = Retraction(
                at=gone["retracted_at"],
                reason=gone["reason"],
                inputs=json.loads(gone["inputs"]),
                was=RetractedWas(
                    state=gone["state"],
                    fingerprint=gone["fingerprint"],
                    data_sha=gone["data_sha"],
                    rows=gone["rows"],
                ),
            )
        else:
            # The reply is as it was: the environment is the caller's (PartitionRecord has none).
            partition = store.record_of(PartitionRecord, current)
            if current["state"] == PartitionState.RETRACTED:  # a source whose files were deleted
                last = history[-1] if history else None
                retracted = Retraction(
                    at=current["updated_at"],
                    reason=current["reason"],
                    inputs=[],
                    was=RetractedWas(
                        state=PartitionState.READY,
                        fingerprint=last.fingerprint if last else None,
                        data_sha=last.data_sha if last else None,
                        rows=last.rows if last else None,
                    ),
                )
        explained = None
        if task is not None:
            # `attempts`: how many times the transform ran; `requests`: how many times the
            # scheduler asked for it (the first request, then each retry); `attempt_errors`:
            # each failed attempt, of every request, in the order they ran.
            row = dict(task)
            row["requests"] = row.pop("attempts")
            row["attempts"] = row.pop("executions")
            explained = store.record_of(TaskRecord, {**row, "attempt_errors": attempts})
        return WhyReply(
            partition=partition, retracted=retracted, task=explained, materializations=history
        )

    async def current(self, request: CurrentRequest) -> CurrentReply:
        """The fingerprint of the current materialization of each partition named in
        `partitions` ([[dataset, key], ...]); a partition that does not exist has none."""
        pairs = request.partitions
        found = await store.fingerprints_of(self.res.pool, pairs, request.env)
        return CurrentReply(
            [
                CurrentFingerprint(dataset=d, partition_key=k, fingerprint=found.get((d, k)))
                for d, k in pairs
            ]
        )

    async def impact(self, request: ImpactRequest) -> ImpactReply:
        """What applying new definitions would run, before anything runs. It walks the
        datasets in order over today's facts, as the reconciler would: a partition whose new
        fingerprint was materialized before is reused (and its known data SHA flows on); one
        that must be computed makes what reads it uncertain. Per changed dataset: `run` and
        `reuse`; `downstream`: partitions of other datasets that may run (an upper bound:
        early cutoff can stop them)."""
        changed = request.datasets
        changed_names = {c.name for c in changed}
        env = request.env
        async with self.res.pool.acquire() as conn:
            defs = await store.definitions(conn, env)
            if env != PROD_ENV and not defs:  # a new environment starts as prod
                env = PROD_ENV
                defs = await store.definitions(conn, env)
            defs.update({d.name: d for d in changed})
            facts = await store.facts(conn, list(defs), env)
            current = await store.current_fingerprints(conn, env)
            result: dict[str, dict[str, list[str]]] = {
                n: {"run": [], "reuse": []} for n in sorted(changed_names)
            }
            downstream: dict[str, list[str]] = {}
            for d in reconcile.topological(defs.values()):
                if d.kind == "source":
                    continue
                index = reconcile.index_of(facts, [i.dataset for i in d.inputs])
                decided = {
                    key: reconcile.decide(d, key, facts, index)
                    for key in sorted(reconcile.output_keys(d, facts))
                }
                asked = {
                    dec.fingerprint
                    for key, dec in decided.items()
                    if isinstance(dec, Desired) and current.get((d.name, key)) != dec.fingerprint
                }
                made = await store.outputs(conn, asked)  # one query for the dataset
                for key, decision in decided.items():
                    if isinstance(decision, Desired):
                        if current.get((d.name, key)) == decision.fingerprint:
                            continue
                        m = made.get(decision.fingerprint)
                        if m is not None:
                            facts[d.name][key] = PartitionFact(
                                m.data_sha, m.object_key, PartitionState.READY
                            )
                            if d.name in result:
                                result[d.name]["reuse"].append(key)
                            continue
                    elif not _reads_pending(d, key, facts, index):
                        continue  # waits on something this change does not touch
                    facts[d.name][key] = PartitionFact(None, None, "pending")
                    if d.name in result:
                        result[d.name]["run"].append(key)
                    else:
                        downstream.setdefault(d.name, []).append(key)
        return ImpactReply(
            datasets={n: RunReuse(run=r["run"], reuse=r["reuse"]) for n, r in result.items()},
            downstream=downstream,
        )

    async def drop_env(self, request: DropEnvRequest) -> DroppedPartitions:
        """Forget environment `env` (spec-registry has forgotten its definitions; events of
        its spec versions up to `spec_version` still in flight are ignored). Its requested
        tasks nobody else waits for are cancelled; `objects`: the data objects nothing else
        references, which the caller deletes (their materializations are marked unusable)."""
        env, version = request.env, request.spec_version
        if env == PROD_ENV:
            raise InputError("env", "prod cannot be dropped")
        dropped: list[store.Dropped] = []

        async def apply(conn: asyncpg.Connection) -> Work:
            found = await store.drop_env(conn, env, version)
            await self.reconciler.cancel(
                conn, [(fp, f"its environment {env} was dropped") for fp in found.cancelled], env
            )
            dropped.append(found)
            return {}

        await self._transact(apply, "drop")
        [found] = dropped
        return DroppedPartitions(
            env=env,
            partitions=found.partitions,
            cancelled=len(found.cancelled),
            objects=found.objects,
        )

    # --- the reconciler -------------------------------------------------------------------
    async def _transact(self, apply: Any, trigger: str) -> None:
        """A command's or a timer's reconcile (events go through `handle`), in a span of its
        own, "scheduler reconcile", which the tasks it requests continue; `trigger` names
        which (`timer`, `settle`, `retry`) in its span and metrics."""
        started = time.perf_counter()
        with span("scheduler reconcile", {"headwater.trigger": trigger}) as current:
            async with self.res.pool.acquire() as conn, conn.transaction():
                await store.lock(conn)
                self.reconciler.begin()  # its tasks continue the trace it runs in
                work: Work = await apply(conn)
                current.set_attribute("headwater.datasets", len(work))
                await self.reconciler.run(conn, work)
            current.set_attribute(TASKS_REQUESTED, self.reconciler.requested.total())
            self.reconciler.count_requested()
            self.res.metrics.reconciled(trigger, 0, time.perf_counter() - started)
            await self.res.flush()
            await self.reconciler.write_cancels()


def _reads_pending(
    d: DatasetDefinition,
    key: str,
    facts: dict[str, dict[str, PartitionFact]],
    index: reconcile.Index,
) -> bool:
    """Whether output partition `key` reads a partition this plan will recompute."""
    found = reconcile.reads(d, key, facts, index)
    return not isinstance(found, str) and any(f.state == "pending" for _, _, f in found)
