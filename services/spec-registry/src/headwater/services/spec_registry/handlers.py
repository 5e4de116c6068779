"""spec-registry: validates specs, keeps their versions, stores code by SHA, announces
every dataset whose code SHA changed. It never runs a spec's code (see headwater.core.spec)."""

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import ValidationError

from headwater.contracts import (
    PROD_ENV,
    CodeChanged,
    DatasetDefinition,
    Subjects,
    validate_env_name,
)
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
        env, body = _env_of(body)
        pipeline, columns = await self._parse(_document(body))
        async with self.res.pool.acquire() as conn:
            # A new environment starts as prod's definitions.
            exists = env == PROD_ENV or await store.env_exists(conn, env)
            current = await store.current_datasets(conn, env if exists else PROD_ENV)
            if env != PROD_ENV:
                _shares_sources(pipeline, await store.current_datasets(conn, PROD_ENV))
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
        env, body = _env_of(body)
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
            created = env != PROD_ENV and not await store.env_exists(conn, env)
            if env != PROD_ENV:
                _shares_sources(pipeline, await store.current_datasets(conn, PROD_ENV))
            if created:  # it starts as a view of prod: prod's definitions, no data
                await store.copy_env(conn, PROD_ENV, env)
            current = await store.current_datasets(conn, env)
            changes = _diff(pipeline, current)
            if not created and all(c["change"] == "unchanged" for c in changes):
                return _applied(pipeline.name, None, changes, env)
            version = await store.add_version(conn, pipeline.name, doc, env)
            for change in changes:
                name = change["dataset"]
                if change["change"] == "removed":
                    await store.remove_dataset(conn, name, env)
                    definition = DatasetDefinition.model_validate(current[name]["definition"])
                    await self._announce(conn, version, definition, change, removed=True, env=env)
                    continue
                ds = pipeline.datasets[name]
                await store.put_dataset(
                    conn, pipeline.name, ds, version, columns[name].model_dump_json(), env
                )
                if change["change"] != "unchanged":
                    await self._announce(
                        conn, version, ds.definition(), change, removed=False, env=env
                    )
            if created:
                # The scheduler learns every definition of a new environment (those of the
                # other pipelines it copied from prod too), so that what prod applies later
                # does not change it; an unchanged one costs it no work.
                announced = {c["dataset"] for c in changes if c["change"] != "unchanged"}
                for name, old in current.items():
                    if name in announced or (
                        name not in pipeline.datasets and old["pipeline"] == pipeline.name
                    ):
                        continue
                    sha = old["code_sha"]
                    same = {"previous_code_sha": sha}
                    d = DatasetDefinition.model_validate(old["definition"])
                    await self._announce(conn, version, d, same, removed=False, env=env)
        await self.res.flush()
        return _applied(pipeline.name, version, changes, env)

    async def promote(self, body: dict[str, Any]) -> dict[str, Any]:
        """Make environment `env`'s definitions of the pipelines applied to it prod's. Nothing
        is parsed or computed: the definitions are copied, and each one that differs from
        prod's is announced (with `promoted_from`), so the scheduler adopts what the
        environment already computed."""
        env = _named_env(body)
        promoted: list[dict[str, Any]] = []
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
                change = {
                    "dataset": name,
                    "kind": either["kind"],
                    "change": "removed" if new is None else "added" if old is None else "changed",
                    "previous_code_sha": old["code_sha"] if old is not None else None,
                    "code_sha": new["code_sha"] if new is not None else None,
                }
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
                    conn, version, d, change, removed=new is None, promoted_from=env
                )
                promoted.append(change)
        await self.res.flush()
        return {"env": env, "changes": promoted, "pipelines": sorted(documents)}

    async def envs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Every environment: its datasets, pipelines, and definitions that differ from prod."""
        return [
            {
                "env": r["env"],
                "datasets": int(r["datasets"]),
                "pipelines": sorted(r["pipelines"]),
                "differ": int(r["differ"]),
            }
            for r in await store.envs(self.res.pool)
        ]

    async def drop_env(self, body: dict[str, Any]) -> dict[str, Any]:
        """Forget environment `env`'s definitions (its spec versions stay, as history)."""
        env = _named_env(body)
        async with self.res.pool.acquire() as conn, conn.transaction():
            await store.lock(conn)
            dropped = await store.drop_env(conn, env)
            version = await conn.fetchval(
                f"SELECT max(version) FROM {store.SCHEMA}.spec_versions WHERE env = $1", env
            )
        if not dropped:
            raise InputError("env", f"no environment {env!r}")
        return {"env": env, "datasets": dropped, "spec_version": version}

    async def _announce(
        self,
        conn: asyncpg.Connection,
        version: int,
        definition: DatasetDefinition,
        change: dict[str, Any],
        *,
        removed: bool,
        env: str = PROD_ENV,
        promoted_from: str | None = None,
    ) -> None:
        event = CodeChanged(
            event_id=str(uuid.uuid4()),
            spec_version=version,
            dataset=definition,
            previous_code_sha=change["previous_code_sha"],
            removed=removed,
            env=env,
            promoted_from=promoted_from,
        )
        assert self.res.outbox is not None
        msg_id = f"code:{version}:{definition.name}"
        await self.res.outbox.add(conn, OutboxItem.of(self.subjects, event, msg_id))

    async def datasets(self, body: dict[str, Any]) -> dict[str, Any]:
        env = body.get("env", PROD_ENV)
        found = await store.current_datasets(self.res.pool, validate_env_name(env))
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


def _env_of(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The environment an apply or plan is for (prod unless `env` names another), and the
    document without it."""
    rest = dict(body)
    env = rest.pop("env", PROD_ENV)
    return validate_env_name(env), rest


def _named_env(body: dict[str, Any]) -> str:
    env = validate_env_name(body.get("env"))  # type: ignore[arg-type]
    if env == PROD_ENV:
        raise InputError("env", "prod is the default environment: it cannot be promoted or dropped")
    return env


def _shares_sources(pipeline: Pipeline, prod: dict[str, dict[str, Any]]) -> None:
    """An environment reads prod's sources (a landing is seen by every environment): its
    sources must be declared as prod declares them."""
    for name, ds in pipeline.datasets.items():
        if ds.kind != "source":
            continue
        old = prod.get(name)
        if old is None or old["kind"] != "source":
            raise InputError(
                f"sources.{name}",
                "an environment reads prod's sources: apply this source to prod first",
            )
        if _differs(DatasetDefinition.model_validate(old["definition"]), ds.definition()):
            raise InputError(
                f"sources.{name}",
                "is declared otherwise in prod: an environment reads prod's sources as they are",
            )


def _applied(
    pipeline: str, version: int | None, changes: list[dict[str, Any]], env: str
) -> dict[str, Any]:
    """An apply's reply; `env` only for an environment (prod's reply is as it always was)."""
    reply: dict[str, Any] = {"pipeline": pipeline, "spec_version": version, "changes": changes}
    if env != PROD_ENV:
        reply["env"] = env
    return reply


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
