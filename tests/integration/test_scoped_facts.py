"""The scheduler's scoped loading on a real Postgres: `store.scoped_facts` returns exactly what
`Scope.select` (the pure definition) asks for, in code-point order whatever the database's
collation, and each ask is an index scan, not a scan of every partition held."""

import random
from pathlib import Path

import pytest

from headwater.core.mappings import Scope
from headwater.runtime import db
from headwater.services.scheduler import store

MIGRATIONS = Path(store.__file__).parent / "migrations"
# Keys whose code-point order differs from a linguistic collation's ('-' vs '_' vs 'Z' vs 'a').
KEYS = sorted(
    {f"2024-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)}
    | {"2024-05", "2024", "2024_05", "2024-05-01-late", "A-1", "a-1", "Z", "z", "all"}
)
RETRACTED = {"2024-05-03", "2024-06-01"}


@pytest.fixture
async def pool(database: str):  # type: ignore[no-untyped-def]
    p = await db.create_pool(database)
    await db.apply_migrations(p, store.SCHEMA, MIGRATIONS)
    async with p.acquire() as conn:
        await conn.executemany(
            "INSERT INTO scheduler.partitions (dataset, partition_key, state, data_sha)"
            " VALUES ($1, $2, $3, $4)",
            [
                (ds, k, "retracted" if k in RETRACTED else "ready", f"{ds}:{k}")
                for ds in ("a", "b")
                for k in KEYS
            ],
        )
        await conn.execute("ANALYZE scheduler.partitions")
    yield p
    await p.close()


def live() -> list[str]:
    return [k for k in KEYS if k not in RETRACTED]


async def test_scoped_facts_equal_the_pure_selection(pool) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    cases = [
        Scope(exact={"2024-05-02", "nope", "2024-05-03"}),
        Scope(before={("2024-05-04", 3), ("2024-01-01", 5), ("2024-05-01-late", 2)}),
        Scope(after={("2024-05-02", 4), ("z", 3), ("2024-12-28", 2)}),
        Scope(prefixes={"2024-05-", "2024-", "a"}),
        Scope(everything=True),
    ]
    for _ in range(20):
        picks = rng.sample(KEYS, 4)
        cases.append(
            Scope(
                exact={picks[0]},
                before={(picks[1], rng.randint(1, 9))},
                after={(picks[2], rng.randint(1, 9))},
                prefixes={picks[3][:5]},
            )
        )
    async with pool.acquire() as conn:
        for scope in cases:
            found = await store.scoped_facts(conn, {"a": scope, "b": Scope(exact={"Z"})})
            assert set(found["a"]) == scope.select(live()), scope
            assert set(found["b"]) == {"Z"}
            assert all(f.data_sha == f"a:{k}" for k, f in found["a"].items())


async def test_an_ask_near_a_key_is_an_index_scan(pool) -> None:  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")  # a plan that cannot use the index fails
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT partition_key FROM scheduler.partitions WHERE dataset = 'a'"
                " AND (partition_key COLLATE \"C\") <= '2024-05-04'"
                ' ORDER BY (partition_key COLLATE "C") DESC LIMIT 3'
            )
        )
    assert "partitions_key_c" in plan, plan


# Keys with dimensions (date x origin): a value another is a prefix of, and '_' and '%',
# which LIKE would read as wildcards unless escaped.
GRID_KEYS = sorted(
    f"date={d},origin={o}"
    for d in ("2024-04-30", "2024-05-01", "2024-05-02", "2024-05-09", "2024-06-01")
    for o in ("JFK", "JFK-2", "J_K", "LGA")
)


async def test_scoped_facts_of_dimensions_equal_the_pure_selection(pool) -> None:  # type: ignore[no-untyped-def]
    from headwater.core.mappings import DimensionalMapping, Mapping

    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO scheduler.partitions (dataset, partition_key, state, data_sha)"
            " VALUES ('g', $1, 'ready', $1)",
            [(k,) for k in GRID_KEYS],
        )
        mappings = [
            DimensionalMapping(
                dims=(("date", Mapping(mapping="window", size=2)), ("origin", Mapping()))
            ),
            DimensionalMapping(
                dims=(("date", Mapping(mapping="rollup", to="month")), ("origin", Mapping()))
            ),
            DimensionalMapping(dims=(("date", Mapping()), ("origin", Mapping(mapping="all")))),
            DimensionalMapping(dims=(("date", Mapping(mapping="all")), ("origin", Mapping()))),
        ]
        for mapping in mappings:
            for key in sorted(mapping.output_keys(GRID_KEYS)) + GRID_KEYS:
                for scope in (mapping.input_scope(key), mapping.affected_scope(key)):
                    found = await store.scoped_facts(conn, {"g": scope})
                    assert set(found["g"]) == scope.select(GRID_KEYS), (mapping, key, scope)
