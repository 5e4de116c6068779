"""lineage-indexer: records every event (run history) and the edges input partition ->
output partition of every materialization, and its runs (for OpenLineage); answers lineage
queries from those facts."""

import logging
from dataclasses import dataclass, field

import asyncpg

from headwater.contracts import (
    CodeChanged,
    PartitionLanded,
    PartitionRetracted,
    TaskFailed,
    dataset_of,
    family_of,
)
from headwater.contracts.rpc import (
    COLUMNS,
    ColumnsRequest,
    DatasetColumns,
    HistoryReply,
    HistoryRequest,
    LineageReply,
    LineageRequest,
)
from headwater.runtime import rpc
from headwater.runtime.service import Resources
from headwater.runtime.telemetry import (
    CODE_SHA,
    DATA_SHA,
    DATASET,
    DB_SYSTEM,
    FAMILY,
    FINGERPRINT,
    OUTCOME,
    PARTITION,
    REASON,
    current_trace_id,
    span,
)
from headwater.services.lineage_indexer import store
from headwater.services.lineage_indexer.openlineage import (
    Emitter,
    Naming,
    RunRecord,
    failed_events,
    landed_events,
    run_id,
)

_log = logging.getLogger(__name__)
# The events the lineage-indexer handles (headwater.contracts.registry names it their consumer).
LineageEvent = CodeChanged | PartitionLanded | PartitionRetracted | TaskFailed


@dataclass
class LineageIndexer:
    res: Resources
    # OpenLineage export (None: not configured, nothing is emitted).
    emitter: Emitter | None = None
    naming: Naming | None = None
    # Column lineage of each (dataset, code SHA), from spec-registry, for OpenLineage.
    _columns: dict[tuple[str, str], DatasetColumns] = field(default_factory=dict)

    async def on_event(self, subject: str, event: LineageEvent, reason: str | None = None) -> None:
        """Record one event of the families this service handles (`handled_by`): its kind is
        its family's, its partition key None for a code change. `reason`: why the run it
        reports ran (the scheduler's, carried as baggage), for its span."""
        family, dataset = family_of(event), dataset_of(event)
        key: str | None = getattr(event, "partition_key", None)
        attributes = {
            FAMILY: family.name,
            DATASET: dataset,
            PARTITION: key,
            FINGERPRINT: getattr(event, "fingerprint", None),
            DATA_SHA: getattr(event, "data_sha", None),
            CODE_SHA: getattr(event, "code_sha", None),
            REASON: reason,
            DB_SYSTEM: "postgresql",
        }
        with span("lineage-indexer record", attributes) as current:
            new = await self._record(subject, event, family.kind, dataset, key)
            current.set_attribute(OUTCOME, "recorded" if new else "duplicate")

    async def _record(
        self, subject: str, event: LineageEvent, kind: str, dataset: str, key: str | None
    ) -> bool:
        """Store `event` and what it says (edges, runs); whether it was new."""
        event_id: str = event.event_id
        new = False
        async with self.res.pool.acquire() as conn, conn.transaction():
            if await store.add_event(
                conn, event_id, subject, kind, dataset, key, event.model_dump_json()
            ):
                new = True
                if isinstance(event, PartitionLanded):
                    for ref in event.inputs:
                        await store.add_edge(
                            conn,
                            event.fingerprint,
                            ref.dataset,
                            ref.partition_key,
                            ref.data_sha,
                            event.dataset,
                            event.partition_key,
                            event.data_sha,
                            event.code_sha,
                        )
                if isinstance(event, PartitionLanded | TaskFailed):
                    await self._add_run(conn, event)
            # A redelivery (the first delivery's ack was lost) emits the same events again.
            run = None
            if self.emitter is not None and isinstance(event, PartitionLanded | TaskFailed):
                run = await store.run(conn, event_id)
        if run is not None and self.emitter is not None and self.naming is not None:
            record = RunRecord(**dict(run))
            if isinstance(event, PartitionLanded):
                columns = await self._columns_of(event)
                self.emitter.submit(landed_events(event, record, self.naming, columns))
            elif isinstance(event, TaskFailed):
                self.emitter.submit(failed_events(event, record, self.naming))
        return new

    async def _columns_of(self, event: PartitionLanded) -> DatasetColumns | None:
        """The column lineage of a computed partition's dataset (spec-registry works it out
        at apply), asked once per code SHA; None for a source, or when spec-registry does not
        answer (the events then go without the facet: exporting never holds up indexing)."""
        if event.code_sha is None or not event.inputs:
            return None
        key = (event.dataset, event.code_sha)
        if key not in self._columns:
            request = ColumnsRequest(dataset=event.dataset)
            try:
                subjects = self.res.settings.subjects
                found = await rpc.call(self.res.broker, subjects, COLUMNS, request, 2.0)
                self._columns[key] = found
            except Exception as exc:  # asked again for the next partition of the dataset
                _log.warning("no column lineage for %s: %s", event.dataset, exc)
                return None
        return self._columns[key]

    async def _add_run(self, conn: asyncpg.Connection, event: PartitionLanded | TaskFailed) -> None:
        """Record the run `event` reports, and the run in the same trace that caused it (the
        one that produced an input it read), if any."""
        # The trace of the message: the executor's (and change-detector's) own trace, which is
        # the trace of the event that caused the work (the scheduler passes its cause on).
        trace_id = current_trace_id()
        if isinstance(event, PartitionLanded):
            trace_id = event.trace_id or trace_id
        inputs = [(r.dataset, r.partition_key, r.data_sha) for r in event.inputs]
        parent = await store.parent_run(conn, trace_id, inputs) if trace_id else None
        await store.add_run(
            conn,
            event.event_id,
            run_id(self.res.settings.namespace, event.event_id),
            event.dataset,
            event.partition_key,
            event.data_sha if isinstance(event, PartitionLanded) else None,
            trace_id,
            parent,
        )

    async def lineage(self, request: LineageRequest) -> LineageReply:
        dataset, key, depth = request.dataset, request.partition_key, request.depth
        return LineageReply(
            dataset=dataset,
            partition_key=key,
            upstream=await store.walk(self.res.pool, dataset, key, depth, "up"),
            downstream=await store.walk(self.res.pool, dataset, key, depth, "down"),
        )

    async def history(self, request: HistoryRequest) -> HistoryReply:
        return HistoryReply(
            await store.history(
                self.res.pool,
                request.dataset,
                request.partition_key,
                code_changes=request.code_changes,
            )
        )
