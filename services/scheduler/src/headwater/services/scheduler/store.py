"""scheduler's queries over its own schema."""

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg
from pydantic import BaseModel

from headwater.contracts import (
    DatasetDefinition,
    PartitionLanded,
    PartitionState,
    TaskAttemptFailed,
    TaskState,
)
from headwater.contracts.rpc import LISTING_MAX, AttemptError, MaterializationRecord
from headwater.core.hashing import FINGERPRINT_VERSION
from headwater.core.mappings import Scope
from headwater.core.reconcile import Output, PartitionFact, Row, Task

SCHEMA = "scheduler"
# Above this many keys, a dataset's rows are read whole (one scan) rather than key by key.
_WHOLE_AT = 5000
Conn: TypeAlias = asyncpg.Connection
M = TypeVar("M", bound=BaseModel)


async def lock(conn: Conn) -> None:
    """One reconciler at a time across replicas, for the rest of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('scheduler.reconcile'))")


async def first_time(conn: Conn, event_id: str) -> bool:
    """Record `event_id` in the inbox; False if it was processed before."""
    status = await conn.execute(
        f"INSERT INTO {SCHEMA}.inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING", event_id
    )
    return bool(status.endswith(" 1"))


async def prune_inbox(conn: Conn, older_than_s: float, batch: int = 10_000) -> int:
    """Forget processed event ids older than `older_than_s`, oldest first."""
    status: str = await conn.execute(
        f"DELETE FROM {SCHEMA}.inbox WHERE event_id IN (SELECT event_id FROM {SCHEMA}.inbox"
        " WHERE processed_at < now() - make_interval(secs => $1)"
        " ORDER BY processed_at LIMIT $2)",
        older_than_s,
        batch,
    )
    return int(status.split()[-1])


async def put_dataset(conn: Conn, d: DatasetDefinition, removed: bool) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.datasets (name, code_sha, definition, removed)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE"
        " SET code_sha = $2, definition = $3, removed = $4, updated_at = now()",
        d.name,
        d.code_sha,
        d.model_dump_json(),
        removed,
    )


async def definitions(conn: Conn) -> dict[str, DatasetDefinition]:
    rows = await conn.fetch(f"SELECT definition FROM {SCHEMA}.datasets WHERE NOT removed")
    out = [DatasetDefinition.model_validate_json(r["definition"]) for r in rows]
    return {d.name: d for d in out}


_FACT = "dataset, partition_key, data_sha, object_key, state"
_STORED = "state <> 'retracted'"
_LIVE = "state <> 'retracted' AND NOT incomplete"  # what readers see


async def scoped_facts(conn: Conn, scopes: dict[str, Scope]) -> dict[str, dict[str, PartitionFact]]:
    """The facts of the partitions each dataset's scope asks for (not every partition held):
    one indexed query per kind of ask, whatever the number of keys in it."""
    out: dict[str, dict[str, PartitionFact]] = {d: {} for d in scopes}
    # Past _WHOLE_AT asks (a code change's readers), one scan beats that many index probes.
    scopes = {
        d: Scope(everything=True) if sc.asks() > _WHOLE_AT else sc for d, sc in scopes.items()
    }
    whole = [d for d, sc in scopes.items() if sc.everything]
    if whole:
        for d, found in (await facts(conn, whole)).items():
            out[d] = found
    exact = [(d, k) for d, sc in scopes.items() if not sc.everything for k in sc.exact]
    near = [
        (d, k, n, direction)
        for d, sc in scopes.items()
        if not sc.everything
        for direction, asks in (("before", sc.before), ("after", sc.after))
        for k, n in asks
    ]
    prefixes = [(d, p) for d, sc in scopes.items() if not sc.everything for p in sc.prefixes]
    rows: list[asyncpg.Record] = []
    if exact:
        rows += await conn.fetch(
            f"SELECT {_FACT} FROM {SCHEMA}.partitions p"
            " JOIN unnest($1::text[], $2::text[]) AS q(d, k)"
            f" ON p.dataset = q.d AND p.partition_key = q.k WHERE {_LIVE}",
            [d for d, _ in exact],
            [k for _, k in exact],
        )
    for direction, op, order in (("before", "<=", "DESC"), ("after", ">=", "ASC")):
        asks = [(d, k, n) for d, k, n, dr in near if dr == direction]
        if asks:
            rows += await conn.fetch(
                f"SELECT p.* FROM unnest($1::text[], $2::text[], $3::int[]) AS q(d, k, n)"
                f" CROSS JOIN LATERAL (SELECT {_FACT} FROM {SCHEMA}.partitions"
                f' WHERE dataset = q.d AND {_LIVE} AND (partition_key COLLATE "C") {op} q.k'
                f' ORDER BY (partition_key COLLATE "C") {order} LIMIT q.n) p',
                [d for d, _, _ in asks],
                [k for _, k, _ in asks],
                [n for _, _, n in asks],
            )
    if prefixes:
        # A prefix is a range in code-point order: [p, p + DEL): keys are printable ASCII.
        rows += await conn.fetch(
            f"SELECT p.* FROM unnest($1::text[], $2::text[]) AS q(d, pre)"
            f" CROSS JOIN LATERAL (SELECT {_FACT} FROM {SCHEMA}.partitions"
            f' WHERE dataset = q.d AND {_LIVE} AND (partition_key COLLATE "C") >= q.pre'
            f' AND (partition_key COLLATE "C") < q.pre || chr(127)) p',
            [d for d, _ in prefixes],
            [p for _, p in prefixes],
        )
    for r in rows:
        out[r["dataset"]][r["partition_key"]] = PartitionFact(
            r["data_sha"], r["object_key"], r["state"]
        )
    return out


async def facts(conn: Conn, datasets: list[str]) -> dict[str, dict[str, PartitionFact]]:
    rows = await conn.fetch(
        f"SELECT dataset, partition_key, data_sha, object_key, state FROM {SCHEMA}.partitions"
        f" WHERE dataset = ANY($1::text[]) AND {_LIVE}",
        datasets,
    )
    out: dict[str, dict[str, PartitionFact]] = {d: {} for d in datasets}
    for r in rows:
        out[r["dataset"]][r["partition_key"]] = PartitionFact(
            r["data_sha"], r["object_key"], r["state"]
        )
    return out


_ROW = (
    "partition_key, state, fingerprint, desired_fingerprint, data_sha, object_key, rows, bytes,"
    " reason, incomplete"
)


def _row(r: asyncpg.Record) -> Row:
    return Row(
        PartitionState(r["state"]),
        r["fingerprint"],
        r["desired_fingerprint"],
        r["data_sha"],
        r["object_key"],
        r["rows"],
        r["bytes"],
        r["reason"],
        r["incomplete"],
    )


async def rows(conn: Conn, dataset: str, keys: Collection[str] | None = None) -> dict[str, Row]:
    """The stored partitions `keys` of `dataset` (None: all of them), retracted ones aside."""
    if keys is not None and len(keys) < _WHOLE_AT:
        found = await conn.fetch(
            f"SELECT {_ROW} FROM {SCHEMA}.partitions WHERE dataset = $1"
            f" AND partition_key = ANY($2::text[]) AND {_STORED}",
            dataset,
            list(keys),
        )
    else:
        found = await conn.fetch(
            f"SELECT {_ROW} FROM {SCHEMA}.partitions WHERE dataset = $1 AND {_STORED}", dataset
        )
    wanted = set(keys) if keys is not None else None
    return {
        r["partition_key"]: _row(r) for r in found if wanted is None or r["partition_key"] in wanted
    }


async def put_rows(conn: Conn, dataset: str, changed: dict[str, Row]) -> None:
    """Write these partitions of `dataset` whole, in one statement."""
    if not changed:
        return
    keys = list(changed)
    values = [changed[k] for k in keys]
    await conn.execute(
        f"INSERT INTO {SCHEMA}.partitions (dataset, {_ROW})"
        " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
        " $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::bool[])"
        " ON CONFLICT (dataset, partition_key) DO UPDATE SET state = excluded.state,"
        " fingerprint = excluded.fingerprint, desired_fingerprint = excluded.desired_fingerprint,"
        " data_sha = excluded.data_sha, object_key = excluded.object_key, rows = excluded.rows,"
        " bytes = excluded.bytes, reason = excluded.reason, incomplete = excluded.incomplete,"
        " updated_at = now()",
        dataset,
        keys,
        [v.state for v in values],
        [v.fingerprint for v in values],
        [v.desired_fingerprint for v in values],
        [v.data_sha for v in values],
        [v.object_key for v in values],
        [v.rows for v in values],
        [v.bytes for v in values],
        [v.reason for v in values],
        [v.incomplete for v in values],
    )


async def outputs(conn: Conn, fingerprints: Collection[str]) -> dict[str, Output]:
    """The usable materializations (not found damaged) of `fingerprints`."""
    if not fingerprints:
        return {}
    found = await conn.fetch(
        f"SELECT fingerprint, data_sha, object_key, rows, bytes FROM {SCHEMA}.materializations"
        " WHERE fingerprint = ANY($1::text[]) AND damaged IS NULL",
        list(fingerprints),
    )
    return {
        r["fingerprint"]: Output(r["data_sha"], r["object_key"], r["rows"], r["bytes"])
        for r in found
    }


async def tasks(conn: Conn, fingerprints: Collection[str]) -> dict[str, Task]:
    if not fingerprints:
        return {}
    found = await conn.fetch(
        f"SELECT fingerprint, state, error FROM {SCHEMA}.tasks WHERE fingerprint = ANY($1::text[])",
        list(fingerprints),
    )
    return {r["fingerprint"]: Task(TaskState(r["state"]), r["error"]) for r in found}


@dataclass(frozen=True)
class Made:
    """What a materialization was made from, for saying why it is recomputed."""

    code_sha: str | None
    inputs: dict[tuple[str, str], str]  # (dataset, key) -> data SHA


async def made_from(conn: Conn, fingerprints: Collection[str]) -> dict[str, Made]:
    """What the materializations `fingerprints` (damaged or not) were made from."""
    if not fingerprints:
        return {}
    found = await conn.fetch(
        f"SELECT fingerprint, code_sha, inputs FROM {SCHEMA}.materializations"
        " WHERE fingerprint = ANY($1::text[])",
        list(fingerprints),
    )
    return {
        r["fingerprint"]: Made(
            r["code_sha"],
            {(i["dataset"], i["partition_key"]): i["data_sha"] for i in json.loads(r["inputs"])},
        )
        for r in found
    }


async def add_tasks(conn: Conn, dataset: str, new: list[tuple[str, str, str]]) -> None:
    """Record requested tasks: (fingerprint, partition key, reason) each."""
    if not new:
        return
    await conn.execute(
        f"INSERT INTO {SCHEMA}.tasks (fingerprint, dataset, partition_key, state, reason)"
        " SELECT f, $1, k, 'requested', r FROM unnest($2::text[], $3::text[], $4::text[])"
        " AS n(f, k, r)",
        dataset,
        [f for f, _, _ in new],
        [k for _, k, _ in new],
        [r for _, _, r in new],
    )


async def reopen_tasks(conn: Conn, fingerprints: Collection[str]) -> dict[str, int]:
    """Request failed, cancelled or unusable tasks again; fingerprint -> its generation."""
    if not fingerprints:
        return {}
    found = await conn.fetch(
        f"UPDATE {SCHEMA}.tasks SET state = 'requested', attempts = attempts + 1,"
        " error = NULL, traceback = NULL, finished_at = NULL, sent_at = now(),"
        " cancel_pending = false WHERE fingerprint = ANY($1::text[])"
        " RETURNING fingerprint, attempts",
        list(fingerprints),
    )
    return {r["fingerprint"]: int(r["attempts"]) for r in found}


# --- settling: new computations held until their inputs stop changing (`settle:`) --------
@dataclass(frozen=True)
class Settling:
    fingerprint: str  # what it will ask for
    first_at: datetime  # when its inputs first changed
    due_at: datetime
    changes: int  # input changes it coalesces


async def settling(conn: Conn, dataset: str, keys: Collection[str]) -> dict[str, Settling]:
    rows = await conn.fetch(
        f"SELECT partition_key, fingerprint, first_at, due_at, changes FROM {SCHEMA}.settling"
        " WHERE dataset = $1 AND partition_key = ANY($2::text[])",
        dataset,
        list(keys),
    )
    return {r["partition_key"]: Settling(*list(r.values())[1:]) for r in rows}


async def put_settling(conn: Conn, dataset: str, held: dict[str, Settling]) -> None:
    if not held:
        return
    await conn.execute(
        f"INSERT INTO {SCHEMA}.settling"
        " (dataset, partition_key, fingerprint, first_at, due_at, changes)"
        " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[],"
        " $5::timestamptz[], $6::int[])"
        " ON CONFLICT (dataset, partition_key) DO UPDATE SET fingerprint = excluded.fingerprint,"
        " first_at = excluded.first_at, due_at = excluded.due_at, changes = excluded.changes",
        dataset,
        list(held),
        [h.fingerprint for h in held.values()],
        [h.first_at for h in held.values()],
        [h.due_at for h in held.values()],
        [h.changes for h in held.values()],
    )


async def drop_settling(conn: Conn, dataset: str, keys: Collection[str]) -> None:
    if keys:
        await conn.execute(
            f"DELETE FROM {SCHEMA}.settling WHERE dataset = $1 AND partition_key = ANY($2::text[])",
            dataset,
            list(keys),
        )


async def settled_due(conn: Conn, limit: int) -> dict[str, set[str]]:
    """The held partitions whose time has come (at most `limit`), by dataset."""
    rows = await conn.fetch(
        f"SELECT dataset, partition_key FROM {SCHEMA}.settling WHERE due_at <= now()"
        " ORDER BY due_at LIMIT $1",
        limit,
    )
    due: dict[str, set[str]] = {}
    for r in rows:
        due.setdefault(r["dataset"], set()).add(r["partition_key"])
    return due


async def partition(conn: Conn, dataset: str, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.partitions WHERE dataset = $1 AND partition_key = $2",
        dataset,
        key,
    )
    return row


async def set_partition(conn: Conn, dataset: str, key: str, **values: Any) -> None:
    """Upsert the named columns of a partition row."""
    cols = list(values)
    params = [dataset, key, *values.values()]
    assigns = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(cols))
    await conn.execute(
        f"INSERT INTO {SCHEMA}.partitions (dataset, partition_key, {', '.join(cols)})"
        f" VALUES ($1, $2, {', '.join(f'${i + 3}' for i in range(len(cols)))})"
        f" ON CONFLICT (dataset, partition_key) DO UPDATE SET {assigns}, updated_at = now()",
        *params,
    )


async def materialization_any(conn: Conn, fingerprint: str | None) -> asyncpg.Record | None:
    """The materialization of `fingerprint`, damaged or not."""
    if fingerprint is None:
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.materializations WHERE fingerprint = $1", fingerprint
    )
    return row


async def mark_damaged(conn: Conn, object_key: str, reason: str) -> None:
    """Every materialization stored in `object_key` (content-addressed: several may share
    it) is unusable until the object is written anew."""
    await conn.execute(
        f"UPDATE {SCHEMA}.materializations SET damaged = $2 WHERE object_key = $1",
        object_key,
        reason,
    )


async def mark_repaired(conn: Conn, object_key: str) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.materializations SET damaged = NULL"
        " WHERE object_key = $1 AND damaged IS NOT NULL",
        object_key,
    )


async def add_materialization(conn: Conn, e: PartitionLanded, reason: str | None) -> bool:
    status = await conn.execute(
        f"INSERT INTO {SCHEMA}.materializations (fingerprint, fingerprint_version, dataset,"
        " partition_key, code_sha, data_sha, object_key, rows, bytes, inputs, reason,"
        " duration_ms, cpu_ms, trace_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT (fingerprint) DO NOTHING",
        e.fingerprint,
        FINGERPRINT_VERSION,
        e.dataset,
        e.partition_key,
        e.code_sha,
        e.data_sha,
        e.object_key,
        e.rows,
        e.bytes,
        json.dumps([i.model_dump() for i in e.inputs]),
        reason,
        e.duration_ms,
        e.cpu_ms,
        e.trace_id,
    )
    return bool(status.endswith(" 1"))


async def task(conn: Conn, fingerprint: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.tasks WHERE fingerprint = $1", fingerprint
    )
    return row


async def add_task(conn: Conn, fingerprint: str, dataset: str, key: str, reason: str) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.tasks (fingerprint, dataset, partition_key, state, reason)"
        " VALUES ($1, $2, $3, 'requested', $4)",
        fingerprint,
        dataset,
        key,
        reason,
    )


async def finish_task(
    conn: Conn, fingerprint: str, state: str, error: str = "", tb: str = "", executions: int = 0
) -> None:
    """Record how a task ended; `executions`: how many times its transform ran for it."""
    await conn.execute(
        f"UPDATE {SCHEMA}.tasks SET state = $2, error = NULLIF($3, ''), traceback = NULLIF($4, ''),"
        " finished_at = now(), executions = executions + $5 WHERE fingerprint = $1",
        fingerprint,
        state,
        error,
        tb,
        executions,
    )


def record_of(model: type[M], row: Mapping[str, Any]) -> M:
    """`model` from the columns of `row` it names (the others are the scheduler's own)."""
    columns = dict(row)
    return model.model_validate({k: columns[k] for k in model.model_fields if k in columns})


async def materializations_of(
    conn: Conn | asyncpg.Pool, dataset: str, key: str
) -> list[MaterializationRecord]:
    rows = await conn.fetch(
        f"SELECT m.*, COALESCE(p.fingerprint = m.fingerprint, false) AS current"
        f" FROM {SCHEMA}.materializations m LEFT JOIN {SCHEMA}.partitions p"
        " ON p.dataset = m.dataset AND p.partition_key = m.partition_key"
        " WHERE m.dataset = $1 AND m.partition_key = $2 ORDER BY m.created_at",
        dataset,
        key,
    )
    return [
        record_of(MaterializationRecord, {**dict(r), "inputs": json.loads(r["inputs"])})
        for r in rows
    ]


async def delete_partition(conn: Conn, dataset: str, key: str) -> None:
    """The partition no longer exists (its materializations stay, for reuse). When it went,
    why (which of its inputs went) and what it was are kept in `retractions`, for `why`."""
    gone = await conn.fetchrow(
        f"DELETE FROM {SCHEMA}.partitions WHERE dataset = $1 AND partition_key = $2"
        " RETURNING state, fingerprint, data_sha, rows",
        dataset,
        key,
    )
    if gone is None:
        return
    inputs, reason = await _inputs_gone(conn, gone["fingerprint"])
    await conn.execute(
        f"INSERT INTO {SCHEMA}.retractions (dataset, partition_key, reason, inputs, state,"
        " fingerprint, data_sha, rows) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (dataset, partition_key) DO UPDATE SET retracted_at = now(), reason = $3,"
        " inputs = $4, state = $5, fingerprint = $6, data_sha = $7, rows = $8",
        dataset,
        key,
        reason,
        json.dumps(inputs),
        gone["state"],
        gone["fingerprint"],
        gone["data_sha"],
        gone["rows"],
    )


async def _inputs_gone(conn: Conn, fingerprint: str | None) -> tuple[list[dict[str, str]], str]:
    """Which inputs of the materialization `fingerprint` exist no more, and the reason."""
    m = await materialization_any(conn, fingerprint)
    refs = json.loads(m["inputs"]) if m is not None else []
    gone: list[dict[str, str]] = []
    reasons: list[str] = []
    for ref in refs:
        name = f"{ref['dataset']}/{ref['partition_key']}"
        row = await partition(conn, ref["dataset"], ref["partition_key"])
        if (
            row is not None and row["state"] == PartitionState.RETRACTED
        ):  # a source: its files were deleted
            reasons.append(f"input {name} was retracted ({row['reason']})")
        elif row is not None and row["incomplete"]:  # a join that lost one side
            reasons.append(f"input {name} lost an input of its own ({row['reason']})")
        elif row is None:
            earlier = await retraction(conn, ref["dataset"], ref["partition_key"])
            why = f", as {earlier['reason']}" if earlier is not None else ""
            reasons.append(f"input {name} went away{why}")
        else:
            continue
        gone.append({"dataset": ref["dataset"], "partition_key": ref["partition_key"]})
    if not reasons:
        return [], "no input partition maps to it any more"
    return gone, "; ".join(reasons)


async def retraction(conn: Conn | asyncpg.Pool, dataset: str, key: str) -> asyncpg.Record | None:
    """When, why and in what state the derived partition went away, if it did."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.retractions WHERE dataset = $1 AND partition_key = $2",
        dataset,
        key,
    )
    return row


async def fingerprints_of(
    conn: Conn | asyncpg.Pool, partitions: list[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """(dataset, partition) -> the fingerprint of its current materialization, for the
    partitions named that exist (a retracted source's is None)."""
    rows = await conn.fetch(
        f"SELECT p.dataset, p.partition_key, p.fingerprint FROM {SCHEMA}.partitions p"
        " JOIN unnest($1::text[], $2::text[]) AS w(dataset, partition_key)"
        " ON p.dataset = w.dataset AND p.partition_key = w.partition_key",
        [d for d, _ in partitions],
        [k for _, k in partitions],
    )
    return {(r["dataset"], r["partition_key"]): r["fingerprint"] for r in rows}


async def unanswered_tasks(conn: Conn, older_than_s: float) -> list[asyncpg.Record]:
    """Tasks requested and not answered for `older_than_s` seconds."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT t.fingerprint, t.dataset, t.partition_key, t.attempts FROM {SCHEMA}.tasks t"
        " WHERE t.state = 'requested' AND t.sent_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return rows


async def mark_sent(conn: Conn, fingerprint: str) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.tasks SET sent_at = now() WHERE fingerprint = $1", fingerprint
    )


async def current_fingerprints(conn: Conn) -> dict[tuple[str, str], str | None]:
    """(dataset, partition) -> the fingerprint of its current materialization."""
    rows = await conn.fetch(f"SELECT dataset, partition_key, fingerprint FROM {SCHEMA}.partitions")
    return {(r["dataset"], r["partition_key"]): r["fingerprint"] for r in rows}


async def cancel_tasks(conn: Conn, cancels: Collection[tuple[str, str]]) -> int:
    """Cancel those tasks still requested, each with its reason ((fingerprint, reason)
    pairs); their marks are to be written."""
    if not cancels:
        return 0
    status = await conn.execute(
        f"UPDATE {SCHEMA}.tasks t SET state = 'cancelled', cancel_pending = true, error = c.r,"
        " finished_at = now() FROM unnest($1::text[], $2::text[]) AS c(f, r)"
        " WHERE t.fingerprint = c.f AND t.state = 'requested'",
        [f for f, _ in cancels],
        [r for _, r in cancels],
    )
    return int(status.split()[-1])


async def requested_tasks_of(conn: Conn, dataset: str) -> list[str]:
    rows = await conn.fetch(
        f"SELECT fingerprint FROM {SCHEMA}.tasks WHERE dataset = $1 AND state = 'requested'",
        dataset,
    )
    return [r["fingerprint"] for r in rows]


async def pending_cancels(conn: Conn) -> list[tuple[str, str]]:
    """(fingerprint, reason) of cancelled tasks whose executors have not been told yet."""
    rows = await conn.fetch(
        f"SELECT fingerprint, error FROM {SCHEMA}.tasks WHERE cancel_pending FOR UPDATE"
    )
    return [(r["fingerprint"], r["error"] or "cancelled") for r in rows]


async def cancels_written(conn: Conn, fingerprints: list[str]) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.tasks SET cancel_pending = false WHERE fingerprint = ANY($1::text[])",
        fingerprints,
    )


ATTEMPTS_KEPT = 50  # failed attempts kept per task (over all its requests): the newest


async def add_attempt(conn: Conn, e: TaskAttemptFailed) -> None:
    """Keep a failed attempt of a task; past ATTEMPTS_KEPT, the task's oldest goes."""
    await conn.execute(
        f"INSERT INTO {SCHEMA}.task_attempts (fingerprint, request, attempt, failed_at,"
        " executor, error, traceback) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (fingerprint, request, attempt) DO NOTHING",
        e.fingerprint,
        e.request,
        e.attempt,
        e.at,
        e.executor,
        e.error,
        e.traceback,
    )
    await conn.execute(
        f"DELETE FROM {SCHEMA}.task_attempts WHERE fingerprint = $1 AND (request, attempt) IN"
        f" (SELECT request, attempt FROM {SCHEMA}.task_attempts WHERE fingerprint = $1"
        " ORDER BY request DESC, attempt DESC OFFSET $2)",
        e.fingerprint,
        ATTEMPTS_KEPT,
    )


async def attempts_of(conn: Conn | asyncpg.Pool, fingerprint: str) -> list[AttemptError]:
    """The kept failed attempts of a task, in the order they ran."""
    rows = await conn.fetch(
        f"SELECT request, attempt, error, failed_at AS at, executor, traceback"
        f" FROM {SCHEMA}.task_attempts WHERE fingerprint = $1 ORDER BY request, attempt",
        fingerprint,
    )
    return [AttemptError.model_validate(dict(r)) for r in rows]


# --- the CLI's status: a summary and a listing whose replies do not grow with what is held --
# A partition's states, in the order `status` shows them; `retracted` counts sources whose files
# were deleted and derived partitions that went away (kept in `retractions`).
STATES = tuple(PartitionState)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str | None  # None: rows of a dataset the scheduler has no definition of
    removed: bool


async def dataset_infos(conn: Conn | asyncpg.Pool) -> dict[str, DatasetInfo]:
    """Every dataset the scheduler was told of, removed ones too."""
    rows = await conn.fetch(
        f"SELECT name, definition->>'kind' AS kind, removed FROM {SCHEMA}.datasets"
    )
    return {r["name"]: DatasetInfo(r["name"], r["kind"], r["removed"]) for r in rows}


async def state_counts(conn: Conn | asyncpg.Pool) -> dict[str, dict[str, int]]:
    """dataset -> state -> how many partitions: one GROUP BY over the partitions (the reply
    is one row per dataset and state), and one over the retractions of derived partitions
    that have not come back."""
    out: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        f"SELECT dataset, state, count(*) AS n FROM {SCHEMA}.partitions GROUP BY dataset, state"
    ):
        out.setdefault(r["dataset"], {})[r["state"]] = int(r["n"])
    for r in await conn.fetch(
        f"SELECT r.dataset, count(*) AS n FROM {SCHEMA}.retractions r WHERE NOT EXISTS"
        f" (SELECT 1 FROM {SCHEMA}.partitions p"
        " WHERE p.dataset = r.dataset AND p.partition_key = r.partition_key)"
        " GROUP BY r.dataset"
    ):
        counts = out.setdefault(r["dataset"], {})
        counts[PartitionState.RETRACTED] = counts.get(PartitionState.RETRACTED, 0) + int(r["n"])
    return out


async def errored(
    conn: Conn | asyncpg.Pool, datasets: Collection[str], limit: int
) -> list[dict[str, Any]]:
    """The first `limit` errored partitions of `datasets` (by dataset, then key) with their
    task's error."""
    if limit <= 0 or not datasets:
        return []
    rows = await conn.fetch(
        f"SELECT p.dataset, p.partition_key, COALESCE(t.error, p.reason) AS error, p.updated_at"
        f" FROM {SCHEMA}.partitions p"
        f" LEFT JOIN {SCHEMA}.tasks t ON t.fingerprint = p.desired_fingerprint"
        " WHERE p.state = 'errored' AND p.dataset = ANY($1::text[])"
        ' ORDER BY p.dataset, (p.partition_key COLLATE "C") LIMIT $2',
        list(datasets),
        limit,
    )
    return [dict(r) for r in rows]


async def tasks_requested(conn: Conn | asyncpg.Pool) -> dict[str, int]:
    """dataset -> how many of its tasks are requested and not answered (read from the
    partial index of requested tasks: the cost follows the work in flight, not the history)."""
    rows = await conn.fetch(
        f"SELECT dataset, count(*) AS n FROM {SCHEMA}.tasks WHERE state = 'requested'"
        " GROUP BY dataset"
    )
    return {r["dataset"]: int(r["n"]) for r in rows}


# One listing row: the columns `status` always showed, then when it last changed and the
# fingerprint it waits for. Retracted derived partitions come from `retractions`.
_LISTED = (
    "p.partition_key, p.state, p.data_sha, p.object_key, p.rows, p.bytes, p.reason,"
    " p.fingerprint, t.error, p.desired_fingerprint, p.updated_at"
)
_LISTED_GONE = (
    "r.partition_key, 'retracted' AS state, NULL::text AS data_sha, NULL::text AS object_key,"
    " NULL::bigint AS rows, NULL::bigint AS bytes, r.reason, NULL::text AS fingerprint,"
    " NULL::text AS error, NULL::text AS desired_fingerprint, r.retracted_at AS updated_at"
)


async def partitions_page(
    conn: Conn | asyncpg.Pool,
    dataset: str,
    *,
    states: Collection[str] | None = None,
    since: datetime | None = None,
    after: str | None = None,
    limit: int = 50,
    count: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """A page of `dataset`'s partitions in key order (code points), after the key `after`,
    narrowed to `states` (None: every state but retracted) and to those changed at or after
    `since`; at most `limit` (<= LISTING_MAX) rows. Returns the rows and how many more
    match after them (without `count`: 1 if any does, else 0). The key order uses the
    C-collated key index, so a page costs its rows plus what the filters skip; the count is
    one pass over the rest of the dataset."""
    wanted = (
        list(states) if states is not None else [s for s in STATES if s != PartitionState.RETRACTED]
    )
    params: list[Any] = [dataset, wanted, since, after]
    live = (
        f"SELECT {_LISTED} FROM {SCHEMA}.partitions p"
        f" LEFT JOIN {SCHEMA}.tasks t ON t.fingerprint = p.desired_fingerprint"
        " WHERE p.dataset = $1 AND p.state = ANY($2::text[])"
        " AND ($3::timestamptz IS NULL OR p.updated_at >= $3)"
    )
    gone = (
        f"SELECT {_LISTED_GONE} FROM {SCHEMA}.retractions r"
        " WHERE r.dataset = $1 AND 'retracted' = ANY($2::text[])"
        " AND ($3::timestamptz IS NULL OR r.retracted_at >= $3) AND NOT EXISTS"
        f" (SELECT 1 FROM {SCHEMA}.partitions p"
        " WHERE p.dataset = r.dataset AND p.partition_key = r.partition_key)"
    )
    union = f"({live}) UNION ALL ({gone})" if PartitionState.RETRACTED in wanted else live
    size = min(max(limit, 0), LISTING_MAX)
    page = await conn.fetch(
        f"SELECT * FROM ({union}) AS u"
        ' WHERE ($4::text IS NULL OR (u.partition_key COLLATE "C") > $4)'
        f' ORDER BY (u.partition_key COLLATE "C") LIMIT {size + (0 if count else 1)}',
        *params,
    )
    rows = [dict(r) for r in page]
    if not count:
        return rows[:size], int(len(rows) > size)
    last = rows[-1]["partition_key"] if rows else after
    more = await conn.fetchval(
        f"SELECT count(*) FROM ({union}) AS u"
        ' WHERE ($4::text IS NULL OR (u.partition_key COLLATE "C") > $4)',
        *params[:3],
        last,
    )
    return rows, int(more)
