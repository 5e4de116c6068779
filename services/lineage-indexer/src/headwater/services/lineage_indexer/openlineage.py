"""OpenLineage export: each run Headwater records becomes a pair of OpenLineage run events.

A run is a source partition landing (the change-detector's work), a materialization (a
derived partition computed: START and COMPLETE) or a task that failed for good (START and
FAIL). The job is the dataset (its transform, or its landing for a source) with its code SHA
in the `headwater` job facet; each input and output is a partition, versioned by its data SHA
(the standard `version` facet). A run caused by another carries the standard `parent` facet
naming it, and the root of the chain (the landing). Run ids are UUIDs derived from the event
that reported the run, so a redelivered event is emitted again identically.

The `openlineage-python` client sends the events to whatever its standard configuration
names (`OPENLINEAGE_URL`, `OPENLINEAGE_CONFIG`, `OPENLINEAGE__TRANSPORT__*`, an
`openlineage.yml`): it reads the environment itself. Nothing configured, nothing is emitted.

Emitting never holds up indexing: `Emitter.submit` queues the events (bounded) and returns; a
background task sends them one at a time in a thread. An event that cannot be sent (the
transport is down, the queue is full) is logged, counted and dropped: lineage indexing has
already committed, and OpenLineage is a copy of what the indexer keeps.
"""

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    RunFacet,
    column_lineage_dataset,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
)
from openlineage.client.transport.console import ConsoleTransport
from openlineage.client.transport.noop import NoopTransport

from headwater.contracts import InputRef, PartitionLanded, TaskFailed
from headwater.contracts.rpc import DatasetColumns

_log = logging.getLogger(__name__)

try:
    _VERSION = version("headwater-lineage-indexer")
except PackageNotFoundError:  # pragma: no cover - always installed with the service
    _VERSION = "0"
PRODUCER = f"urn:headwater:lineage-indexer:{_VERSION}"
# The JSON Schema of Headwater's own facets (docs/openlineage/HeadwaterFacets.json).
FACETS_SCHEMA = "urn:headwater:openlineage:facets:1"
# Run ids are UUIDv5 of the reporting event's id in the Headwater namespace, under this one.
_RUN_IDS = uuid.UUID("5f0c2b8e-3a51-4f4e-9d0c-6b1e8a7c2d10")


def run_id(namespace: str, event_id: str) -> uuid.UUID:
    """The OpenLineage run id of the run that `event_id` reported: the same for every
    delivery of that event."""
    return uuid.uuid5(_RUN_IDS, f"{namespace}\x00{event_id}")


@attr.define
class HeadwaterJobFacet(JobFacet):
    """The code that ran: Headwater's code SHA of the dataset's transform (or, for a source,
    of its declaration)."""

    codeSha: str | None

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/HeadwaterJobFacet"


@attr.define
class HeadwaterRunFacet(RunFacet):
    """Which computation this run was (its fingerprint), of which partition, reported by which
    event, at which attempt."""

    fingerprint: str
    partitionKey: str
    eventId: str
    attempt: int | None = None
    repaired: bool = False

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA}#/$defs/HeadwaterRunFacet"


@dataclass(frozen=True)
class RunRecord:
    """A run as the indexer stored it (`store.run`): enough to emit its events again, alike."""

    run_id: uuid.UUID
    received_at: datetime
    parent_run_id: uuid.UUID | None
    parent_dataset: str | None
    root_run_id: uuid.UUID | None
    root_dataset: str | None


@dataclass(frozen=True)
class Naming:
    """Where jobs and datasets live in OpenLineage's names."""

    namespace: str

    def dataset(self, name: str, key: str) -> str:
        """A partition is an OpenLineage dataset (`DATASET/KEY`): its versions are data SHAs."""
        return f"{name}/{key}"


def _time(at: datetime) -> str:
    return at.isoformat()


