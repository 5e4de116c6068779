"""change-detector: re-reads and re-hashes a source partition on every upstream event, and
announces `partition landed` only when its data SHA is new."""

import logging
import time
from dataclasses import dataclass, field

from headwater.contracts import (
    InputError,
    PartitionLanded,
    PartitionRetracted,
    S3EventRecords,
    Subjects,
    UpstreamEvent,
    format_of,
    split_object_key,
)
from headwater.contracts.rpc import DATASETS, DatasetRecord, DatasetsRequest
from headwater.core import dimensions, formats, hashing
from headwater.runtime import rpc
from headwater.runtime.outbox import OutboxItem
from headwater.runtime.service import Resources
from headwater.runtime.telemetry import (
    BYTES,
    DATA_SHA,
    DATASET,
    DB_SYSTEM,
    OUTCOME,
    PARTITION,
    ROWS,
    annotate,
    current_trace_id,
    span,
)
from headwater.services.change_detector import store

_log = logging.getLogger(__name__)


@dataclass
class ChangeDetector:
    res: Resources
    subjects: Subjects
    datasets_cache_s: float
    _sources: tuple[float, dict[str, DatasetRecord]] = field(default=(0.0, {}))

    async def on_upstream(self, event: UpstreamEvent) -> None:
        if format_of(event.key) != event.format:
            raise InputError(
                "format", f"{event.format!r} does not match the file {event.key!r} names"
            )
        # The event says where to look; the prefix's files are the truth (a missing key was
        # deleted: the partition is re-hashed without it, or retracted if nothing is left).
        await self.refresh(event.dataset, event.partition, require=event.key, blame=event.key)

    async def on_s3(self, records: S3EventRecords) -> None:
        for i, record in enumerate(records.Records):
            key = record.s3.object.key
            try:
                dataset, partition, _ = split_object_key(_unquote(key))
            except InputError as exc:
                raise InputError(f"Records.{i}.s3.object.key", exc.reason) from exc
            # Any bucket that notifies on the subject would otherwise make us read `landing`.
            bucket = record.s3.bucket.name if record.s3.bucket is not None else None
            landing = self.res.settings.landing_bucket
            if bucket != landing:
                reason = f"{bucket!r} is not the landing bucket {landing!r}"
                if bucket is None:
                    reason = "is required"
                raise InputError(f"Records.{i}.s3.bucket.name", reason)
        for record in records.Records:
            key = _unquote(record.s3.object.key)
            dataset, partition, _ = split_object_key(key)
            await self.refresh(dataset, partition, require=None, blame=key)

    async def refresh(
        self, dataset: str, partition_key: str, *, require: str | None, blame: str | None = None
    ) -> None:
        """Re-read DATASET/PARTITION/ and publish its data SHA if it is new. When its files
        disagree on their columns, the file `blame` (the one announced) is the one at fault."""
        with span(
            "change-detector refresh", {DATASET: dataset, PARTITION: partition_key}
        ) as current:
            outcome = await self._refresh(dataset, partition_key, require, blame)
            current.set_attribute(OUTCOME, outcome)

    async def _refresh(
        self, dataset: str, partition_key: str, require: str | None, blame: str | None
    ) -> str:
        """`refresh`; returns its outcome: landed, unchanged, restored (unchanged, its object
        written again), retracted, or nothing (retracted before, or never landed)."""
        await self._check_source(dataset)
        declared_dims = self._sources[1][dataset].definition.dimensions
        if declared_dims:  # a key of its dimensions, each value one of its dimension's
            dimensions.check_key(list(declared_dims), partition_key)
        settings = self.res.settings
        objects = self.res.objects
        prefix = f"{dataset}/{partition_key}/"
        with span("change-detector list", {"headwater.prefix": prefix}) as listed:
            keys = await objects.list(settings.landing_bucket, prefix)
            listed.set_attribute("headwater.files", len(keys))
        if not keys:
            return await self._retract(dataset, partition_key, require)
        known = self._sources[1].get(dataset)
        declared = known.definition.columns if known is not None else None
        schema = formats.schema_of(declared) if declared else None
        files = []
        # The announced file first: if it is the one at fault, the dead letter names it.
        # A file not in its format (FormatError: field `file`) or breaking the declared columns
        # (SchemaMismatch: `file.columns.NAME`) is bad input, dead-lettered naming the file; the
        # partition keeps its last good content.
        with span("change-detector read", {"headwater.files": len(keys)}) as read:
            size = 0
            for key in sorted(keys, key=lambda k: k != blame):
                try:
                    fmt = format_of(key)
                except InputError as exc:
                    raise InputError("key", exc.reason) from exc
                data = await objects.get(settings.landing_bucket, key)
                size += len(data)
                files.append((key, formats.read_table(data, fmt, key, schema)))
            read.set_attribute(BYTES, size)
            if schema is None:
                formats.check_alike(files, blame=blame)
        with span("change-detector hash") as hashed:
            table = formats.combine([t for _, t in files])
            ordered = known is not None and known.definition.ordered
            data_sha = hashing.data_sha(table, ordered=ordered)
            hashed.set_attributes({ROWS: table.num_rows, DATA_SHA: data_sha})
        annotate(data_sha=data_sha, fingerprint=data_sha, rows=table.num_rows)
        object_key = f"{data_sha}.parquet"
        async with self.res.pool.acquire() as conn:
            # A SHA stored under another data SHA version never counts as the same content.
            last = await store.last_data_sha(conn, dataset, partition_key, hashing.DATA_SHA_VERSION)
            unchanged = last == data_sha
        if unchanged:
            _log.info("%s%s unchanged (%s)", prefix, "", data_sha[:12])
            # Landing it again restores its object if that went missing (readers found it
            # so and were errored; `headwater retry` then resumes them).
            if not await objects.exists(settings.data_bucket, object_key):
                await objects.put(settings.data_bucket, object_key, formats.to_parquet(table))
                _log.warning("%s object %s was missing: restored", prefix, object_key)
                return "restored"
            return "unchanged"
        body = formats.to_parquet(table)
        annotate(bytes=len(body))
        with span("change-detector write", {BYTES: len(body)}) as written:
            exists = await objects.exists(settings.data_bucket, object_key)
            if not exists:
                await objects.put(settings.data_bucket, object_key, body)
            written.set_attribute("headwater.stored_before", exists)
        assert self.res.outbox is not None
        with span("change-detector record", {DB_SYSTEM: "postgresql"}):
            async with self.res.pool.acquire() as conn, conn.transaction():
                await store.lock_partition(conn, dataset, partition_key)
                last = await store.last_data_sha(
                    conn, dataset, partition_key, hashing.DATA_SHA_VERSION
                )
                if last == data_sha:
                    return "unchanged"
                version = await store.record(
                    conn,
                    dataset,
                    partition_key,
                    data_sha,
                    hashing.DATA_SHA_VERSION,
                    object_key,
                    keys,
                    table.num_rows,
                    len(body),
                )
                event = PartitionLanded(
                    event_id=f"landed:{dataset}:{partition_key}:v{version}",
                    dataset=dataset,
                    partition_key=partition_key,
                    data_sha=data_sha,
                    data_sha_version=hashing.DATA_SHA_VERSION,
                    fingerprint=hashing.source_fingerprint(data_sha),
                    object_key=object_key,
                    rows=table.num_rows,
                    bytes=len(body),
                    source_files=tuple(keys),
                    source_version=version,
                    trace_id=current_trace_id(),
                )
                # Published in this span's trace: the scheduler's work continues it.
                item = OutboxItem.of(self.subjects, event, event.event_id)
                await self.res.outbox.add(conn, item)
        await self.res.flush()
        _log.info("%s landed: %s (%d rows)", prefix, data_sha[:12], table.num_rows)
        return "landed"

    async def _retract(self, dataset: str, partition_key: str, require: str | None) -> str:
        assert self.res.outbox is not None
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock_partition(conn, dataset, partition_key)
            version = await store.retract(conn, dataset, partition_key)
            if version is None:  # nothing to retract: already retracted, or never landed
                if require is not None and not await store.known(conn, dataset, partition_key):
                    raise InputError("key", f"{require!r} is not in the landing bucket")
                return "nothing"
            event = PartitionRetracted(
                event_id=f"retracted:{dataset}:{partition_key}:v{version}",
                dataset=dataset,
                partition_key=partition_key,
                source_version=version,
            )
            await self.res.outbox.add(conn, OutboxItem.of(self.subjects, event, event.event_id))
        await self.res.flush()
        _log.info("%s/%s/ retracted (its files were deleted)", dataset, partition_key)
        return "retracted"

    async def _check_source(self, dataset: str) -> None:
        fetched_at, sources = self._sources
        if dataset not in sources or time.monotonic() - fetched_at > self.datasets_cache_s:
            reply = await rpc.call(self.res.broker, self.subjects, DATASETS, DatasetsRequest())
            sources = reply.root
            self._sources = (time.monotonic(), sources)
        known = sources.get(dataset)
        if known is None:
            raise InputError("dataset", f"{dataset!r} is not a dataset of any applied pipeline")
        if known.kind != "source":
            raise InputError("dataset", f"{dataset!r} is derived, not a source; it cannot land")


def _unquote(key: str) -> str:
    # S3 notifications URL-encode object keys.
    from urllib.parse import unquote_plus

    return unquote_plus(key)
