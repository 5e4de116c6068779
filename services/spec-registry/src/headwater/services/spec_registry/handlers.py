"""spec-registry: validates specs, keeps their versions, stores code by SHA, announces
every dataset whose code SHA changed. It never runs a spec's code (see headwater.core.spec)."""

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import ValidationError

from headwater.contracts import CodeChanged, DatasetDefinition, Subjects
from headwater.contracts.errors import InputError
from headwater.core.columns import DatasetColumns, column_changes, pipeline_columns
from headwater.core.hashing import CODE_SHA_VERSION
from headwater.core.spec import Pipeline, PipelineDocument, parse_pipeline
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

    async def plan(self, body: dict[str, Any]) -> dict[str, Any]:
        pipeline, columns = await self._parse(_document(body))
        current = await store.current_datasets(self.res.pool)
        changes = _diff(pipeline, current)
        for change in changes:  # which output columns each change touches
            name = change["dataset"]
            if change["change"] == "removed":
                continue
            old = current.get(name, {}).get("columns")
            before = DatasetColumns.model_validate(old) if old else None
            if change["change"] == "added":
                before = DatasetColumns(dataset=name, kind=change["kind"], columns=())
            touched = column_changes(before, columns[name])
            # Shown for a code change, and wherever columns moved without one (a SELECT *
            # over a source whose declared columns changed).
            if change["change"] in ("added", "changed") or any(
                touched[k] for k in ("added", "removed", "changed")
            ):
                change["columns"] = touched
        changed = {c["dataset"] for c in changes if c["change"] in ("added", "changed")}
        return {
            "pipeline": pipeline.name,
            "changes": changes,
            "definitions": [
                pipeline.datasets[n].definition().model_dump(mode="json") for n in sorted(changed)
            ],
        }

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = _document(body)
        pipeline, columns = await self._parse(doc)
        # Code is content-addressed: writing it before the commit is idempotent and safe.
        for ds in pipeline.datasets.values():
            if ds.kind != "source":
                await self.res.objects.put(
                    self.code_bucket, f"{ds.code_sha}.json", json.dumps(ds.code_blob()).encode()
                )
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            current = await store.current_datasets(conn)
            changes = _diff(pipeline, current)
            if all(c["change"] == "unchanged" for c in changes):
                return {"pipeline": pipeline.name, "spec_version": None, "changes": changes}
            version = await store.add_version(conn, pipeline.name, doc)
            for change in changes:
                name = change["dataset"]
                if change["change"] == "removed":
                    await store.remove_dataset(conn, name)
                    definition = DatasetDefinition.model_validate(current[name]["definition"])
                    await self._announce(conn, version, definition, change, removed=True)
                    continue
                ds = pipeline.datasets[name]
                await store.put_dataset(
                    conn, pipeline.name, ds, version, columns[name].model_dump_json()
                )
                if change["change"] != "unchanged":
                    await self._announce(conn, version, ds.definition(), change, removed=False)
        await self.res.flush()
        return {"pipeline": pipeline.name, "spec_version": version, "changes": changes}

    async def _announce(
        self,
        conn: asyncpg.Connection,
        version: int,
        definition: DatasetDefinition,
        change: dict[str, Any],
        *,
        removed: bool,
    ) -> None:
        event = CodeChanged(
            event_id=str(uuid.uuid4()),
            spec_version=version,
            dataset=definition,
            previous_code_sha=change["previous_code_sha"],
            removed=removed,
        )
        assert self.res.outbox is not None
        msg_id = f"code:{version}:{definition.name}"
        await self.res.outbox.add(conn, OutboxItem.of(self.subjects, event, msg_id))

    async def datasets(self, body: dict[str, Any]) -> dict[str, Any]:
        found = await store.current_datasets(self.res.pool)
        for d in found.values():
            d.pop("columns")  # `columns` serves them, one dataset at a time
            d.pop("code_sha_version")  # the registry's own bookkeeping: the reply is unchanged
        return found

    async def columns(self, body: dict[str, Any]) -> dict[str, Any]:
        """A dataset's column lineage as computed when its spec was applied: per output
        column, the input columns it comes from, its expression and what is unresolved."""
        dataset = body.get("dataset")
        if not isinstance(dataset, str):
            raise InputError("dataset", "columns needs {dataset}")
        current = await store.current_datasets(self.res.pool)
        found = current.get(dataset)
        if found is None:
            known = ", ".join(sorted(current)) or "-"
            raise InputError("dataset", f"no dataset {dataset!r} (known: {known})")
        if found["columns"] is None:
            return DatasetColumns(
                dataset=dataset,
                kind=found["kind"],
                columns=None,
                unknown="applied before column lineage was kept: apply the spec again",
            ).model_dump(mode="json")
        result: dict[str, Any] = found["columns"]
        return result


def _analyse(
    doc: PipelineDocument, limits: SpecLimits
) -> tuple[Pipeline, dict[str, DatasetColumns]]:
    """The validated pipeline and every dataset's column lineage."""
    pipeline = parse_pipeline(doc, limits)
    return pipeline, pipeline_columns(pipeline)


def _document(body: dict[str, Any]) -> PipelineDocument:
    try:
        return PipelineDocument.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(".".join(str(p) for p in err["loc"]) or "payload", err["msg"]) from exc


def _diff(pipeline: Pipeline, current: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for name, ds in pipeline.datasets.items():
        old = current.get(name)
        if old is not None and old["pipeline"] != pipeline.name:
            raise InputError(f"datasets.{name}", f"already belongs to pipeline {old['pipeline']!r}")
        old_sha = old["code_sha"] if old else None
        if old is None:
            kind = "added"
        elif old_sha != ds.code_sha or old["code_sha_version"] != CODE_SHA_VERSION:
            # A code SHA of another version is never taken for this one, even when equal.
            kind = "changed"
        elif old is not None and _differs(
            DatasetDefinition.model_validate(old["definition"]), ds.definition()
        ):
            kind = "limits"  # only the bounds of a run changed: nothing runs again
        else:
            kind = "unchanged"
        changes.append(
            {
                "dataset": name,
                "kind": ds.kind,
                "change": kind,
                "previous_code_sha": old_sha,
                "code_sha": ds.code_sha,
            }
        )
    for name, old in current.items():
        if old["pipeline"] == pipeline.name and name not in pipeline.datasets:
            changes.append(
                {
                    "dataset": name,
                    "kind": old["kind"],
                    "change": "removed",
                    "previous_code_sha": old["code_sha"],
                    "code_sha": None,
                }
            )
    return changes


def _differs(old: DatasetDefinition, new: DatasetDefinition) -> bool:
    """Whether a definition changed, the order of a source's declared columns included (model
    equality compares dicts regardless of order)."""
    return old != new or list((old.columns or {}).items()) != list((new.columns or {}).items())