def _job(naming: Naming, dataset: str, code_sha: str | None, job_type: str) -> Job:
    facets: dict[str, JobFacet] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="HEADWATER", jobType=job_type, producer=PRODUCER
        )
    }
    if code_sha is not None:  # a landing's event does not carry its source's code SHA
        facets["headwater"] = HeadwaterJobFacet(codeSha=code_sha, producer=PRODUCER)
    return Job(namespace=naming.namespace, name=dataset, facets=facets)


def _run(run: RunRecord, naming: Naming, extra: dict[str, RunFacet]) -> Run:
    facets: dict[str, RunFacet] = dict(extra)
    if run.parent_run_id is not None and run.parent_dataset is not None:
        root = None
        if run.root_run_id is not None and run.root_dataset is not None:
            root = parent_run.Root(
                run=parent_run.RootRun(runId=str(run.root_run_id)),
                job=parent_run.RootJob(namespace=naming.namespace, name=run.root_dataset),
            )
        facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=str(run.parent_run_id)),
            job=parent_run.Job(namespace=naming.namespace, name=run.parent_dataset),
            root=root,
            producer=PRODUCER,
        )
    return Run(runId=str(run.run_id), facets=facets)


def _input(naming: Naming, ref: InputRef) -> InputDataset:
    return InputDataset(
        namespace=naming.namespace,
        name=naming.dataset(ref.dataset, ref.partition_key),
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=ref.data_sha, producer=PRODUCER
            )
        },
    )


def column_lineage(
    event: PartitionLanded, columns: DatasetColumns, naming: Naming
) -> column_lineage_dataset.ColumnLineageDatasetFacet | None:
    """The standard column-lineage facet of a computed partition: each output column with the
    input columns it comes from, in the input partitions it read (None: columns unknown)."""
    if columns.columns is None:
        return None
    fields = {}
    for column in columns.columns:
        read = [
            column_lineage_dataset.InputField(
                namespace=naming.namespace,
                name=naming.dataset(ref.dataset, ref.partition_key),
                field=source.column,
            )
            for source in column.sources
            for ref in event.inputs
            if ref.dataset == source.dataset
        ]
        fields[column.name] = column_lineage_dataset.Fields(
            inputFields=read, transformationDescription=column.expression or None
        )
    return column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields, producer=PRODUCER)


def landed_events(
    event: PartitionLanded, run: RunRecord, naming: Naming, columns: DatasetColumns | None = None
) -> list[RunEvent]:
    """START and COMPLETE of the run that produced `event`'s partition. A computation starts
    `duration_ms` before the indexer recorded its result; a landing is one instant. `columns`
    (the dataset's column lineage, from spec-registry) adds the column-lineage facet."""
    source = not event.inputs and event.fingerprint == event.data_sha
    job = _job(naming, event.dataset, event.code_sha, "LANDING" if source else "TRANSFORM")
    facets: dict[str, RunFacet] = {
        "headwater": HeadwaterRunFacet(
            fingerprint=event.fingerprint,
            partitionKey=event.partition_key,
            eventId=event.event_id,
            attempt=None if source else event.attempt,
            repaired=event.repaired,
            producer=PRODUCER,
        )
    }
    output_facets: dict[str, DatasetFacet] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=event.data_sha, producer=PRODUCER
        )
    }
    lineage = column_lineage(event, columns, naming) if columns is not None else None
    if lineage is not None:
        output_facets["columnLineage"] = lineage
    output = OutputDataset(
        namespace=naming.namespace,
        name=naming.dataset(event.dataset, event.partition_key),
        facets=output_facets,
        outputFacets={
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=event.rows, size=event.bytes, producer=PRODUCER
            )
        },
    )
    inputs = [_input(naming, ref) for ref in event.inputs]
    ended = run.received_at
    started = ended - timedelta(milliseconds=event.duration_ms)
    return [
        RunEvent(
            eventType=state,
            eventTime=_time(at),
            run=_run(run, naming, facets),
            job=job,
            inputs=inputs,
            outputs=[output],
            producer=PRODUCER,
        )
        for state, at in ((RunState.START, started), (RunState.COMPLETE, ended))
    ]


