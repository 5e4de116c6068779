"""scheduler's queries over its own schema."""

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg
from pydantic import BaseModel

from headwater.contracts import (
    PROD_ENV,
    DatasetDefinition,
    PartitionLanded,
    PartitionState,
    TaskAttemptFailed,
    TaskState,
    validate_env_name,
)
from headwater.contracts.rpc import LISTING_MAX, AttemptError, MaterializationRecord
from headwater.core.hashing import FINGERPRINT_VERSION
from headwater.core.mappings import Grid, Scope
from headwater.core.reconcile import Output, PartitionFact, Row, Task

SCHEMA = "scheduler"
# Above this many keys, a dataset's rows are read whole (one scan) rather than key by key.
_WHOLE_AT = 5000
Conn: TypeAlias = asyncpg.Connection
M = TypeVar("M", bound=BaseModel)
PROD = PROD_ENV


def _seen(env: str, a: str = "p") -> str:
    """SQL: whether the partition row aliased `a` is one environment `env` sees: its own, and
    prod's where it has none of its own (docs/architecture.md, "Environments"). Environment
    names are validated (lower-case letters, digits, '_', '-'), so one is written inline."""
    if env == PROD:
        return f"{a}.env = 'prod'"
    validate_env_name(env)
    return (
        f"({a}.env = '{env}' OR ({a}.env = 'prod' AND NOT EXISTS (SELECT 1 FROM"
        f" {SCHEMA}.partitions o WHERE o.dataset = {a}.dataset AND o.partition_key ="
        f" {a}.partition_key AND o.env = '{env}')))"
    )


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


async def put_dataset(conn: Conn, d: DatasetDefinition, removed: bool, env: str = PROD) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.datasets (name, code_sha, definition, removed, env)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, env) DO UPDATE"
        " SET code_sha = $2, definition = $3, removed = $4, updated_at = now()",
        d.name,
        d.code_sha,
        d.model_dump_json(),
        removed,
        env,
    )


async def envs(conn: Conn) -> list[str]:
    """The environments other than prod that hold definitions (a handful: the datasets table
    has a row per dataset and environment)."""
    rows = await conn.fetch(
        f"SELECT DISTINCT env FROM {SCHEMA}.datasets WHERE env <> 'prod' ORDER BY env"
    )
    return [r["env"] for r in rows]


async def definitions(conn: Conn, env: str = PROD) -> dict[str, DatasetDefinition]:
    rows = await conn.fetch(
        f"SELECT definition FROM {SCHEMA}.datasets WHERE NOT removed AND env = $1", env
    )
    out = [DatasetDefinition.model_validate_json(r["definition"]) for r in rows]
    return {d.name: d for d in out}


_FACT = "dataset, partition_key, data_sha, object_key, state"
_STORED = "state <> 'retracted'"
_LIVE = "state <> 'retracted' AND NOT incomplete"  # what readers see
# An environment's row in place of a prod partition it does not have (store.delete_partition).
_TOMBSTONE = "(p.env <> 'prod' AND p.state = 'retracted')"
_FACT_P = "p.dataset, p.partition_key, p.data_sha, p.object_key, p.state"
_LIVE_P = "p.state <> 'retracted' AND NOT p.incomplete"


