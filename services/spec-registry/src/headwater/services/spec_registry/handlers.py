"""spec-registry: validates specs, keeps their versions, stores code by SHA, announces
every dataset whose code SHA changed. It never runs a spec's code (see headwater.core.spec)."""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg

from headwater.contracts import PROD_ENV, CodeChanged, DatasetDefinition, Subjects
from headwater.contracts.errors import InputError
from headwater.contracts.rpc import (
    ApplyReply,
    ColumnsRequest,
    DatasetColumns,
    DatasetRecord,
    DatasetsReply,
    DatasetsRequest,
    DroppedDefinitions,
    EnvironmentSummary,
    EnvRequest,
    EnvsReply,
    EnvsRequest,
    PipelineDocument,
    PlanReply,
    PromoteReply,
    SpecChange,
    SpecRequest,
)
from headwater.core.columns import column_changes, pipeline_columns
from headwater.core.hashing import CODE_SHA_VERSION
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

    async def plan(self, request: SpecRequest) -> PlanReply:
        env = request.env
        pipeline, columns = await self._parse(request.document())
        async with self.res.pool.acquire() as conn:
            # A new environment starts as prod's definitions.
            exists = env == PROD_ENV or await store.env_exists(conn, env)
            current = await store.current_datasets(conn, env if exists else PROD_ENV)
            if env != PROD_ENV:
                _shares_sources(pipeline, await store.current_datasets(conn, PROD_ENV))
        changes = _diff(pipeline, current)
        for i, change in enumerate(changes):  # which output columns each change touches
            name = change.dataset
            if change.change == "removed":
                continue
            before = current[name].columns if name in current else None
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

    async def apply(self, request: SpecRequest) -> ApplyReply:
        env, doc = request.env, request.document()
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
            created = env != PROD_ENV and not await store.env_exists(conn, env)
            if env != PROD_ENV:
                _shares_sources(pipeline, await store.current_datasets(conn, PROD_ENV))
            if created:  # it starts as a view of prod: prod's definitions, no data
                await store.copy_env(conn, PROD_ENV, env)
            current = await store.current_datasets(conn, env)
            changes = _diff(pipeline, current)
            if not created and all(c.change == "unchanged" for c in changes):
                return _applied(pipeline.name, None, changes, env)
            version = await store.add_version(conn, pipeline.name, doc, env)
            for change in changes:
                name = change.dataset
                if change.change == "removed":
                    await store.remove_dataset(conn, name, env)
                    definition = current[name].definition
                    await self._announce(
                        conn, version, definition, change.previous_code_sha, removed=True, env=env
                    )
                    continue
                ds = pipeline.datasets[name]
                await store.put_dataset(
                    conn, pipeline.name, ds, version, columns[name].model_dump_json(), env
                )
                if change.change != "unchanged":
                    await self._announce(
                        conn,
                        version,
                        ds.definition(),
                        change.previous_code_sha,
                        removed=False,
                        env=env,
                    )
            if created:
                # The scheduler learns every definition of a new environment (those of the
                # other pipelines it copied from prod too), so that what prod applies later
                # does not change it; an unchanged one costs it no work.
                announced = {c.dataset for c in changes if c.change != "unchanged"}
                for name, old in current.items():
                    if name in announced or (
                        name not in pipeline.datasets and old.pipeline == pipeline.name
                    ):
                        continue
                    await self._announce(
                        conn, version, old.definition, old.code_sha, removed=False, env=env
                    )
        await self.res.flush()
        return _applied(pipeline.name, version, changes, env)

    async def promote(self, request: EnvRequest) -> PromoteReply:
        """Make environment `env`'s definitions of the pipelines applied to it prod's. Nothing
        is parsed or computed: the definitions are copied, and each one that differs from
        prod's is announced (with `promoted_from`), so the scheduler adopts what the
        environment already computed."""
        env = _named_env(request)
        promoted: list[SpecChange] = []
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            if not await store.env_exists(conn, env):
                raise InputError("env", f"no environment {env!r}")
            documents = await store.env_pipelines(conn, env)
            prod = {r["name"]: r for r in await store.raw_datasets(conn, PROD_ENV)}
            mine = {
                r["name"]: r
                for r in await store.raw_datasets(conn, env)
                if r["pipeline"] in documents
            }
            versions: dict[str, int] = {}
            for name in sorted(set(mine) | set(prod)):
                new, old = mine.get(name), prod.get(name)
                if new is None:
                    if old is None or old["pipeline"] not in documents:
                        continue  # a dataset of a pipeline the environment did not touch
                elif old is not None and (
                    new["code_sha"],
                    new["code_sha_version"],
                    new["definition"],
                ) == (old["code_sha"], old["code_sha_version"], old["definition"]):
                    continue
                either = new if new is not None else old
                assert either is not None
                pipeline = either["pipeline"]
                if pipeline not in versions:
                    versions[pipeline] = await store.add_version(
                        conn, pipeline, documents[pipeline], PROD_ENV
                    )
                version = versions[pipeline]
                change = SpecChange(
                    dataset=name,
                    kind=either["kind"],
                    change="removed" if new is None else "added" if old is None else "changed",
                    previous_code_sha=old["code_sha"] if old is not None else None,
                    code_sha=new["code_sha"] if new is not None else None,
                )
                if new is None:
                    await store.remove_dataset(conn, name, PROD_ENV)
                    d = DatasetDefinition.model_validate_json(either["definition"])
                else:
                    await store.put_definition(
                        conn, PROD_ENV, name, new["pipeline"], new["kind"], new["code_sha"],
                        new["code_sha_version"], new["definition"], version, new["columns"],
                    )  # fmt: skip
                    d = DatasetDefinition.model_validate_json(new["definition"])
                await self._announce(
                    conn,
                    version,
                    d,
                    change.previous_code_sha,
                    removed=new is None,
                    promoted_from=env,
                )
                promoted.append(change)
        await self.res.flush()
        return PromoteReply(env=env, changes=promoted, pipelines=sorted(documents))

    async def envs(self, _: EnvsRequest) -> EnvsReply:
        """Every environment: its datasets, pipelines, and definitions that differ from prod."""
        return EnvsReply(
            [
                EnvironmentSummary(
                    env=r["env"],
                    datasets=int(r["datasets"]),
                    pipelines=sorted(r["pipelines"]),
                    differ=int(r["differ"]),
                )
                for r in await store.envs(self.res.pool)
            ]
        )

    async def drop_env(self, request: EnvRequest) -> DroppedDefinitions:
        """Forget environment `env`'s definitions (its spec versions stay, as history)."""
        env = _named_env(request)
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            dropped = await store.drop_env(conn, env)
            version = await store.last_version(conn, env)
        if not dropped:
            raise InputError("env", f"no environment {env!r}")
        return DroppedDefinitions(env=env, datasets=dropped, spec_version=version)

    async def _announce(
        self,
        conn: asyncpg.Connection,
        version: int,
        definition: DatasetDefinition,
        previous_code_sha: str | None,
        *,
        removed: bool,
        env: str = PROD_ENV,
        promoted_from: str | None = None,
    ) -> None:
        event = CodeChanged(
            event_id=str(uuid.uuid4()),
            spec_version=version,
            dataset=definition,
            previous_code_sha=previous_code_sha,
            removed=removed,
            env=env,
            promoted_from=promoted_from,
        )
        assert self.res.outbox is not None
        msg_id = f"code:{version}:{definition.name}"
        await self.res.outbox.add(conn, OutboxItem.of(self.subjects, event, msg_id))

    async def datasets(self, request: DatasetsRequest) -> DatasetsReply:
        found = await store.current_datasets(self.res.pool, request.env)
        # `columns` serves their column lineage, one dataset at a time; the code SHA's
        # version is the registry's own bookkeeping.
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


