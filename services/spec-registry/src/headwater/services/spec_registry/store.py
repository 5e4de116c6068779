"""spec-registry's queries over its own schema."""

from dataclasses import dataclass

import asyncpg

from headwater.contracts import DatasetDefinition
from headwater.contracts.rpc import DatasetColumns, PipelineDocument
from headwater.core.spec import DatasetSpec

SCHEMA = "spec_registry"


@dataclass(frozen=True)
class StoredDataset:
    """An applied dataset as stored: its column lineage None when applied before it was kept."""

    pipeline: str
    kind: str
    code_sha: str
    definition: DatasetDefinition
    columns: DatasetColumns | None


async def current_datasets(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, StoredDataset]:
    rows = await conn.fetch(
        f"SELECT name, pipeline, kind, code_sha, definition, columns FROM {SCHEMA}.datasets"
        " ORDER BY name"
    )
    return {
        r["name"]: StoredDataset(
            pipeline=r["pipeline"],
            kind=r["kind"],
            code_sha=r["code_sha"],
            definition=DatasetDefinition.model_validate_json(r["definition"]),
            columns=(
                DatasetColumns.model_validate_json(r["columns"])
                if r["columns"] is not None
                else None
            ),
        )
        for r in rows
    }


async def add_version(conn: asyncpg.Connection, pipeline: str, doc: PipelineDocument) -> int:
    version = await conn.fetchval(
        f"INSERT INTO {SCHEMA}.spec_versions (pipeline, file, document) VALUES ($1, $2, $3)"
        " RETURNING version",
        pipeline,
        doc.file,
        doc.model_dump_json(),
    )
    return int(version)


async def put_dataset(
    conn: asyncpg.Connection, pipeline: str, ds: DatasetSpec, version: int, columns: str
) -> None:
    """Store the dataset's definition and its column lineage (JSON) as of spec `version`."""
    await conn.execute(
        f"INSERT INTO {SCHEMA}.datasets (name, pipeline, kind, code_sha, definition, spec_version,"
        " columns) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (name) DO UPDATE SET pipeline = $2, kind = $3, code_sha = $4,"
        " definition = $5, spec_version = $6, columns = $7",
        ds.name,
        pipeline,
        ds.kind,
        ds.code_sha,
        ds.definition().model_dump_json(),
        version,
        columns,
    )


async def remove_dataset(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.datasets WHERE name = $1", name)


async def lock(conn: asyncpg.Connection) -> None:
    """Serialise applies across replicas for the rest of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('spec_registry.apply'))")