async def scoped_facts(
    conn: Conn, scopes: dict[str, Scope], env: str = PROD
) -> dict[str, dict[str, PartitionFact]]:
    """The facts of the partitions each dataset's scope asks for (not every partition held),
    as environment `env` sees them: one indexed query per kind of ask, whatever the number of
    keys in it."""
    out: dict[str, dict[str, PartitionFact]] = {d: {} for d in scopes}
    # Past _WHOLE_AT asks (a code change's readers), one scan beats that many index probes.
    scopes = {
        d: Scope(everything=True) if sc.asks() > _WHOLE_AT else sc for d, sc in scopes.items()
    }
    whole = [d for d, sc in scopes.items() if sc.everything]
    if whole:
        for d, found in (await facts(conn, whole, env)).items():
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
            f" ON p.dataset = q.d AND p.partition_key = q.k WHERE {_LIVE} AND {_seen(env)}",
            [d for d, _ in exact],
            [k for _, k in exact],
        )
    for direction, op, order in (("before", "<=", "DESC"), ("after", ">=", "ASC")):
        asks = [(d, k, n) for d, k, n, dr in near if dr == direction]
        if asks:
            rows += await conn.fetch(
                f"SELECT p.* FROM unnest($1::text[], $2::text[], $3::int[]) AS q(d, k, n)"
                f" CROSS JOIN LATERAL (SELECT {_FACT_P} FROM {SCHEMA}.partitions p"
                f" WHERE p.dataset = q.d AND {_LIVE_P} AND {_seen(env)}"
                f' AND (p.partition_key COLLATE "C") {op} q.k'
                f' ORDER BY (p.partition_key COLLATE "C") {order} LIMIT q.n) p',
                [d for d, _, _ in asks],
                [k for _, k, _ in asks],
                [n for _, _, n in asks],
            )
    if prefixes:
        # A prefix is a range in code-point order: [p, p + DEL): keys are printable ASCII.
        rows += await conn.fetch(
            f"SELECT p.* FROM unnest($1::text[], $2::text[]) AS q(d, pre)"
            f" CROSS JOIN LATERAL (SELECT {_FACT_P} FROM {SCHEMA}.partitions p"
            f" WHERE p.dataset = q.d AND {_LIVE_P} AND {_seen(env)}"
            f' AND (p.partition_key COLLATE "C") >= q.pre'
            f' AND (p.partition_key COLLATE "C") < q.pre || chr(127)) p',
            [d for d, _ in prefixes],
            [p for _, p in prefixes],
        )
    grids = [(d, g) for d, sc in scopes.items() if not sc.everything for g in sc.grids]
    whole_grids = [(d, g) for d, g in grids if g.bound is None]
    if whole_grids:
        # Keys of a dataset with dimensions matching a constraint per dimension: the range of
        # the leading ones, filtered by the rest (headwater.core.mappings.Grid).
        rows += await conn.fetch(
            f"SELECT p.* FROM unnest($1::text[], $2::text[], $3::text[]) AS q(d, pre, pat)"
            f" CROSS JOIN LATERAL (SELECT {_FACT_P} FROM {SCHEMA}.partitions p"
            f" WHERE p.dataset = q.d AND {_LIVE_P} AND {_seen(env)}"
            f' AND (p.partition_key COLLATE "C") >= q.pre'
            f' AND (p.partition_key COLLATE "C") < q.pre || chr(127)'
            " AND p.partition_key LIKE q.pat) p",
            [d for d, _ in whole_grids],
            [g.prefix for _, g in whole_grids],
            [g.like for _, g in whole_grids],
        )
    near_grids = [(d, g) for d, g in grids if g.bound is not None]
    if near_grids:
        rows += await _walk(conn, near_grids, env)
    for r in rows:
        out[r["dataset"]][r["partition_key"]] = PartitionFact(
            r["data_sha"], r["object_key"], r["state"]
        )
    return out


_WALK_FACTOR = 8  # keys read per match wanted, at first, along a window's dimension