def _named_env(request: EnvRequest) -> str:
    if request.env == PROD_ENV:
        raise InputError("env", "prod is the default environment: it cannot be promoted or dropped")
    return request.env


def _shares_sources(pipeline: Pipeline, prod: dict[str, store.StoredDataset]) -> None:
    """An environment reads prod's sources (a landing is seen by every environment): its
    sources must be declared as prod declares them."""
    for name, ds in pipeline.datasets.items():
        if ds.kind != "source":
            continue
        old = prod.get(name)
        if old is None or old.kind != "source":
            raise InputError(
                f"sources.{name}",
                "an environment reads prod's sources: apply this source to prod first",
            )
        if _differs(old.definition, ds.definition()):
            raise InputError(
                f"sources.{name}",
                "is declared otherwise in prod: an environment reads prod's sources as they are",
            )


def _applied(pipeline: str, version: int | None, changes: list[SpecChange], env: str) -> ApplyReply:
    """An apply's reply; `env` only for an environment (prod's reply is as it always was)."""
    return ApplyReply(
        pipeline=pipeline,
        spec_version=version,
        changes=changes,
        env=None if env == PROD_ENV else env,
    )


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
        elif old_sha != ds.code_sha or old.code_sha_version != CODE_SHA_VERSION:
            # A code SHA of another version is never taken for this one, even when equal.
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
