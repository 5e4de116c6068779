"""change-detector's queries over its own schema."""

import json

import asyncpg

SCHEMA = "change_detector"


async def lock_partition(conn: asyncpg.Connection, dataset: str, partition_key: str) -> None:
    """Serialise work on one partition across replicas for the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{dataset}/{partition_key}")


async def last_data_sha(
    conn: asyncpg.Connection, dataset: str, partition_key: str, version: int
) -> str | None:
    """The partition's last data SHA if it was computed under data SHA `version`, else None:
    a SHA of another version (or of an unrecorded one) never matches a new one."""
    value = await conn.fetchval(
        f"SELECT data_sha FROM {SCHEMA}.source_partitions WHERE dataset = $1 AND partition_key = $2"
        " AND data_sha_version = $3",
        dataset,
        partition_key,
        version,
    )
    return None if value is None else str(value)


async def record(
    conn: asyncpg.Connection,
    dataset: str,
    partition_key: str,
    data_sha: str,
    data_sha_version: int,
    object_key: str,
    files: list[str],
    rows: int,
    size: int,
) -> int:
    """Store the partition's new content and the data SHA version it was hashed under; returns
    its content version (1 for the first)."""
    value = await conn.fetchval(
        f"INSERT INTO {SCHEMA}.source_partitions"
        " (dataset, partition_key, data_sha, data_sha_version, object_key, files, rows, bytes)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (dataset, partition_key) DO UPDATE SET data_sha = $3,"
        " data_sha_version = $4, object_key = $5, files = $6, rows = $7, bytes = $8,"
        f" updated_at = now(), version = {SCHEMA}.source_partitions.version + 1"
        " RETURNING version",
        dataset,
        partition_key,
        data_sha,
        data_sha_version,
        object_key,
        json.dumps(files),
        rows,
        size,
    )
    return int(value)


async def retract(conn: asyncpg.Connection, dataset: str, partition_key: str) -> int | None:
    """Forget a partition's content; returns its new version, or None if it had none."""
    value = await conn.fetchval(
        f"UPDATE {SCHEMA}.source_partitions SET data_sha = NULL, data_sha_version = NULL,"
        " object_key = NULL,"
        " files = '[]', rows = 0, bytes = 0, version = version + 1, updated_at = now()"
        " WHERE dataset = $1 AND partition_key = $2 AND data_sha IS NOT NULL RETURNING version",
        dataset,
        partition_key,
    )
    return None if value is None else int(value)


async def known(conn: asyncpg.Connection, dataset: str, partition_key: str) -> bool:
    """Whether the partition ever landed."""
    value = await conn.fetchval(
        f"SELECT 1 FROM {SCHEMA}.source_partitions WHERE dataset = $1 AND partition_key = $2",
        dataset,
        partition_key,
    )
    return value is not None