async def _walk(conn: Conn, grids: list[tuple[str, Grid]], env: str) -> list[asyncpg.Record]:
    """The matches of grids with a bound: a window along one dimension, its n keys nearest
    the bound. The key index is walked from the bound (no LIKE in the query: the planner,
    guessing a LIKE rare, would scan the table and sort), a batch at a time, filtered here;
    a grid with fewer than n matches walks on from where it stopped, so the keys read are
    about those between the window's ends, whatever is held."""
    found: list[asyncpg.Record] = []
    todo = [(d, g, g.bound or "", g.n * _WALK_FACTOR, 0) for d, g in grids]
    while todo:
        more = []
        for direction, op, order in (("before", "<=", "DESC"), ("after", ">=", "ASC")):
            asks = [t for t in todo if t[1].direction == direction]
            if not asks:
                continue
            batch = await conn.fetch(
                "SELECT q.i, p.* FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])"
                " WITH ORDINALITY AS q(d, pre, k, n, i)"
                f" CROSS JOIN LATERAL (SELECT {_FACT_P}, p.incomplete FROM {SCHEMA}.partitions p"
                f" WHERE p.dataset = q.d AND {_seen(env)}"
                f' AND (p.partition_key COLLATE "C") >= q.pre'
                f' AND (p.partition_key COLLATE "C") < q.pre || chr(127)'
                f' AND (p.partition_key COLLATE "C") {op} q.k'
                f' ORDER BY (p.partition_key COLLATE "C") {order} LIMIT q.n) p',
                [d for d, *_ in asks],
                [g.prefix for _, g, *_ in asks],
                [k for _, _, k, _, _ in asks],
                [n for *_, n, _ in asks],
            )
            by_ask: dict[int, list[asyncpg.Record]] = {}
            for r in batch:
                by_ask.setdefault(r["i"] - 1, []).append(r)
            for i, (d, g, k, n, have) in enumerate(asks):
                got = by_ask.get(i, [])
                pattern = re.compile(g.regex)
                hits = [
                    r
                    for r in got
                    if r["partition_key"] != k or not have  # the bound again, past the first
                    if pattern.fullmatch(r["partition_key"])
                    and r["state"] != "retracted"
                    and not r["incomplete"]
                ]
                hits = hits[: g.n - have]
                found += hits
                if have + len(hits) < g.n and len(got) == n:  # more keys to walk
                    more.append((d, g, got[-1]["partition_key"], n * 2, have + len(hits)))
        todo = more
    return found


