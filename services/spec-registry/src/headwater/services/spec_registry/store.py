"""spec-registry's queries over its own schema."""

import json
from typing import Any

import asyncpg

from headwater.core.hashing import CODE_SHA_VERSION
from headwater.core.spec import DatasetSpec, PipelineDocument

SCHEMA = "spec_registry"


async def current_datasets(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT name, pipeline, kind, code_sha, code_sha_version, definition, columns"
        f" FROM {SCHEMA}.datasets ORDER BY name"
    )
    return {
        r["name"]: {
            "pipeline": r["pipeline"],
            "kind": r["kind"],
            "code_sha": r["code_sha"],
            "code_sha_version": r["code_sha_version"],
            "definition": json.loads(r["definition"]),
            "columns": json.loads(r["columns"]) if r["columns"] is not None else None,
        }
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
    """Store the dataset's definition, its code SHA with the version that computed it (this
    code's), and its column lineage (JSON) as of spec `version`."""
    await conn.execute(
        f"INSERT INTO {SCHEMA}.datasets (name, pipeline, kind, code_sha, code_sha_version,"
        " definition, spec_version, columns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (name) DO UPDATE SET pipeline = $2, kind = $3, code_sha = $4,"
        " code_sha_version = $5, definition = $6, spec_version = $7, columns = $8",
        ds.name,
        pipeline,
        ds.kind,
        ds.code_sha,
        CODE_SHA_VERSION,
        ds.definition().model_dump_json(),
        version,
        columns,
    )


async def remove_dataset(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.datasets WHERE name = $1", name)


async def lock(conn: asyncpg.Connection) -> None:
    """Serialise applies across replicas for the rest of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('spec_registry.apply'))")
