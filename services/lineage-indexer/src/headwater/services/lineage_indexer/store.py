"""lineage-indexer's queries over its own schema."""

from typing import Literal
from uuid import UUID

import asyncpg

from headwater.contracts.rpc import HistoryEvent, LineageEdge

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
    code_sha: str | None,
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.edges (fingerprint, input_dataset, input_key, input_data_sha,"
        " output_dataset, output_key, output_data_sha, code_sha)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        fingerprint,
        input_dataset,
        input_key,
        input_data_sha,
        output_dataset,
        output_key,
        output_data_sha,
        code_sha,
    )


async def walk(
    pool: asyncpg.Pool, dataset: str, key: str, depth: int, direction: Literal["up", "down"]
) -> list[LineageEdge]:
    """Every edge ever recorded into ("up") or out of ("down") dataset/key, transitively, to
    `depth` steps; each edge names the fingerprint and the code SHA that made its output."""
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
               output_data_sha, fingerprint, code_sha, depth FROM walk
        ORDER BY depth, {far}_dataset, {far}_key
        """,
        dataset,
        key,
        depth,
    )
    return [LineageEdge.model_validate(dict(r)) for r in rows]


async def history(
    pool: asyncpg.Pool, dataset: str, key: str | None, *, code_changes: bool = False
) -> list[HistoryEvent]:
    """The events of `dataset` (of its partition `key` only, when given; with `code_changes`,
    the dataset's code changes too), oldest first."""
    rows = await pool.fetch(
        f"SELECT event_id, subject, kind, partition_key, payload, received_at FROM {SCHEMA}.events"
        " WHERE dataset = $1 AND ($2::text IS NULL OR partition_key = $2"
        " OR ($3 AND partition_key IS NULL)) ORDER BY received_at",
        dataset,
        key,
        code_changes,
    )
    return [HistoryEvent.model_validate(dict(r)) for r in rows]


async def parent_run(
    conn: asyncpg.Connection, trace_id: str, inputs: list[tuple[str, str, str]]
) -> asyncpg.Record | None:
    """The run that caused a run of trace `trace_id` reading `inputs` (dataset, key, data
    SHA): the run, in the same trace, that produced one of them (the first by dataset and key
    if several did). None when none did: a code change, a retry or the reconcile timer caused
    it, or its cause was not recorded."""
    if not inputs:
        return None
    datasets, keys, shas = (list(column) for column in zip(*inputs, strict=True))
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT r.run_id, r.dataset, r.root_run_id, r.root_dataset FROM {SCHEMA}.runs r"
        " JOIN unnest($2::text[], $3::text[], $4::text[]) AS i (dataset, partition_key, data_sha)"
        " USING (dataset, partition_key, data_sha)"
        " WHERE r.trace_id = $1 ORDER BY r.dataset, r.partition_key LIMIT 1",
        trace_id,
        datasets,
        keys,
        shas,
    )
    return row


async def add_run(
    conn: asyncpg.Connection,
    event_id: str,
    run_id: UUID,
    dataset: str,
    key: str,
    data_sha: str | None,
    trace_id: str | None,
    parent: asyncpg.Record | None,
) -> None:
    """Record a run, with its parent and the root of its chain (the parent's root, or the
    parent itself when it has none)."""
    parent_id = parent_dataset = root_id = root_dataset = None
    if parent is not None:
        parent_id, parent_dataset = parent["run_id"], parent["dataset"]
        root_id = parent["root_run_id"] or parent_id
        root_dataset = parent["root_dataset"] or parent_dataset
    await conn.execute(
        f"INSERT INTO {SCHEMA}.runs (event_id, run_id, dataset, partition_key, data_sha,"
        " trace_id, parent_run_id, parent_dataset, root_run_id, root_dataset)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        event_id,
        run_id,
        dataset,
        key,
        data_sha,
        trace_id,
        parent_id,
        parent_dataset,
        root_id,
        root_dataset,
    )


async def run(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record | None:
    """The run `event_id` reported, and when the indexer first recorded that event."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT r.run_id, e.received_at, r.parent_run_id, r.parent_dataset, r.root_run_id,"
        f" r.root_dataset FROM {SCHEMA}.runs r JOIN {SCHEMA}.events e USING (event_id)"
        " WHERE r.event_id = $1",
        event_id,
    )
    return row
