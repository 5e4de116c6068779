"""The Headwater client: the SDK behind the CLI. Everything goes over NATS (request-reply
to the services, JetStream for publishing) plus object storage for upstream files."""

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from headwater.contracts import (
    PROD_ENV,
    UpstreamEvent,
    format_of,
    validate_dataset_name,
    validate_partition_key,
)
from headwater.contracts.errors import InputError, TransientError
from headwater.contracts.rpc import (
    AFFECTED,
    APPLY,
    COLUMNS,
    CURRENT,
    DATASETS,
    DROP_ENV_DEFINITIONS,
    DROP_ENV_PARTITIONS,
    ENVS,
    HISTORY,
    IMPACT,
    LINEAGE,
    LISTING_MAX,
    MAX_CURRENT,
    PARTITIONS,
    PENDING,
    PLAN,
    PROMOTE,
    RETRY,
    SUMMARY,
    WHY,
    AffectedRequest,
    ColumnsRequest,
    CurrentRequest,
    DatasetsRequest,
    DropEnvRequest,
    EnvRequest,
    EnvsRequest,
    HistoryRequest,
    ImpactRequest,
    LineageRequest,
    PartitionRequest,
    PartitionsRequest,
    PendingRequest,
    RetryRequest,
    Rpc,
    RunReuse,
    SpecRequest,
    SummaryRequest,
)
from headwater.runtime import rpc, topology
from headwater.runtime.settings import ServiceSettings
from headwater.sdk.explain import dataset_graph, history_entries

Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class HeadwaterClient:
    """`async with HeadwaterClient(settings) as hw: await hw.status()`"""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self._nc: NatsClient | None = None

    async def __aenter__(self) -> "HeadwaterClient":
        options: dict[str, Any] = {}
        if self.settings.nats_user:
            options = {"user": self.settings.nats_user, "password": self.settings.nats_password}
        try:
            self._nc = await nats.connect(
                self.settings.nats_url, connect_timeout=5, max_reconnect_attempts=3, **options
            )
        except Exception as exc:
            raise TransientError(f"cannot reach NATS at {self.settings.nats_url}: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._nc is not None:
            await self._nc.close()

    @property
    def nc(self) -> NatsClient:
        assert self._nc is not None, "use `async with HeadwaterClient(...)`"
        return self._nc

    async def ask(self, query: Rpc[Q, R], request: Q, timeout: float = 30) -> R:
        """Ask a service `query`; the reply parsed into its model. Its error reply becomes
        InputError (or TransientError when asking again may help)."""
        subject = query.subject(self.subjects)
        try:
            reply = await self.nc.request(subject, rpc.encode(request), timeout=timeout)
        except (TimeoutError, nats.errors.NoRespondersError) as exc:
            raise TransientError(
                f"{query.service} did not answer on {subject}: is it running?"
            ) from exc
        return rpc.decode(query, subject, reply.data)

    async def call(self, service: str, verb: str, body: dict[str, Any], timeout: float = 30) -> Any:
        """Request-reply with a raw JSON body, as any NATS client could send it (tests of what a
        service accepts); the result as JSON. Its error reply becomes InputError."""
        subject = self.subjects.rpc(service, verb)
        try:
            reply = await self.nc.request(subject, json.dumps(body).encode(), timeout=timeout)
        except (TimeoutError, nats.errors.NoRespondersError) as exc:
            raise TransientError(f"{service} did not answer on {subject}: is it running?") from exc
        return rpc.result_of(subject, reply.data)

    # --- spec ------------------------------------------------------------------------
    async def apply(self, path: Path, env: str | None = None) -> dict[str, Any]:
        """Apply the spec at `path` to prod, or into environment `env` (created as a view of
        prod if it does not exist)."""
        from headwater.sdk.spec_files import read_document  # parses SQL: only apply and plan

        doc = read_document(path)
        with rpc.checked():
            request = SpecRequest(**doc.model_dump(), env=_env(env))
        return document(await self.ask(APPLY, request))

    async def plan(self, path: Path, env: str | None = None) -> dict[str, Any]:
        """Per dataset, the code SHA change and the partitions that would run, before any do."""
        from headwater.sdk.spec_files import read_document  # parses SQL: only apply and plan

        doc = read_document(path)
        with rpc.checked():
            request = SpecRequest(**doc.model_dump(), env=_env(env))
        planned = await self.ask(PLAN, request)
        asked = ImpactRequest(datasets=planned.definitions, env=request.env)
        impact = await self.ask(IMPACT, asked)
        result = document(planned)
        del result["definitions"]
        for change in result["changes"]:
            partitions = impact.datasets.get(change["dataset"], RunReuse())
            change.update(run=partitions.run, reuse=partitions.reuse)
        result["downstream"] = impact.downstream
        return result

    # --- upstream ----------------------------------------------------------------------
    async def publish(
        self,
        dataset: str,
        partition: str,
        file: Path,
        *,
        name: str | None = None,
        event_id: str | None = None,
    ) -> UpstreamEvent:
        """The upstream contract in one call: write the file to the landing bucket under
        DATASET/PARTITION/NAME, then publish the event on `hw.upstream.DATASET`."""
        validate_dataset_name(dataset)
        validate_partition_key(partition)
        name = name or file.name
        key = f"{dataset}/{partition}/{name}"
        event = UpstreamEvent(
            dataset=dataset,
            partition=partition,
            key=key,
            format=format_of(name),
            event_id=event_id or str(uuid.uuid4()),
        )
        from headwater.runtime.objectstore import open_store  # loads the S3 client

        store = open_store(self.settings)
        await store.ensure_bucket(self.settings.landing_bucket)
        await store.put(self.settings.landing_bucket, key, file.read_bytes())
        await self.nc.jetstream().publish(
            self.subjects.upstream(dataset),
            event.model_dump_json(exclude={"schema_version"}).encode(),
            headers={"Nats-Msg-Id": event.event_id},
        )
        return event

    async def delete(self, dataset: str, partition: str) -> list[str]:
        """Retract a source partition: remove its files from the landing bucket, then tell
        the change-detector (an event naming a removed file) so what read it follows."""
        validate_dataset_name(dataset)
        validate_partition_key(partition)
        from headwater.runtime.objectstore import open_store  # loads the S3 client

        store = open_store(self.settings)
        keys = await store.list(self.settings.landing_bucket, f"{dataset}/{partition}/")
        for key in keys:
            await store.delete(self.settings.landing_bucket, key)
        if keys:
            event = UpstreamEvent(
                dataset=dataset,
                partition=partition,
                key=keys[0],
                format=format_of(keys[0]),
                event_id=str(uuid.uuid4()),
            )
            await self.nc.jetstream().publish(
                self.subjects.upstream(dataset),
                event.model_dump_json(exclude={"schema_version"}).encode(),
                headers={"Nats-Msg-Id": event.event_id},
            )
        return keys

    # --- reads -------------------------------------------------------------------------
    # --- environments ---------------------------------------------------------------------
    async def promote(self, env: str) -> dict[str, Any]:
        """Make environment `env`'s definitions prod's; nothing runs for what it computed."""
        with rpc.checked():
            request = EnvRequest(env=env)
        return document(await self.ask(PROMOTE, request))

    async def envs(self) -> list[dict[str, Any]]:
        """Every environment (prod first): datasets, pipelines, definitions differing from prod."""
        return [document(e) for e in (await self.ask(ENVS, EnvsRequest())).root]

    async def drop_env(self, env: str) -> dict[str, Any]:
        """Remove environment `env`: its definitions, its own partitions, its requested tasks
        nobody else waits for, and the data objects nothing else references."""
        with rpc.checked():
            request = EnvRequest(env=env)
        found = await self.ask(DROP_ENV_DEFINITIONS, request)
        asked = DropEnvRequest(env=env, spec_version=found.spec_version or 0)
        result = await self.ask(DROP_ENV_PARTITIONS, asked)
        from headwater.runtime.objectstore import open_store  # loads the S3 client

        store = open_store(self.settings)
        for key in result.objects:
            await store.delete(self.settings.data_bucket, key)
        return {
            "env": env,
            "datasets": found.datasets,
            "partitions": result.partitions,
            "cancelled": result.cancelled,
            "objects_deleted": len(result.objects),
        }

    async def env_diff(self, a: str, b: str) -> dict[str, Any]:
        """What differs between environments `a` and `b`: datasets whose code SHA differs (or
        that one lacks), and partitions whose data SHA or state differs, per dataset."""
        shas: dict[str, dict[str, str]] = {}
        for e in (a, b):
            with rpc.checked():
                request = DatasetsRequest(env=e)
            found = (await self.ask(DATASETS, request)).root
            shas[e] = {name: d.code_sha for name, d in found.items()}
        datasets = [
            {"dataset": name, a: shas[a].get(name), b: shas[b].get(name)}
            for name in sorted(set(shas[a]) | set(shas[b]))
            if shas[a].get(name) != shas[b].get(name)
        ]
        held = {e: await self.status(e) for e in (a, b)}
        rows = {
            e: {(p["dataset"], p["partition_key"]): p for p in held[e]["partitions"]}
            for e in (a, b)
        }
        partitions = []
        for ref in sorted(set(rows[a]) | set(rows[b])):
            x, y = rows[a].get(ref), rows[b].get(ref)
            shown = [(r["state"], r["data_sha"]) if r else None for r in (x, y)]
            if shown[0] != shown[1]:
                partitions.append(
                    {
                        "dataset": ref[0],
                        "partition_key": ref[1],
                        a: {"state": shown[0][0], "data_sha": shown[0][1]} if shown[0] else None,
                        b: {"state": shown[1][0], "data_sha": shown[1][1]} if shown[1] else None,
                    }
                )
        return {"a": a, "b": b, "datasets": datasets, "partitions": partitions}

    async def status(self, env: str | None = None) -> dict[str, Any]:
        """Every partition (`partitions`: dataset, partition_key, state, data_sha, object_key,
        rows, bytes, reason, fingerprint, error; retracted ones aside), and `tasks_requested`
        and `outbox_pending`. Read a page at a time (no reply grows with what is held), so
        it is not one snapshot while work goes on. For a pipeline of any size prefer
        `summary` and `partitions`."""
        summary = await self.summary(errored=0, env=env)
        rows: list[dict[str, Any]] = []
        for d in summary["datasets"]:
            live = d["total"] - d["counts"]["retracted"]
            if live:
                async for row, _ in self._pages(d["dataset"], None, None, None, None, env):
                    rows.append({k: row[k] for k in STATUS_COLUMNS})
        return {
            "partitions": rows,
            "tasks_requested": summary["tasks_requested"],
            "outbox_pending": summary["outbox_pending"],
        }

    async def summary(self, errored: int = 20, env: str | None = None) -> dict[str, Any]:
        """Per dataset, how many partitions are in each state (`datasets`: dataset, kind,
        counts, total), the first `errored` errored partitions with their errors (`errored`,
        and `errored_total`), the tasks requested, the events not yet published, and from
        the work queue `running` (tasks executors hold now: running, or between attempts)
        and `work_queue` (tasks no executor has taken yet); those two are None when the work
        queue cannot be read. The reply does not grow with the partitions held."""
        with rpc.checked():
            request = SummaryRequest(errored=errored, env=_env(env))
        result = document(await self.ask(SUMMARY, request))
        work = await self._work_queue()
        result["running"] = work[0] if work else None
        result["work_queue"] = work[1] if work else None
        return result

    async def partitions(
        self,
        dataset: str,
        *,
        states: list[str] | None = None,
        since: datetime | None = None,
        after: str | None = None,
        limit: int = 50,
        env: str | None = None,
    ) -> dict[str, Any]:
        """`dataset`'s partitions in key order: at most `limit`, after the key `after`, in
        `states` (default: all but retracted), changed at or after `since`. Each row as in
        `status` plus `desired_fingerprint`, `updated_at`, and `running` (a queued
        partition's task is held by an executor, by its lease; False otherwise) with
        `executor` (which one). `more`: how many match after these; `next`: the key to
        continue after."""
        rows: list[dict[str, Any]] = []
        more, last = 0, after
        async for row, left in self._pages(dataset, states, since, after, limit, env):
            rows.append(row)
            more, last = left, row["partition_key"]
        if not rows:  # nothing on the first page: how many match at all is 0
            more = 0
        await self._mark_running(rows)
        return {
            "dataset": dataset,
            "partitions": rows,
            "more": more,
            "next": last if rows and more else None,
        }

    async def _pages(
        self,
        dataset: str,
        states: list[str] | None,
        since: datetime | None,
        after: str | None,
        limit: int | None,
        env: str | None = None,
    ) -> AsyncIterator[tuple[dict[str, Any], int]]:
        """Rows of `dataset`, one page request at a time (limit None: every one), each with
        how many match after it: right for the last row (limit None: 0), as only the last
        page is counted (a count is a pass over the dataset)."""
        left = limit
        while left is None or left > 0:
            size = LISTING_PAGE if left is None else min(left, LISTING_PAGE)
            count = left is not None and left <= LISTING_PAGE
            with rpc.checked():
                request = PartitionsRequest.model_validate(
                    {"dataset": dataset, "states": states, "since": since}
                    | {"after": after, "limit": size, "count": count, "env": _env(env)}
                )
            page = await self.ask(PARTITIONS, request)
            rows = document(page)["partitions"]
            for i, row in enumerate(rows):
                rest = len(rows) - i - 1 + page.more
                yield row, rest if count else 0
            if not page.more or not page.partitions:
                return
            after = page.partitions[-1].partition_key
            if left is not None:
                left -= len(page.partitions)

    async def _mark_running(self, rows: list[dict[str, Any]]) -> None:
        """Mark each queued row whose task an executor holds (one lease read per queued row
        shown: bounded by the page)."""
        for row in rows:
            row["running"], row["executor"] = False, None
        queued = [r for r in rows if r["state"] == "queued" and r["desired_fingerprint"]]
        if not queued:
            return
        try:
            kv = await self.nc.jetstream().key_value(self.subjects.leases_bucket)
        except NotFoundError:  # no bucket yet: no executor ever started
            return
        holders = await asyncio.gather(*(_holder(kv, r["desired_fingerprint"]) for r in queued))
        for row, holder in zip(queued, holders, strict=True):
            row["running"], row["executor"] = holder is not None, holder

    async def _work_queue(self) -> tuple[int, int] | None:
        """(tasks executors hold, tasks not yet taken) from the executors' consumer."""
        spec = topology.consumers(self.subjects)["executor"]
        try:
            info = await self.nc.jetstream().consumer_info(spec.stream, spec.durable)
        except NotFoundError:  # no executor ever started
            return None
        return int(info.num_ack_pending or 0), int(info.num_pending or 0)

    async def why(self, dataset: str, partition_key: str, env: str | None = None) -> dict[str, Any]:
        with rpc.checked():
            request = PartitionRequest(dataset=dataset, partition_key=partition_key, env=_env(env))
        return document(await self.ask(WHY, request))

    async def retry(self, dataset: str, partition_key: str | None = None) -> dict[str, Any]:
        """Run errored partitions again (all of the dataset's, or one)."""
        request = RetryRequest(dataset=dataset, partition_key=partition_key)
        return document(await self.ask(RETRY, request))

    async def lineage(
        self,
        dataset: str,
        partition_key: str,
        depth: int = 20,
        *,
        history: bool = False,
        env: str | None = None,
    ) -> dict[str, Any]:
        """The partitions `dataset/partition_key` is made from (`upstream`) and those made from it
        (`downstream`), as edges input -> output naming the fingerprint that made them. Each
        edge is `current` when its output's current materialization is that fingerprint (the
        scheduler's fact). By default only the current graph is walked; `history` gives every
        edge ever recorded (earlier materializations, partitions since retracted), each
        marked. `not_shown` counts, per direction, the edges left out."""
        with rpc.checked():
            request = LineageRequest(dataset=dataset, partition_key=partition_key, depth=depth)
        found = await self.ask(LINEAGE, request)
        every = [*found.upstream, *found.downstream]
        outputs = sorted({(e.output_dataset, e.output_key) for e in every})
        current: dict[tuple[str, str], str | None] = {}
        for i in range(0, len(outputs), _CURRENT_BATCH):
            with rpc.checked():
                asked = CurrentRequest(partitions=outputs[i : i + _CURRENT_BATCH], env=_env(env))
            for c in (await self.ask(CURRENT, asked)).root:
                current[(c.dataset, c.partition_key)] = c.fingerprint
        result = document(found)
        edges = [*result["upstream"], *result["downstream"]]
        for e in edges:
            e["current"] = current.get((e["output_dataset"], e["output_key"])) == e["fingerprint"]
        result["not_shown"] = {"upstream": 0, "downstream": 0}
        if not history:
            for direction in ("upstream", "downstream"):
                every = result[direction]
                walked = current_walk(every, dataset, partition_key, direction, depth)
                result[direction] = walked
                result["not_shown"][direction] = len({_edge_id(e) for e in every}) - len(walked)
        return result

    async def history(self, dataset: str, partition_key: str) -> dict[str, Any]:
        """Every materialization of `dataset/partition_key`, and what happened to it, oldest
        first (`entries`): each computation or landing (`materialized`: fingerprint, code and
        data SHAs, rows, why it ran and from which input versions, whether it is current),
        each failure for good (`failed`), retraction (`retracted`) and code change of the
        dataset (`code_changed`). Materializations are the scheduler's (`why`), the rest the
        lineage-indexer's events. `state`: the partition's state now."""
        why = await self.why(dataset, partition_key)
        request = HistoryRequest(dataset=dataset, partition_key=partition_key, code_changes=True)
        events = [document(e) for e in (await self.ask(HISTORY, request)).root]
        return history_entries(dataset, partition_key, why, events)

    async def impact(
        self, dataset: str, partition_key: str | None = None, shown: int = 20
    ) -> dict[str, Any]:
        """What would run if `dataset/partition_key` changed (or, without `partition_key`, every
        partition of `dataset`, as a code change does): per dataset in pipeline order, how
        many partitions would be recomputed (`count`) and the first `shown` (`partitions`);
        `total`. Past the dataset itself an upper bound: early cutoff may stop it."""
        with rpc.checked():
            request = AffectedRequest(dataset=dataset, partition_key=partition_key, shown=shown)
        return document(await self.ask(AFFECTED, request))

    async def columns(self, dataset: str) -> dict[str, Any]:
        """`dataset`'s column lineage, as spec-registry computed it from the applied spec:
        `columns` (per output column: `name`, `sources` [{dataset, column}], `expression`,
        `unresolved`), or None with `unknown` saying why (a Python dataset, SELECT * over
        unknown columns)."""
        return document(await self.ask(COLUMNS, ColumnsRequest(dataset=dataset)))

    async def graph(self, dataset: str, depth: int = 20) -> dict[str, Any]:
        """The dataset-level lineage of `dataset` from the applied definitions: the datasets
        it reads (`upstream`) and that read it (`downstream`), transitively to `depth` steps,
        as edges input -> output with the mapping and each side's kind and code SHA."""
        defs = document(await self.ask(DATASETS, DatasetsRequest()))
        if dataset not in defs:
            known = ", ".join(sorted(defs)) or "-"
            raise InputError("dataset", f"no dataset {dataset!r} (known: {known})")
        return dataset_graph(defs, dataset, depth)

    async def activity(self) -> "Activity":
        """What is still to do, from counters only (no partition is read): each consumer's
        messages not yet handled, the tasks requested per dataset, the outbox, and the work
        queue's tasks held by executors and finished."""
        js = self.nc.jetstream()
        consumers: dict[str, int] = {}
        running = 0
        for name, spec in topology.consumers(self.subjects).items():
            try:
                info = await js.consumer_info(spec.stream, spec.durable)
            except NotFoundError:
                continue
            consumers[name] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            if name == "executor":
                running = int(info.num_ack_pending or 0)
        try:
            tasks = await js.stream_info(self.subjects.tasks_stream)
            # A work queue deletes a task once acked: published minus still held is finished.
            finished = int(tasks.state.last_seq) - int(tasks.state.messages)
        except NotFoundError:
            finished = 0
        pending = await self.ask(PENDING, PendingRequest())
        return Activity(
            consumers=consumers,
            tasks_requested=pending.tasks_requested,
            outbox_pending=pending.outbox_pending,
            settling=pending.settling,
            running=running,
            tasks_finished=finished,
        )

    async def busy(self) -> dict[str, int]:
        """What is still to do: messages not yet handled by each consumer, open tasks."""
        return (await self.activity()).counts()

    async def ready(self, timeout: float = 60) -> None:
        """Return once every service answers or pulls from its consumer."""
        js = self.nc.jetstream()
        deadline = time.monotonic() + timeout
        missing: list[str] = []
        while time.monotonic() < deadline:
            missing = []
            asks: tuple[tuple[Rpc[Any, Any], BaseModel], ...] = (
                (DATASETS, DatasetsRequest()),
                (PENDING, PendingRequest()),
                (HISTORY, HistoryRequest(dataset="-")),
            )
            for query, request in asks:
                try:
                    await self.ask(query, request, timeout=1)
                except TransientError:
                    missing.append(query.service)
            for name in ("change-detector-upstream", "executor"):
                spec = topology.consumers(self.subjects)[name]
                try:
                    info = await js.consumer_info(spec.stream, spec.durable)
                except NotFoundError:
                    missing.append(name)
                    continue
                if not info.num_waiting:
                    missing.append(name)
            if not missing:
                return
            await asyncio.sleep(0.25)
        raise TransientError(f"not ready after {timeout}s: {', '.join(missing)}")

    async def wait_idle(
        self,
        timeout: float = 600,
        poll: float = 0.2,
        on_progress: Callable[["Activity | None"], None] | None = None,
    ) -> "Activity":
        """Return when nothing is pending or running (seen twice in a row), else raise
        StillBusy. Each look reads counters only (`activity`), never the partitions;
        `on_progress` is told what is still to do after every look (None: a service did
        not answer)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        seen: Activity | None = None
        while time.monotonic() < deadline:
            try:
                seen = await self.activity()
            except TransientError:  # a service is restarting: not idle, look again
                seen = None
            if on_progress is not None:
                on_progress(seen)
            quiet = quiet + 1 if seen is not None and seen.idle else 0
            if quiet >= 2 and seen is not None:
                return seen
            await asyncio.sleep(poll)
        busy = seen.counts() if seen is not None else {"unavailable": 1}
        raise StillBusy(f"still busy after {timeout}s: {busy}")

    async def wait(
        self,
        timeout: float = 600,
        poll: float = 0.2,
        on_progress: Callable[["Activity | None"], None] | None = None,
        env: str | None = None,
    ) -> dict[str, Any]:
        """`wait_idle`, then `status` once (every partition: for tests and small pipelines;
        `wait_idle` then `summary` reads no partition); of environment `env`, or prod."""
        await self.wait_idle(timeout, poll, on_progress)
        return await self.status(env)

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters, oldest first, with their payloads decoded when text."""
        letters = []
        for seq, letter, payload in await self._letters(self.subjects.dlq_all, limit):
            try:
                letter["payload"] = payload.decode()
            except UnicodeDecodeError:
                letter["payload"] = repr(payload)
            letter["seq"] = seq
            letters.append(letter)
        return letters

    async def replay_dead_letters(
        self, *, service: str | None = None, seqs: list[int] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Publish dead letters again on the subjects they came from (after a fix), each under
        a message id of its own; a replayed letter leaves the dead-letter stream. `seqs` picks
        letters by sequence, `service` those one service rejected, neither every letter.
        A truncated letter (its input was over the size limit) cannot be replayed."""
        js = self.nc.jetstream()
        stream = self.subjects.dlq_stream
        if seqs:
            picked = []
            for seq in seqs:
                try:
                    raw = await js.get_msg(stream, seq)
                except NotFoundError:
                    raise InputError("id", f"no dead letter with sequence {seq}") from None
                letter = json.loads(raw.data or b"{}")
                picked.append((seq, letter, base64.b64decode(letter.pop("payload_b64"))))
        else:
            subject = self.subjects.dlq(service) if service else self.subjects.dlq_all
            picked = await self._letters(subject, None)
        replayed: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for seq, letter, payload in picked:
            if service is not None and letter.get("service") != service:
                continue
            summary = {"seq": seq, "service": letter["service"], "subject": letter["subject"]}
            if letter.get("truncated"):
                skipped.append({**summary, "why": "truncated: the input was over the size limit"})
                continue
            headers = {
                k: v for k, v in (letter.get("headers") or {}).items() if not k.startswith("Nats-")
            }
            headers["Nats-Msg-Id"] = f"replay:{stream}:{seq}"
            await js.publish(letter["subject"], payload, headers=headers)
            await js.delete_msg(stream, seq)
            replayed.append(summary)
        return {"replayed": replayed, "skipped": skipped}

    async def _letters(
        self, subject: str, limit: int | None
    ) -> list[tuple[int, dict[str, Any], bytes]]:
        """(sequence, letter, payload) of the newest `limit` letters on `subject` (all when
        None), oldest first."""
        js = self.nc.jetstream()
        try:
            info = await js.stream_info(self.subjects.dlq_stream)
        except NotFoundError:
            return []
        last = info.state.last_seq
        if not info.state.messages:
            return []
        start = info.state.first_seq
        if limit is not None:
            start = max(start, last - limit + 1)
        sub = await js.subscribe(
            subject,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
        )
        letters: list[tuple[int, dict[str, Any], bytes]] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except nats.errors.TimeoutError:
                    break  # nothing more on this subject
                letter = json.loads(msg.data)
                payload = base64.b64decode(letter.pop("payload_b64"))
                seq = msg.metadata.sequence.stream
                letters.append((seq, letter, payload))
                if seq >= last or msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return letters


_CURRENT_BATCH = MAX_CURRENT  # partitions per `current` query to the scheduler (its most)
LISTING_PAGE = LISTING_MAX  # rows per `partitions` query to the scheduler (its most)
# The columns of a partition in `status` (a listing row has more).
STATUS_COLUMNS = (
    *("dataset", "partition_key", "state", "data_sha", "object_key", "rows", "bytes"),
    *("reason", "fingerprint", "error"),
)


def document(reply: BaseModel) -> dict[str, Any]:
    """A reply (an object) as the JSON document the CLI prints (`--json`): its fields by
    their wire names, timestamps as the service wrote them."""
    found: dict[str, Any] = json.loads(json.dumps(reply.model_dump(), default=str))
    return found


class StillBusy(TransientError):
    """`wait` ran out of time with work still to do."""


@dataclass(frozen=True)
class Activity:
    """What is still to do, from counters: per durable consumer its messages not yet
    handled; per dataset its tasks requested; events not yet published; computations held
    by `settle:` (each runs once its inputs stop changing); tasks executors hold now (`running`: running, or between attempts) and have finished, ever (`tasks_finished`,
    from the work queue: compare two looks for the work done between them)."""

    consumers: dict[str, int]
    tasks_requested: dict[str, int]
    outbox_pending: int
    settling: int
    running: int
    tasks_finished: int

    def counts(self) -> dict[str, int]:
        """Every count that must be 0 when idle, by name."""
        return {
            **self.consumers,
            "tasks_requested": sum(self.tasks_requested.values()),
            "outbox_pending": self.outbox_pending,
            "settling": self.settling,
        }

    @property
    def idle(self) -> bool:
        return not any(self.counts().values())


def _env(env: str | None) -> str:
    """The environment a request names: prod unless another is given."""
    return PROD_ENV if env is None else env


async def _holder(kv: KeyValue, fingerprint: str) -> str | None:
    """The executor whose delivery holds the lease of `fingerprint` and has not yet passed
    its fence (the lease goes OWNER:DELIVERY -> OWNER:committed -> published:...)."""
    try:
        entry = await kv.get(fingerprint)
    except (KeyNotFoundError, KeyDeletedError):
        return None
    owner, _, delivery = (entry.value or b"").decode(errors="replace").rpartition(":")
    return owner if owner and delivery.isdigit() else None


def _edge_id(edge: dict[str, Any]) -> tuple[str, str, str]:
    return (edge["fingerprint"], edge["input_dataset"], edge["input_key"])


def current_walk(
    edges: list[dict[str, Any]], dataset: str, partition_key: str, direction: str, depth: int
) -> list[dict[str, Any]]:
    """The edges reached from dataset/partition_key through `current` edges only, each once, at
    the step it is first reached (1: adjacent), to `depth` steps. `direction` is "upstream"
    (towards inputs) or "downstream"."""
    near, far = ("output", "input") if direction == "upstream" else ("input", "output")
    by_near: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in edges:
        if e["current"]:
            by_near.setdefault((e[f"{near}_dataset"], e[f"{near}_key"]), []).append(e)
    out: list[dict[str, Any]] = []
    seen_edges: set[tuple[str, str, str]] = set()
    seen = {(dataset, partition_key)}
    frontier = [(dataset, partition_key)]
    for step in range(1, depth + 1):
        reached: list[tuple[str, str]] = []
        for node in frontier:
            for e in by_near.get(node, []):
                if _edge_id(e) in seen_edges:
                    continue
                seen_edges.add(_edge_id(e))
                out.append({**e, "depth": step})
                target = (e[f"{far}_dataset"], e[f"{far}_key"])
                if target not in seen:
                    seen.add(target)
                    reached.append(target)
        frontier = reached
    out.sort(key=lambda e: (e["depth"], e[f"{far}_dataset"], e[f"{far}_key"]))
    return out
