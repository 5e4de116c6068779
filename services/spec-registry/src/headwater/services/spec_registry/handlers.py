"""spec-registry: validates specs, keeps their versions, stores code by SHA, announces
every dataset whose code SHA changed. It never runs a spec's code (see headwater.core.spec)."""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg

from headwater.contracts import CodeChanged, DatasetDefinition, Subjects
from headwater.contracts.errors import InputError
from headwater.contracts.rpc import (
    ApplyReply,
    ColumnsRequest,
    DatasetColumns,
    DatasetRecord,
    DatasetsReply,
    DatasetsRequest,
    PipelineDocument,
    PlanReply,
    SpecChange,
)
from headwater.core.columns import column_changes, pipeline_columns
from headwater.core.spec import Pipeline, parse_pipeline
from headwater.core.spec_input import SpecLimits
from headwater.runtime.outbox import OutboxItem
from headwater.runtime.service import Resources
from headwater.services.spec_registry import store


@dataclass
class SpecRegistry:
    res: Resources
    subjects: Subjects
    code_bucket: str
    limits: SpecLimits

    async def _parse(self, doc: PipelineDocument) -> tuple[Pipeline, dict[str, DatasetColumns]]:
        # Off the event loop: a spec at the limits takes seconds to parse, and the service
        # meanwhile answers other callers (and its own heartbeats).
        return await asyncio.to_thread(_analyse, doc, self.limits)

    async def plan(self, doc: PipelineDocument) -> PlanReply:
        pipeline, columns = await self._parse(doc)
        current = await store.current_datasets(self.res.pool)
        changes = _diff(pipeline, current)
        for i, change in enumerate(changes):  # which output columns each change touches
            name = change.dataset
            if change.change == "removed":
                continue
            old = current[name].columns if name in current else None
            before = old
            if change.change == "added":
                before = DatasetColumns(dataset=name, kind=change.kind, columns=())
            touched = column_changes(before, columns[name])
            # Shown for a code change, and wherever columns moved without a code change (a
            # SELECT * over a source whose declared columns changed).
            if change.change in ("added", "changed") or any(
                (touched.added, touched.removed, touched.changed)
            ):
                changes[i] = change.model_copy(update={"columns": touched})
        changed = {c.dataset for c in changes if c.change in ("added", "changed")}
        return PlanReply(
            pipeline=pipeline.name,
            changes=changes,
            definitions=[pipeline.datasets[n].definition() for n in sorted(changed)],
        )

    async def apply(self, doc: PipelineDocument) -> ApplyReply:
        pipeline, columns = await self._parse(doc)
        # Code is content-addressed: writing it before the commit is idempotent and safe.
        for ds in pipeline.datasets.values():
            if ds.kind != "source":
                await self.res.objects.put(
                    self.code_bucket,
                    f"{ds.code_sha}.json",
                    ds.code_blob().model_dump_json().encode(),
                )
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            current = await store.current_datasets(conn)
            changes = _diff(pipeline, current)
            if all(c.change == "unchanged" for c in changes):
                return ApplyReply(pipeline=pipeline.name, spec_version=None, changes=changes)
            version = await store.add_version(conn, pipeline.name, doc)
            for change in changes:
                name = change.dataset
                if change.change == "removed":
                    await store.remove_dataset(conn, name)
                    definition = current[name].definition
                    await self._announce(conn, version, definition, change, removed=True)
                    continue
                ds = pipeline.datasets[name]
                await store.put_dataset(
                    conn, pipeline.name, ds, version, columns[name].model_dump_json()
                )
                if change.change != "unchanged":
                    await self._announce(conn, version, ds.definition(), change, removed=False)
        await self.res.flush()
        return ApplyReply(pipeline=pipeline.name, spec_version=version, changes=changes)

    async def _announce(
        self,
        conn: asyncpg.Connection,
        version: int,
        definition: DatasetDefinition,
        change: SpecChange,
        *,
        removed: bool,
    ) -> None:
        event = CodeChanged(
            event_id=str(uuid.uuid4()),
            spec_version=version,
            dataset=definition,
            previous_code_sha=change.previous_code_sha,
            removed=removed,
        )
        assert self.res.outbox is not None
        msg_id = f"code:{version}:{definition.name}"
        await self.res.outbox.add(conn, OutboxItem.of(self.subjects, event, msg_id))

    async def datasets(self, _: DatasetsRequest) -> DatasetsReply:
        found = await store.current_datasets(self.res.pool)
        # `columns` serves their column lineage, one dataset at a time.
        return DatasetsReply(
            {
                name: DatasetRecord(
                    pipeline=d.pipeline, kind=d.kind, code_sha=d.code_sha, definition=d.definition
                )
                for name, d in found.items()
            }
        )

    async def columns(self, request: ColumnsRequest) -> DatasetColumns:
        """A dataset's column lineage as computed when its spec was applied: per output
        column, the input columns it comes from, its expression and what is unresolved."""
        dataset = request.dataset
        current = await store.current_datasets(self.res.pool)
        found = current.get(dataset)
        if found is None:
            known = ", ".join(sorted(current)) or "-"
            raise InputError("dataset", f"no dataset {dataset!r} (known: {known})")
        if found.columns is None:
            return DatasetColumns(
                dataset=dataset,
                kind=found.kind,
                columns=None,
                unknown="applied before column lineage was kept: apply the spec again",
            )
        return found.columns


def _analyse(
    doc: PipelineDocument, limits: SpecLimits
) -> tuple[Pipeline, dict[str, DatasetColumns]]:
    """The validated pipeline and every dataset's column lineage."""
    pipeline = parse_pipeline(doc, limits)
    return pipeline, pipeline_columns(pipeline)


def _diff(pipeline: Pipeline, current: dict[str, store.StoredDataset]) -> list[SpecChange]:
    changes: list[SpecChange] = []
    for name, ds in pipeline.datasets.items():
        old = current.get(name)
        if old is not None and old.pipeline != pipeline.name:
            raise InputError(f"datasets.{name}", f"already belongs to pipeline {old.pipeline!r}")
        old_sha = old.code_sha if old else None
        change: Literal["added", "changed", "limits", "unchanged"]
        if old is None:
            change = "added"
        elif old_sha != ds.code_sha:
            change = "changed"
        elif _differs(old.definition, ds.definition()):
            change = "limits"  # only the bounds of a run changed: nothing runs again
        else:
            change = "unchanged"
        changes.append(
            SpecChange(
                dataset=name,
                kind=ds.kind,
                change=change,
                previous_code_sha=old_sha,
                code_sha=ds.code_sha,
            )
        )
    for name, old in current.items():
        if old.pipeline == pipeline.name and name not in pipeline.datasets:
            changes.append(
                SpecChange(
                    dataset=name,
                    kind=old.kind,
                    change="removed",
                    previous_code_sha=old.code_sha,
                    code_sha=None,
                )
            )
    return changes


def _differs(old: DatasetDefinition, new: DatasetDefinition) -> bool:
    """Whether a definition changed, the order of a source's declared columns included (model
    equality compares dicts regardless of order)."""
    return old != new or list((old.columns or {}).items()) != list((new.columns or {}).items())