def failed_events(event: TaskFailed, run: RunRecord, naming: Naming) -> list[RunEvent]:
    """START and FAIL of a task that failed for good, with its error."""
    facets: dict[str, RunFacet] = {
        "headwater": HeadwaterRunFacet(
            fingerprint=event.fingerprint,
            partitionKey=event.partition_key,
            eventId=event.event_id,
            attempt=event.attempt,
            producer=PRODUCER,
        ),
        "errorMessage": error_message_run.ErrorMessageRunFacet(
            message=event.error,
            programmingLanguage="PYTHON",
            stackTrace=event.traceback or None,
            producer=PRODUCER,
        ),
    }
    job = _job(naming, event.dataset, event.code_sha, "TRANSFORM")
    inputs = [_input(naming, ref) for ref in event.inputs]
    return [
        RunEvent(
            eventType=state,
            eventTime=_time(run.received_at),
            run=_run(run, naming, facets),
            job=job,
            inputs=inputs,
            outputs=[
                OutputDataset(
                    namespace=naming.namespace,
                    name=naming.dataset(event.dataset, event.partition_key),
                )
            ],
            producer=PRODUCER,
        )
        for state in (RunState.START, RunState.FAIL)
    ]


def configured_client() -> OpenLineageClient | None:
    """The client as the standard OpenLineage configuration describes it, or None when
    nothing configures a transport (the client would then print events to the console; we
    emit nothing) or `OPENLINEAGE_DISABLED=true`."""
    # The client warns that it falls back to the console when nothing is configured: that is
    # our "off", said once below instead.
    client_log = logging.getLogger("openlineage.client.client")
    level = client_log.level
    client_log.setLevel(logging.ERROR)
    try:
        client = OpenLineageClient()
    finally:
        client_log.setLevel(level)
    if isinstance(client.transport, NoopTransport) or (
        isinstance(client.transport, ConsoleTransport)
        and not (client.config.transport or {}).get("type")
    ):
        _log.info("OpenLineage: off (no transport configured)")
        return None
    _log.info("OpenLineage: emitting through the %s transport", client.transport.kind)
    return client


class Emitter:
    """Sends OpenLineage events in the background, never holding up the caller."""

    def __init__(self, client: OpenLineageClient, *, queue_size: int, stop_timeout_s: float):
        self.client = client
        self.stop_timeout_s = stop_timeout_s
        self.queue: asyncio.Queue[RunEvent] = asyncio.Queue(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def submit(self, events: list[RunEvent]) -> None:
        """Queue `events` for sending; when the queue is full (the transport is slower than
        the events, or down), drop them with a log line."""
        for event in events:
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    _log.warning(
                        "OpenLineage: the queue of %d events is full, dropped %d so far",
                        self.queue.maxsize,
                        self.dropped,
                    )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._send_all(), name="openlineage-emitter")

    async def stop(self) -> None:
        """Send what is queued, for at most `stop_timeout_s`, then give up on the rest."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), self.stop_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self.queue.empty():
            _log.warning("OpenLineage: %d events not sent at stop", self.queue.qsize())
        await asyncio.to_thread(self.client.close, self.stop_timeout_s)

    async def _send_all(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await asyncio.to_thread(self.client.emit, event)
                self.sent += 1
            except Exception as exc:  # any transport failure: log, count, go on
                self.failed += 1
                if self.failed == 1 or self.failed % 100 == 0:
                    _log.warning(
                        "OpenLineage: could not emit %s of run %s (%d failed so far): %s",
                        event.eventType.value if event.eventType else "event",
                        event.run.runId,
                        self.failed,
                        exc,
                    )
            finally:
                self.queue.task_done()
