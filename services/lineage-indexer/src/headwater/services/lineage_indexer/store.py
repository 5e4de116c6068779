"""lineage-indexer's queries over its own schema."""

from typing import Any, Literal

import asyncpg

SCHEMA = "lineage"


async def add_event(
    conn: asyncpg.Connection,
    event_id: str,
    subject: str,
    kind: str,
    dataset: str,
    key: str | None,
    payload: str,
) -> bool:
    status = await conn.execute(
        f"INSERT INTO {SCHEMA}.events (event_id, subject, kind, dataset, partition_key, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        event_id,
        subject,
        kind,
        dataset,
        key,
        payload,
    )
    return bool(status.endswith(" 1"))


async def add_edge(
    conn: asyncpg.Connection,
    fingerprint: str,
    input_dataset: str,
    input_key: str,
    input_data_sha: str,
    output_dataset: str,
    output_key: str,
    output_data_sha: str,
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.edges (fingerprint, input_dataset, input_key, input_data_sha,"
        " output_dataset, output_key, output_data_sha) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT DO NOTHING",
        fingerprint,
        input_dataset,
        input_key,
        input_data_sha,
        output_dataset,
        output_key,
        output_data_sha,
    )


async def walk(
    pool: asyncpg.Pool, dataset: str, key: str, depth: int, direction: Literal["up", "down"]
) -> list[dict[str, Any]]:
    """Every edge ever recorded into ("up") or out of ("down") dataset/key, transitively, to
    `depth` steps; each edge names the fingerprint that made it."""
    near, far = ("output", "input") if direction == "up" else ("input", "output")
    rows = await pool.fetch(
        f"""
        WITH RECURSIVE walk AS (
            SELECT e.*, 1 AS depth FROM {SCHEMA}.edges e
            WHERE e.{near}_dataset = $1 AND e.{near}_key = $2
          UNION
            SELECT e.*, w.depth + 1 FROM {SCHEMA}.edges e
            JOIN walk w ON e.{near}_dataset = w.{far}_dataset AND e.{near}_key = w.{far}_key
            WHERE w.depth < $3
        )
        SELECT DISTINCT input_dataset, input_key, input_data_sha, output_dataset, output_key,
               output_data_sha, fingerprint, depth FROM walk
        ORDER BY depth, {far}_dataset, {far}_key
        """,
        dataset,
        key,
        depth,
    )
    return [dict(r) for r in rows]


async def history(pool: asyncpg.Pool, dataset: str, key: str | None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT event_id, subject, kind, partition_key, payload, received_at FROM {SCHEMA}.events"
        " WHERE dataset = $1 AND ($2::text IS NULL OR partition_key = $2) ORDER BY received_at",
        dataset,
        key,
    )
    return [dict(r) for r in rows]
