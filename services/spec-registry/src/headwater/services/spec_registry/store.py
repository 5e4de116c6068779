"""spec-registry's queries over its own schema."""

from dataclasses import dataclass

import asyncpg

from headwater.contracts import PROD_ENV, DatasetDefinition
from headwater.contracts.rpc import DatasetColumns, PipelineDocument
from headwater.core.hashing import CODE_SHA_VERSION
from headwater.core.spec import DatasetSpec

SCHEMA = "spec_registry"


@dataclass(frozen=True)
class StoredDataset:
    """An applied dataset as stored: its column lineage None when applied before it was kept;
    `code_sha_version` the version its code SHA was computed under."""

    pipeline: str
    kind: str
    code_sha: str
    code_sha_version: int
    definition: DatasetDefinition
    columns: DatasetColumns | None


async def current_datasets(
    conn: asyncpg.Connection | asyncpg.Pool, env: str = PROD_ENV
) -> dict[str, StoredDataset]:
    """The definitions of environment `env` (prod by default), by dataset name."""
    rows = await conn.fetch(
        f"SELECT name, pipeline, kind, code_sha, code_sha_version, definition, columns"
        f" FROM {SCHEMA}.datasets WHERE env = $1 ORDER BY name",
        env,
    )
    return {
        r["name"]: StoredDataset(
            pipeline=r["pipeline"],
            kind=r["kind"],
            code_sha=r["code_sha"],
            code_sha_version=r["code_sha_version"],
            definition=DatasetDefinition.model_validate_json(r["definition"]),
            columns=(
                DatasetColumns.model_validate_json(r["columns"])
                if r["columns"] is not None
                else None
            ),
        )
        for r in rows
    }


async def add_version(
    conn: asyncpg.Connection, pipeline: str, doc: PipelineDocument, env: str = PROD_ENV
) -> int:
    version = await conn.fetchval(
        f"INSERT INTO {SCHEMA}.spec_versions (pipeline, file, document, env)"
        " VALUES ($1, $2, $3, $4) RETURNING version",
        pipeline,
        doc.file,
        doc.model_dump_json(),
        env,
    )
    return int(version)


async def put_dataset(
    conn: asyncpg.Connection,
    pipeline: str,
    ds: DatasetSpec,
    version: int,
    columns: str,
    env: str = PROD_ENV,
) -> None:
    """Store the dataset's definition, its code SHA with the version that computed it (this
    code's), and its column lineage (JSON) as of spec `version`."""
    await put_definition(
        conn, env, ds.name, pipeline, ds.kind, ds.code_sha, CODE_SHA_VERSION,
        ds.definition().model_dump_json(), version, columns,
    )  # fmt: skip


async def put_definition(
    conn: asyncpg.Connection,
    env: str,
    name: str,
    pipeline: str,
    kind: str,
    code_sha: str,
    code_sha_version: int,
    definition: str,
    version: int,
    columns: str | None,
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.datasets (name, pipeline, kind, code_sha, definition, spec_version,"
        " columns, env, code_sha_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (env, name) DO UPDATE SET pipeline = $2, kind = $3, code_sha = $4,"
        " definition = $5, spec_version = $6, columns = $7, code_sha_version = $9",
        name,
        pipeline,
        kind,
        code_sha,
        definition,
        version,
        columns,
        env,
        code_sha_version,
    )


async def remove_dataset(conn: asyncpg.Connection, name: str, env: str = PROD_ENV) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.datasets WHERE name = $1 AND env = $2", name, env)


# --- environments ---------------------------------------------------------------------
async def env_exists(conn: asyncpg.Connection, env: str) -> bool:
    return bool(
        await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.datasets WHERE env = $1)", env)
    )


async def copy_env(conn: asyncpg.Connection, source: str, target: str) -> None:
    """Start `target` as `source`'s definitions (rows of this table; no data)."""
    await conn.execute(
        f"INSERT INTO {SCHEMA}.datasets (env, name, pipeline, kind, code_sha, code_sha_version,"
        " definition, spec_version, columns) SELECT $2, name, pipeline, kind, code_sha,"
        f" code_sha_version, definition, spec_version, columns FROM {SCHEMA}.datasets"
        " WHERE env = $1",
        source,
        target,
    )


async def raw_datasets(conn: asyncpg.Connection, env: str) -> list[asyncpg.Record]:
    """Every stored column of `env`'s definitions (definition and columns as JSON text)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT name, pipeline, kind, code_sha, code_sha_version, definition::text AS definition,"
        f" columns::text AS columns FROM {SCHEMA}.datasets WHERE env = $1 ORDER BY name",
        env,
    )
    return rows


async def env_pipelines(conn: asyncpg.Connection, env: str) -> dict[str, PipelineDocument]:
    """The pipelines applied to `env`, each with the document last applied."""
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (pipeline) pipeline, document::text AS document"
        f" FROM {SCHEMA}.spec_versions WHERE env = $1 ORDER BY pipeline, version DESC",
        env,
    )
    return {r["pipeline"]: PipelineDocument.model_validate_json(r["document"]) for r in rows}


async def envs(conn: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """Each environment with its datasets and pipelines, and how many of its definitions
    differ from prod's (by code SHA, or present on one side only)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT e.env, count(*) AS datasets, array_agg(DISTINCT e.pipeline) AS pipelines,"
        " count(*) FILTER (WHERE p.code_sha IS DISTINCT FROM e.code_sha) AS differ"
        f" FROM {SCHEMA}.datasets e LEFT JOIN {SCHEMA}.datasets p"
        " ON p.env = 'prod' AND p.name = e.name GROUP BY e.env ORDER BY e.env <> 'prod', e.env"
    )
    return rows


async def drop_env(conn: asyncpg.Connection, env: str) -> int:
    status: str = await conn.execute(f"DELETE FROM {SCHEMA}.datasets WHERE env = $1", env)
    return int(status.split()[-1])


async def last_version(conn: asyncpg.Connection, env: str) -> int | None:
    """The last spec version applied to `env`, if any."""
    version: int | None = await conn.fetchval(
        f"SELECT max(version) FROM {SCHEMA}.spec_versions WHERE env = $1", env
    )
    return version


async def lock(conn: asyncpg.Connection) -> None:
    """Serialise applies across replicas for the rest of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('spec_registry.apply'))")