async def facts(
    conn: Conn, datasets: list[str], env: str = PROD
) -> dict[str, dict[str, PartitionFact]]:
    rows = await conn.fetch(
        f"SELECT {_FACT_P} FROM {SCHEMA}.partitions p"
        f" WHERE p.dataset = ANY($1::text[]) AND {_LIVE_P} AND {_seen(env)}",
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


async def rows(
    conn: Conn, dataset: str, keys: Collection[str] | None = None, env: str = PROD
) -> dict[str, Row]:
    """The stored partitions `keys` of `dataset` (None: all of them) as environment `env`
    sees them, retracted ones aside."""
    if keys is not None and len(keys) < _WHOLE_AT:
        found = await conn.fetch(
            f"SELECT {_ROW} FROM {SCHEMA}.partitions p WHERE p.dataset = $1"
            f" AND p.partition_key = ANY($2::text[]) AND p.{_STORED} AND {_seen(env)}",
            dataset,
            list(keys),
        )
    else:
        found = await conn.fetch(
            f"SELECT {_ROW} FROM {SCHEMA}.partitions p WHERE p.dataset = $1"
            f" AND p.{_STORED} AND {_seen(env)}",
            dataset,
        )
    wanted = set(keys) if keys is not None else None
    return {
        r["partition_key"]: _row(r) for r in found if wanted is None or r["partition_key"] in wanted
    }


async def put_rows(conn: Conn, dataset: str, changed: dict[str, Row], env: str = PROD) -> None:
    """Write these partitions of `dataset` whole, in one statement (environment `env`'s own
    rows: outside prod, a row written shadows prod's)."""
    if not changed:
        return
    keys = list(changed)
    values = [changed[k] for k in keys]
    await conn.execute(
        f"INSERT INTO {SCHEMA}.partitions (env, dataset, {_ROW})"
        " SELECT $12, $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
        " $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::bool[])"
        " ON CONFLICT (dataset, partition_key, env) DO UPDATE SET state = excluded.state,"
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
        env,
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


async def add_tasks(
    conn: Conn, dataset: str, new: list[tuple[str, str, str]], env: str = PROD
) -> None:
    """Record requested tasks: (fingerprint, partition key, reason) each, asked by `env`."""
    if not new:
        return
    await conn.execute(
        f"INSERT INTO {SCHEMA}.tasks (fingerprint, dataset, partition_key, state, reason, env)"
        " SELECT f, $1, k, 'requested', r, $5 FROM unnest($2::text[], $3::text[], $4::text[])"
        " AS n(f, k, r)",
        dataset,
        [f for f, _, _ in new],
        [k for _, k, _ in new],
        [r for _, _, r in new],
        env,
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


async def settling(
    conn: Conn, dataset: str, keys: Collection[str], env: str = PROD
) -> dict[str, Settling]:
    rows = await conn.fetch(
        f"SELECT partition_key, fingerprint, first_at, due_at, changes FROM {SCHEMA}.settling"
        " WHERE dataset = $1 AND partition_key = ANY($2::text[]) AND env = $3",
        dataset,
        list(keys),
        env,
    )
    return {r["partition_key"]: Settling(*list(r.values())[1:]) for r in rows}


async def put_settling(
    conn: Conn, dataset: str, held: dict[str, Settling], env: str = PROD
) -> None:
    if not held:
        return
    await conn.execute(
        f"INSERT INTO {SCHEMA}.settling"
        " (env, dataset, partition_key, fingerprint, first_at, due_at, changes)"
        " SELECT $7, $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[],"
        " $5::timestamptz[], $6::int[])"
        " ON CONFLICT (dataset, partition_key, env) DO UPDATE SET fingerprint = excluded.fingerprint,"
        " first_at = excluded.first_at, due_at = excluded.due_at, changes = excluded.changes",
        dataset,
        list(held),
        [h.fingerprint for h in held.values()],
        [h.first_at for h in held.values()],
        [h.due_at for h in held.values()],
        [h.changes for h in held.values()],
        env,
    )


async def drop_settling(conn: Conn, dataset: str, keys: Collection[str], env: str = PROD) -> None:
    if keys:
        await conn.execute(
            f"DELETE FROM {SCHEMA}.settling WHERE dataset = $1 AND partition_key = ANY($2::text[])"
            " AND env = $3",
            dataset,
            list(keys),
            env,
        )


async def settled_due(conn: Conn, limit: int) -> dict[str, dict[str, set[str]]]:
    """The held partitions whose time has come (at most `limit`), by environment and
    dataset."""
    rows = await conn.fetch(
        f"SELECT env, dataset, partition_key FROM {SCHEMA}.settling WHERE due_at <= now()"
        " ORDER BY due_at LIMIT $1",
        limit,
    )
    due: dict[str, dict[str, set[str]]] = {}
    for r in rows:
        due.setdefault(r["env"], {}).setdefault(r["dataset"], set()).add(r["partition_key"])
    return due


async def partition(
    conn: Conn | asyncpg.Pool, dataset: str, key: str, env: str = PROD
) -> asyncpg.Record | None:
    """The partition row environment `env` sees (its own, else prod's), if any."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.partitions p WHERE p.dataset = $1 AND p.partition_key = $2"
        f" AND {_seen(env)}",
        dataset,
        key,
    )
    return row


async def own_partitions(
    conn: Conn, dataset: str, key: str, envs: Collection[str]
) -> list[asyncpg.Record]:
    """The rows of the partition that environments `envs` hold of their own."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.partitions WHERE dataset = $1 AND partition_key = $2"
        " AND env = ANY($3::text[])",
        dataset,
        key,
        list(envs),
    )
    return rows


async def set_partition(
    conn: Conn, dataset: str, key: str, *, env: str = PROD, **values: Any
) -> None:
    """Upsert the named columns of a partition row (of environment `env`: outside prod,
    the row it sees is copied first, so the columns not named keep what it saw)."""
    if env != PROD:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.partitions (env, dataset, partition_key, state, fingerprint,"
            " data_sha, object_key, rows, bytes, desired_fingerprint, reason, source_version,"
            " incomplete) SELECT $3, dataset, partition_key, state, fingerprint, data_sha,"
            " object_key, rows, bytes, desired_fingerprint, reason, source_version, incomplete"
            f" FROM {SCHEMA}.partitions WHERE dataset = $1 AND partition_key = $2"
            " AND env = 'prod' ON CONFLICT DO NOTHING",
            dataset,
            key,
            env,
        )
    cols = list(values)
    params = [dataset, key, env, *values.values()]
    assigns = ", ".join(f"{c} = ${i + 4}" for i, c in enumerate(cols))
    await conn.execute(
        f"INSERT INTO {SCHEMA}.partitions (dataset, partition_key, env, {', '.join(cols)})"
        f" VALUES ($1, $2, $3, {', '.join(f'${i + 4}' for i in range(len(cols)))})"
        f" ON CONFLICT (dataset, partition_key, env) DO UPDATE SET {assigns}, updated_at = now()",
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


async def add_materialization(
    conn: Conn, e: PartitionLanded, reason: str | None, env: str = PROD
) -> bool:
    """Record a materialization; `env`: the environment whose request made it."""
    status = await conn.execute(
        f"INSERT INTO {SCHEMA}.materializations (fingerprint, fingerprint_version, dataset,"
        " partition_key, code_sha, data_sha, data_sha_version, object_key, rows, bytes, inputs,"
        " reason, duration_ms, cpu_ms, trace_id, env)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        " ON CONFLICT (fingerprint) DO NOTHING",
        e.fingerprint,
        FINGERPRINT_VERSION,
        e.dataset,
        e.partition_key,
        e.code_sha,
        e.data_sha,
        e.data_sha_version,
        e.object_key,
        e.rows,
        e.bytes,
        json.dumps([i.model_dump() for i in e.inputs]),
        reason,
        e.duration_ms,
        e.cpu_ms,
        e.trace_id,
        env,
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
    conn: Conn | asyncpg.Pool, dataset: str, key: str, env: str = PROD
) -> list[MaterializationRecord]:
    rows = await conn.fetch(
        f"SELECT m.*, COALESCE(p.fingerprint = m.fingerprint, false) AS current"
        f" FROM {SCHEMA}.materializations m LEFT JOIN {SCHEMA}.partitions p"
        f" ON p.dataset = m.dataset AND p.partition_key = m.partition_key AND {_seen(env)}"
        " WHERE m.dataset = $1 AND m.partition_key = $2 ORDER BY m.created_at",
        dataset,
        key,
    )
    return [
        record_of(MaterializationRecord, {**dict(r), "inputs": json.loads(r["inputs"])})
        for r in rows
    ]


async def delete_partition(conn: Conn, dataset: str, key: str, env: str = PROD) -> None:
    """The partition no longer exists (its materializations stay, for reuse). When it went,
    why (which of its inputs went) and what it was are kept in `retractions`, for `why`.
    Outside prod, where prod holds the partition, the environment keeps a row `retracted`
    in its place (so it no longer sees prod's)."""
    gone = await conn.fetchrow(
        f"DELETE FROM {SCHEMA}.partitions WHERE dataset = $1 AND partition_key = $2"
        " AND env = $3 RETURNING state, fingerprint, data_sha, rows",
        dataset,
        key,
        env,
    )
    if env != PROD:
        shown = await conn.fetchrow(
            f"SELECT state, fingerprint, data_sha, rows FROM {SCHEMA}.partitions"
            " WHERE dataset = $1 AND partition_key = $2 AND env = 'prod'",
            dataset,
            key,
        )
        if shown is not None:
            gone = gone or shown
            await conn.execute(
                f"INSERT INTO {SCHEMA}.partitions (env, dataset, partition_key, state, reason)"
                " VALUES ($3, $1, $2, 'retracted', 'not in this environment')",
                dataset,
                key,
                env,
            )
    if gone is None:
        return
    inputs, reason = await _inputs_gone(conn, gone["fingerprint"], env)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.retractions (dataset, partition_key, reason, inputs, state,"
        " fingerprint, data_sha, rows, env) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (dataset, partition_key, env) DO UPDATE SET retracted_at = now(),"
        " reason = $3, inputs = $4, state = $5, fingerprint = $6, data_sha = $7, rows = $8",
        dataset,
        key,
        reason,
        json.dumps(inputs),
        gone["state"],
        gone["fingerprint"],
        gone["data_sha"],
        gone["rows"],
        env,
    )


async def _inputs_gone(
    conn: Conn, fingerprint: str | None, env: str = PROD
) -> tuple[list[dict[str, str]], str]:
    """Which inputs of the materialization `fingerprint` exist no more, and the reason."""
    m = await materialization_any(conn, fingerprint)
    refs = json.loads(m["inputs"]) if m is not None else []
    gone: list[dict[str, str]] = []
    reasons: list[str] = []
    for ref in refs:
        name = f"{ref['dataset']}/{ref['partition_key']}"
        row = await partition(conn, ref["dataset"], ref["partition_key"], env)
        if (
            row is not None and row["state"] == PartitionState.RETRACTED
        ):  # a source: its files were deleted
            reasons.append(f"input {name} was retracted ({row['reason']})")
        elif row is not None and row["incomplete"]:  # a join that lost one side
            reasons.append(f"input {name} lost an input of its own ({row['reason']})")
        elif row is None:
            earlier = await retraction(conn, ref["dataset"], ref["partition_key"], env)
            why = f", as {earlier['reason']}" if earlier is not None else ""
            reasons.append(f"input {name} went away{why}")
        else:
            continue
        gone.append({"dataset": ref["dataset"], "partition_key": ref["partition_key"]})
    if not reasons:
        return [], "no input partition maps to it any more"
    return gone, "; ".join(reasons)


async def retraction(
    conn: Conn | asyncpg.Pool, dataset: str, key: str, env: str = PROD
) -> asyncpg.Record | None:
    """When, why and in what state the derived partition went away, if it did (in `env`,
    else, outside prod, in prod)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.retractions WHERE dataset = $1 AND partition_key = $2"
        " AND env IN ($3, 'prod') ORDER BY env = 'prod' LIMIT 1",
        dataset,
        key,
        env,
    )
    return row


async def fingerprints_of(
    conn: Conn | asyncpg.Pool, partitions: list[tuple[str, str]], env: str = PROD
) -> dict[tuple[str, str], str | None]:
    """(dataset, partition) -> the fingerprint of its current materialization, for the
    partitions named that exist (a retracted source's is None), as `env` sees them."""
    rows = await conn.fetch(
        f"SELECT p.dataset, p.partition_key, p.fingerprint FROM {SCHEMA}.partitions p"
        " JOIN unnest($1::text[], $2::text[]) AS w(dataset, partition_key)"
        f" ON p.dataset = w.dataset AND p.partition_key = w.partition_key WHERE {_seen(env)}"
        f" AND NOT {_TOMBSTONE}",
        [d for d, _ in partitions],
        [k for _, k in partitions],
    )
    return {(r["dataset"], r["partition_key"]): r["fingerprint"] for r in rows}


async def unanswered_tasks(conn: Conn, older_than_s: float) -> list[asyncpg.Record]:
    """Tasks requested and not answered for `older_than_s` seconds."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT t.fingerprint, t.dataset, t.partition_key, t.attempts, t.env FROM {SCHEMA}.tasks t"
        " WHERE t.state = 'requested' AND t.sent_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return rows


async def mark_sent(conn: Conn, fingerprint: str) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.tasks SET sent_at = now() WHERE fingerprint = $1", fingerprint
    )


async def current_fingerprints(conn: Conn, env: str = PROD) -> dict[tuple[str, str], str | None]:
    """(dataset, partition) -> the fingerprint of its current materialization."""
    rows = await conn.fetch(
        f"SELECT p.dataset, p.partition_key, p.fingerprint FROM {SCHEMA}.partitions p"
        f" WHERE {_seen(env)}"
    )
    return {(r["dataset"], r["partition_key"]): r["fingerprint"] for r in rows}


async def cancel_tasks(conn: Conn, cancels: Collection[tuple[str, str]], env: str = PROD) -> int:
    """Cancel those tasks still requested, each with its reason ((fingerprint, reason)
    pairs), unless another environment than `env` still waits for one (tasks are shared by
    fingerprint); their marks are to be written."""
    if not cancels:
        return 0
    update = (
        f"UPDATE {SCHEMA}.tasks t SET state = 'cancelled', cancel_pending = true, error = c.r,"
        " finished_at = now() FROM unnest($1::text[], $2::text[]) AS c(f, r)"
        " WHERE t.fingerprint = c.f AND t.state = 'requested'"
    )
    args: list[Any] = [[f for f, _ in cancels], [r for _, r in cancels]]
    others = [e for e in [PROD, *await envs(conn)] if e != env]
    if others:
        # Only where another environment exists: its probe made the planner pick a plan that
        # grew with tasks times partitions (8.7 s for 6,669 cancels among 20,000 partitions
        # in `make bench`, over its cap at 100,000), so prod alone keeps the plain update.
        update += (
            f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.partitions p WHERE p.dataset = t.dataset"
            " AND p.partition_key = t.partition_key AND p.env = ANY($3::text[])"
            " AND p.desired_fingerprint = t.fingerprint AND p.state = 'queued')"
        )
        args.append(others)
    status = await conn.execute(update, *args)
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


async def dataset_infos(conn: Conn | asyncpg.Pool, env: str = PROD) -> dict[str, DatasetInfo]:
    """Every dataset the scheduler was told of, removed ones too."""
    rows = await conn.fetch(
        f"SELECT name, definition->>'kind' AS kind, removed FROM {SCHEMA}.datasets WHERE env = $1",
        env,
    )
    return {r["name"]: DatasetInfo(r["name"], r["kind"], r["removed"]) for r in rows}


async def state_counts(conn: Conn | asyncpg.Pool, env: str = PROD) -> dict[str, dict[str, int]]:
    """dataset -> state -> how many partitions: one GROUP BY over the partitions (the reply
    is one row per dataset and state), and one over the retractions of derived partitions
    that have not come back."""
    out: dict[str, dict[str, int]] = {}
    for r in await conn.fetch(
        f"SELECT p.dataset, p.state, count(*) AS n FROM {SCHEMA}.partitions p"
        f" WHERE {_seen(env)} AND NOT {_TOMBSTONE} GROUP BY p.dataset, p.state"
    ):
        out.setdefault(r["dataset"], {})[r["state"]] = int(r["n"])
    for r in await conn.fetch(
        f"SELECT r.dataset, count(*) AS n FROM {SCHEMA}.retractions r WHERE r.env = $1"
        f" AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.partitions p"
        " WHERE p.dataset = r.dataset AND p.partition_key = r.partition_key"
        f" AND p.state <> 'retracted' AND {_seen(env)})"
        " GROUP BY r.dataset",
        env,
    ):
        counts = out.setdefault(r["dataset"], {})
        counts[PartitionState.RETRACTED] = counts.get(PartitionState.RETRACTED, 0) + int(r["n"])
    return out


async def errored(
    conn: Conn | asyncpg.Pool, datasets: Collection[str], limit: int, env: str = PROD
) -> list[dict[str, Any]]:
    """The first `limit` errored partitions of `datasets` (by dataset, then key) with their
    task's error."""
    if limit <= 0 or not datasets:
        return []
    rows = await conn.fetch(
        f"SELECT p.dataset, p.partition_key, COALESCE(t.error, p.reason) AS error, p.updated_at"
        f" FROM {SCHEMA}.partitions p"
        f" LEFT JOIN {SCHEMA}.tasks t ON t.fingerprint = p.desired_fingerprint"
        f" WHERE p.state = 'errored' AND p.dataset = ANY($1::text[]) AND {_seen(env)}"
        ' ORDER BY p.dataset, (p.partition_key COLLATE "C") LIMIT $2',
        list(datasets),
        limit,
    )
    return [dict(r) for r in rows]


async def settling_held(conn: Conn | asyncpg.Pool) -> int:
    """How many computations `settle:` holds (the table has a row per held partition and
    nothing else: its size follows the work waiting, not what is held)."""
    return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.settling"))


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
    env: str = PROD,
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
        f" AND ($3::timestamptz IS NULL OR p.updated_at >= $3) AND {_seen(env)}"
        f" AND NOT {_TOMBSTONE}"
    )
    gone = (
        f"SELECT {_LISTED_GONE} FROM {SCHEMA}.retractions r"
        f" WHERE r.dataset = $1 AND 'retracted' = ANY($2::text[]) AND r.env = '{env}'"
        " AND ($3::timestamptz IS NULL OR r.retracted_at >= $3) AND NOT EXISTS"
        f" (SELECT 1 FROM {SCHEMA}.partitions p"
        " WHERE p.dataset = r.dataset AND p.partition_key = r.partition_key"
        f" AND p.state <> 'retracted' AND {_seen(env)})"
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


# --- environments: promote and drop ---------------------------------------------------------
async def adopt_materializations(conn: Conn, env: str, dataset: str) -> None:
    """`env` was promoted: what it computed for `dataset` is prod's own from now on (kept
    when the environment is dropped)."""
    await conn.execute(
        f"UPDATE {SCHEMA}.materializations SET env = 'prod' WHERE env = $1 AND dataset = $2",
        env,
        dataset,
    )


async def dropped_through(conn: Conn, env: str) -> int | None:
    """The last spec version of `env` when it was dropped, if it was."""
    found: int | None = await conn.fetchval(
        f"SELECT through_version FROM {SCHEMA}.dropped_envs WHERE env = $1", env
    )
    return found


@dataclass(frozen=True)
class Dropped:
    partitions: int  # rows of its own it held
    cancelled: list[str]  # tasks nobody else waits for
    objects: list[str]  # data objects nothing else references: to delete


async def drop_env(conn: Conn, env: str, through_version: int) -> Dropped:
    """Forget environment `env`: its definitions and partition rows; its requested tasks
    nobody else waits for are returned to be cancelled; the objects of materializations
    its requests made that no other materialization and no other environment's partition
    references are returned to be deleted, and those materializations are marked unusable
    (a later request for one computes it again): reference counting over the
    materializations of live environments and the partition rows of the others. A command,
    not an event: it reads the partitions' object keys once (a hashed anti-join)."""
    cancelled = await conn.fetch(
        f"SELECT t.fingerprint FROM {SCHEMA}.tasks t WHERE t.state = 'requested'"
        f" AND t.env = $1 AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.partitions p"
        " WHERE p.dataset = t.dataset AND p.partition_key = t.partition_key AND p.env <> $1"
        " AND p.desired_fingerprint = t.fingerprint)",
        env,
    )
    # Live: prod and the environments that remain. What an environment dropped earlier made
    # and another one still referenced then is this drop's to collect too.
    live = [PROD, *(e for e in await envs(conn) if e != env)]
    objects = await conn.fetch(
        f"SELECT DISTINCT m.object_key FROM {SCHEMA}.materializations m"
        " WHERE m.env <> ALL($2::text[]) AND m.damaged IS NULL AND NOT EXISTS (SELECT 1"
        f" FROM {SCHEMA}.materializations o WHERE o.object_key = m.object_key"
        " AND o.env = ANY($2::text[]))"
        f" AND m.object_key NOT IN (SELECT object_key FROM {SCHEMA}.partitions"
        " WHERE env <> $1 AND object_key IS NOT NULL)",
        env,
        live,
    )
    keys = [r["object_key"] for r in objects]
    await conn.execute(
        f"UPDATE {SCHEMA}.materializations SET damaged = $2 WHERE object_key = ANY($1::text[])",
        keys,
        f"deleted: its environment {env} was dropped",
    )
    status = await conn.execute(f"DELETE FROM {SCHEMA}.partitions WHERE env = $1", env)
    for table in ("retractions", "settling", "datasets"):
        await conn.execute(f"DELETE FROM {SCHEMA}.{table} WHERE env = $1", env)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.dropped_envs (env, through_version) VALUES ($1, $2)"
        " ON CONFLICT (env) DO UPDATE SET through_version = GREATEST("
        f"{SCHEMA}.dropped_envs.through_version, $2), dropped_at = now()",
        env,
        through_version,
    )
    return Dropped(int(status.split()[-1]), [r["fingerprint"] for r in cancelled], keys)
